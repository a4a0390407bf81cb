#pragma once
// SPDX-License-Identifier: MIT
//
// The parts of the module, each in its own translation unit (they compile in parallel).

#include <pybind11/pybind11.h>

namespace attention_python {

/// scaled_dot_product_attention, scaled_dot_product_attention_lse, attention_weights
/// (functional.cpp).
void add_functional(pybind11::module_& m);

/// The MultiHeadAttention class (multi_head.cpp).
void add_multi_head(pybind11::module_& m);

}  // namespace attention_python
