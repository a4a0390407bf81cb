// SPDX-License-Identifier: MIT
//
// The Python module `attention`: the library's attention for NumPy arrays, with the names and
// keywords of torch.nn.functional.scaled_dot_product_attention and nn.MultiheadAttention.
//
// Errors: attention::ShapeError and std::invalid_argument (its base) become ValueError with the
// library's message, through pybind11's standard translation of std::invalid_argument; a dtype
// other than float32 / float64 (or arguments of different dtypes) is a TypeError.

#include <pybind11/pybind11.h>

#include <attention/version.hpp>
#include <string>

#include "functional.hpp"
#include "multi_head.hpp"

PYBIND11_MODULE(attention, m) {
  m.doc() =
      "Exact, fast scaled dot-product and multi-head attention for NumPy arrays (float32, "
      "float64), with torch.nn.functional's names and keywords.";
  m.attr("__version__") = std::to_string(ATTENTION_VERSION_MAJOR) + "." +
                          std::to_string(ATTENTION_VERSION_MINOR) + "." +
                          std::to_string(ATTENTION_VERSION_PATCH);
  attention_python::add_functional(m);
  attention_python::add_multi_head(m);
}
