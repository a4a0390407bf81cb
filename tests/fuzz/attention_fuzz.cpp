// SPDX-License-Identifier: MIT
//
// libFuzzer harness for every public entry point of attention. From the fuzz input it decodes a
// scalar type (float or double), sizes (0 included, up to a few tiles of the kernel),
// values (NaN, +-inf, +-0, denormals, huge magnitudes, ordinary numbers), a mask kind (none,
// causal, keep, bias with -inf/+inf/NaN entries), a scale (default, 0, negative, NaN, inf, huge,
// tiny), a number of heads and an optional deliberate shape inconsistency, then calls:
//   softmax_rows (both forms, in place), softmax_rows_backward, attention_weights,
//   scaled_dot_product_attention (both forms, with a reused AttentionWorkspace, column-major q),
//   scaled_dot_product_attention_lse, merge, scaled_dot_product_attention_backward, project,
//   MultiHeadAttention (constructor, forward self and cross, head_weights, from_pytorch,
//   multi_head_attention_backward).
// and checks, aborting (a libFuzzer crash) on any violation:
//   - inconsistent shapes throw ShapeError; a non-finite scale (with good shapes) throws
//     std::invalid_argument but not ShapeError; nothing else throws;
//   - results have the documented shapes;
//   - every weight row is all NaN, or all exactly 0 (no visible key), or in [0, 1] summing to 1;
//     masked weights are exactly 0; a query with no visible key gets output 0;
//   - "tame" inputs (finite, small enough that no score or sum can overflow) with at least one
//     visible key give finite outputs, and the tiled kernel agrees with the materialising path;
//   - merging attention over two halves of the keys gives attention over all of them.
// Sanitizers (ASan, UBSan) catch memory errors and undefined behaviour on the way.
//
// Build (tests/fuzz/CMakeLists.txt): clang++ -fsanitize=fuzzer,address,undefined. Run:
//   attention_fuzz -max_total_time=600 <scratch corpus dir> tests/fuzz/corpus

#include <algorithm>
#include <attention/attention.hpp>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace {

using attention::Index;
template <typename Scalar>
using Mat = attention::Matrix<Scalar>;
using BoolMat = Eigen::Matrix<bool, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "attention_fuzz: check failed: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

void check(bool ok, const std::string& what) {
  if (!ok) fail(what);
}

/// Reads the fuzz input byte by byte; past its end, a fixed pseudo-random sequence.
class Reader {
 public:
  Reader(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
  std::uint8_t byte() {
    if (pos_ < size_) return data_[pos_++];
    filler_ = filler_ * 1103515245u + 12345u;
    return static_cast<std::uint8_t>(filler_ >> 16);
  }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t pos_ = 0;
  std::uint32_t filler_ = 2463534242u;
};

/// Sizes: 0 (1 time in 16), 1..8 (mostly), or 9..64 (across tiles of the kernel).
Index decode_size(std::uint8_t c) {
  if (c < 16) return 0;
  if (c < 200) return 1 + c % 8;
  return 9 + (c - 200);
}

/// Values: one byte. 0..239 -> (b - 120) / 16, ordinary numbers in [-7.5, 7.4]; 240..255 the edge
/// cases of the Scalar type.
template <typename Scalar>
Scalar decode_value(std::uint8_t b) {
  using L = std::numeric_limits<Scalar>;
  if (b < 240) return static_cast<Scalar>((static_cast<int>(b) - 120) / 16.0);
  switch (b - 240) {
    case 0:
      return L::quiet_NaN();
    case 1:
      return L::infinity();
    case 2:
      return -L::infinity();
    case 3:
      return L::denorm_min();
    case 4:
      return -L::denorm_min();
    case 5:
      return L::max();
    case 6:
      return -L::max();
    case 7:
      return L::min();  // smallest normal
    case 8:
      return Scalar(1e4);
    case 9:
      return Scalar(-1e4);
    case 10:
      return Scalar(-0.0);
    case 11:
      return L::epsilon();
    case 12:
      return Scalar(88.7);  // exp overflows float above this
    case 13:
      return Scalar(709.8);  // ... and double above this
    case 14:
      return Scalar(1e30);
    default:
      return Scalar(-1e30);
  }
}

template <typename Scalar>
Mat<Scalar> decode_matrix(Reader& r, Index rows, Index cols) {
  Mat<Scalar> m(rows, cols);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = decode_value<Scalar>(r.byte());
  return m;
}

enum class MaskKind { none, causal, keep, bias };

/// The outcome every call must have: ShapeError if the shapes disagree, else invalid_argument if
/// the scale is not finite, else no exception. Returns true if the call completed.
template <typename F>
bool call(const char* what, bool shapes_ok, bool scale_ok, F&& f) {
  try {
    f();
  } catch (const attention::ShapeError& e) {
    if (shapes_ok) fail(std::string(what) + ": unexpected ShapeError: " + e.what());
    return false;
  } catch (const std::invalid_argument& e) {
    if (!shapes_ok)
      fail(std::string(what) + ": invalid_argument instead of ShapeError: " + e.what());
    if (scale_ok) fail(std::string(what) + ": unexpected invalid_argument: " + e.what());
    return false;
  }
  if (!shapes_ok) fail(std::string(what) + ": inconsistent shapes accepted");
  if (!scale_ok) fail(std::string(what) + ": non-finite scale accepted");
  return true;
}

template <typename Derived>
bool all_finite(const Eigen::MatrixBase<Derived>& m) {
  for (Index i = 0; i < m.rows(); ++i) {
    for (Index j = 0; j < m.cols(); ++j) {
      if (!std::isfinite(m(i, j))) return false;
    }
  }
  return true;
}

/// Same shape and equal entries, NaN equal to NaN.
template <typename DerivedA, typename DerivedB>
bool same_entries(const Eigen::MatrixBase<DerivedA>& a, const Eigen::MatrixBase<DerivedB>& b) {
  if (a.rows() != b.rows() || a.cols() != b.cols()) return false;
  for (Index i = 0; i < a.rows(); ++i) {
    for (Index j = 0; j < a.cols(); ++j) {
      if (!(a(i, j) == b(i, j) || (std::isnan(a(i, j)) && std::isnan(b(i, j))))) return false;
    }
  }
  return true;
}

template <typename Derived>
long double max_abs(const Eigen::MatrixBase<Derived>& m) {
  long double a = 0;
  for (Index i = 0; i < m.rows(); ++i) {
    for (Index j = 0; j < m.cols(); ++j)
      a = std::max(a, std::fabs(static_cast<long double>(m(i, j))));
  }
  return a;
}

/// The property every row of weights has: all NaN, all exactly 0, or entries in [0, 1] summing
/// to 1.
template <typename Scalar>
void check_weight_rows(const char* what, const Mat<Scalar>& w) {
  const long double tol = 8.0L * static_cast<long double>(w.cols() + 4) *
                          static_cast<long double>(std::numeric_limits<Scalar>::epsilon());
  for (Index i = 0; i < w.rows(); ++i) {
    Index nans = 0, zeros = 0;
    long double sum = 0;
    for (Index j = 0; j < w.cols(); ++j) {
      const Scalar x = w(i, j);
      if (std::isnan(x)) {
        ++nans;
        continue;
      }
      check(x >= 0 && x <= 1, std::string(what) + ": weight outside [0, 1]");
      zeros += x == Scalar(0) && !std::signbit(x) ? 1 : 0;
      sum += x;
    }
    if (nans == w.cols() || zeros == w.cols()) continue;
    check(nans == 0, std::string(what) + ": row partly NaN");
    check(std::fabs(sum - 1) <= tol,
          std::string(what) + ": row sums to " + std::to_string(static_cast<double>(sum)));
  }
}

template <typename Scalar>
struct Case {
  Index l = 0, s = 0, d_k = 0, d_v = 0;
  MaskKind mask_kind = MaskKind::none;
  std::optional<double> scale;
  int corruption = 0;  // 0 none, 1 k.cols + 1, 2 v.rows + 1, 3 mask rows + 1, 4 mask cols + 1
  Index num_heads = 0;
  Mat<Scalar> q, k, v, bias;
  BoolMat keep;
};

/// visible(i, j) per the mask alone (bias: entry != -inf).
template <typename Scalar>
bool visible(const Case<Scalar>& c, Index i, Index j) {
  switch (c.mask_kind) {
    case MaskKind::none:
      return true;
    case MaskKind::causal:
      return j <= i;
    case MaskKind::keep:
      return c.keep(i, j);
    case MaskKind::bias:
      return !(c.bias(i, j) == -std::numeric_limits<Scalar>::infinity());
  }
  return true;
}

/// Calls f(mask) with the case's mask object.
template <typename Scalar, typename F>
void with_mask(const Case<Scalar>& c, F&& f) {
  switch (c.mask_kind) {
    case MaskKind::none:
      f(attention::NoMask{});
      break;
    case MaskKind::causal:
      f(attention::causal);
      break;
    case MaskKind::keep:
      f(attention::keep(c.keep));
      break;
    case MaskKind::bias:
      f(attention::bias(c.bias));
      break;
  }
}

template <typename Scalar>
void fuzz_softmax(const Case<Scalar>& c) {
  const Mat<Scalar>& x = c.q;
  const Mat<Scalar> p = attention::softmax_rows(x);
  check(p.rows() == x.rows() && p.cols() == x.cols(), "softmax_rows: shape");
  check_weight_rows("softmax_rows", p);
  Mat<Scalar> out(x.rows(), x.cols()), in_place = x;
  attention::softmax_rows(x, out);
  attention::softmax_rows(in_place, in_place);
  for (Index i = 0; i < x.rows(); ++i) {
    bool has_nan_or_plus_inf = false, all_minus_inf = x.cols() > 0;
    for (Index j = 0; j < x.cols(); ++j) {
      has_nan_or_plus_inf |=
          std::isnan(x(i, j)) || x(i, j) == std::numeric_limits<Scalar>::infinity();
      all_minus_inf &= x(i, j) == -std::numeric_limits<Scalar>::infinity();
      const bool same =
          (std::isnan(p(i, j)) && std::isnan(out(i, j)) && std::isnan(in_place(i, j))) ||
          (p(i, j) == out(i, j) && p(i, j) == in_place(i, j));
      check(same, "softmax_rows: the three forms differ");
    }
    if (has_nan_or_plus_inf) {
      for (Index j = 0; j < x.cols(); ++j)
        check(std::isnan(p(i, j)), "softmax_rows: NaN/+inf row not NaN");
    } else if (all_minus_inf) {
      for (Index j = 0; j < x.cols(); ++j) check(p(i, j) == 0, "softmax_rows: -inf row not 0");
    } else {
      for (Index j = 0; j < x.cols(); ++j) {
        if (x(i, j) == -std::numeric_limits<Scalar>::infinity())
          check(p(i, j) == 0, "softmax_rows: -inf entry not 0");
      }
    }
  }
  // Backward, with dy = the input itself: shapes, and a finite gradient for finite y and dy.
  const bool shapes_ok = true;
  call("softmax_rows_backward", shapes_ok, true, [&] {
    const Mat<Scalar> dx = attention::softmax_rows_backward(p, x);
    check(dx.rows() == x.rows() && dx.cols() == x.cols(), "softmax_rows_backward: shape");
  });
  if (x.rows() > 0) {
    call("softmax_rows_backward (bad shape)", false, true,
         [&] { (void)attention::softmax_rows_backward(p, x.topRows(x.rows() - 1)); });
  }
}

template <typename Scalar>
void fuzz_attention(Case<Scalar>& c) {
  const bool shapes_ok = c.l >= 1 && c.s >= 1 && c.d_k >= 1 && c.d_v >= 1 && c.corruption == 0;
  const bool weights_shapes_ok =
      c.l >= 1 && c.s >= 1 && c.d_k >= 1 && (c.corruption == 0 || c.corruption == 2);
  // options.hpp: NaN or inf is rejected, also once converted to Scalar (1e39 is inf as a float).
  const bool scale_ok =
      !c.scale || (std::isfinite(*c.scale) && std::isfinite(static_cast<Scalar>(*c.scale)));
  attention::Options options;
  options.scale = c.scale;

  // Tame: finite inputs whose scores and sums cannot overflow, so a visible key gives a finite row.
  const long double scale_abs =
      c.scale ? std::fabs(static_cast<long double>(*c.scale))
              : 1.0L / std::sqrt(static_cast<long double>(std::max<Index>(c.d_k, 1)));
  const long double finite_bias =
      c.mask_kind == MaskKind::bias ? [&] {
        long double a = 0;
        for (Index i = 0; i < c.bias.size(); ++i) {
          const Scalar b = c.bias.data()[i];
          if (std::isnan(b) || b == std::numeric_limits<Scalar>::infinity()) return std::numeric_limits<long double>::infinity();
          if (std::isfinite(b)) a = std::max(a, std::fabs(static_cast<long double>(b)));
        }
        return a;
      }()
                                    : 0.0L;
  // q k^T is formed before the scale is applied, so the raw dot products must not overflow either
  // (with scale 0, an infinite q k^T gives 0 * inf = NaN, as IEEE arithmetic does).
  const long double raw_bound = static_cast<long double>(c.d_k) * max_abs(c.q) * max_abs(c.k);
  const long double score_bound = scale_abs * raw_bound + finite_bias;
  const long double big = static_cast<long double>(std::numeric_limits<Scalar>::max()) / 1e6L;
  const bool tame = all_finite(c.q) && all_finite(c.k) && all_finite(c.v) && score_bound < big &&
                    raw_bound < big && max_abs(c.v) * static_cast<long double>(c.s + 1) < big;
  // Moderate scores: the tiled and the materialising paths round them alike enough to compare.
  const bool moderate = tame && score_bound <= 50;

  Mat<Scalar> weights;
  bool have_weights = false;
  with_mask(c, [&](const auto& mask) {
    have_weights = call("attention_weights", weights_shapes_ok, scale_ok,
                        [&] { weights = attention::attention_weights(c.q, c.k, mask, options); });
  });
  if (have_weights) {
    check(weights.rows() == c.l && weights.cols() == c.s, "attention_weights: shape");
    check_weight_rows("attention_weights", weights);
    for (Index i = 0; i < c.l; ++i) {
      for (Index j = 0; j < c.s; ++j) {
        if (!visible(c, i, j))
          check(weights(i, j) == 0 || std::isnan(weights(i, j)),
                "attention_weights: masked weight not 0");
      }
    }
  }

  Mat<Scalar> out;
  bool have_out = false;
  with_mask(c, [&](const auto& mask) {
    have_out = call("scaled_dot_product_attention", shapes_ok, scale_ok, [&] {
      out = attention::scaled_dot_product_attention(c.q, c.k, c.v, mask, options);
    });
  });
  if (!have_out) {
    // Every other form must refuse the same input the same way.
    with_mask(c, [&](const auto& mask) {
      call("scaled_dot_product_attention_lse", shapes_ok, scale_ok, [&] {
        (void)attention::scaled_dot_product_attention_lse(c.q, c.k, c.v, mask, options);
      });
      call("scaled_dot_product_attention_backward", shapes_ok, scale_ok, [&] {
        (void)attention::scaled_dot_product_attention_backward(
            c.q, c.k, c.v, Mat<Scalar>::Ones(c.l, c.v.cols()), mask, options);
      });
    });
    return;
  }
  check(out.rows() == c.l && out.cols() == c.d_v, "scaled_dot_product_attention: shape");

  static attention::AttentionWorkspace<Scalar> workspace;  // reused across inputs of every size
  with_mask(c, [&](const auto& mask) {
    Mat<Scalar> out_ws = Mat<Scalar>::Constant(c.l, c.d_v, Scalar(123));
    attention::scaled_dot_product_attention(c.q, c.k, c.v, out_ws, workspace, mask, options);
    const Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor> q_col = c.q;
    const Mat<Scalar> out_col =
        attention::scaled_dot_product_attention(q_col, c.k, c.v, mask, options);
    const auto lse = attention::scaled_dot_product_attention_lse(c.q, c.k, c.v, mask, options);
    for (Index i = 0; i < c.l; ++i) {
      for (Index j = 0; j < c.d_v; ++j) {
        const auto same = [&](Scalar a) {
          return (std::isnan(a) && std::isnan(out(i, j))) || a == out(i, j);
        };
        check(same(out_ws(i, j)), "scaled_dot_product_attention: workspace overload differs");
        check(same(out_col(i, j)), "scaled_dot_product_attention: column-major q differs");
        check(same(lse.output(i, j)), "scaled_dot_product_attention_lse: output differs");
      }
    }
    check(lse.lse.size() == c.l, "scaled_dot_product_attention_lse: lse size");

    // Rows with no visible key: output 0, lse -inf. Rows of tame inputs with a visible key: finite.
    for (Index i = 0; i < c.l; ++i) {
      bool any_visible = false;
      for (Index j = 0; j < c.s; ++j) any_visible |= visible(c, i, j);
      if (!any_visible) {
        for (Index j = 0; j < c.d_v; ++j) check(out(i, j) == 0, "fully masked row: output not 0");
        check(lse.lse(i) == -std::numeric_limits<Scalar>::infinity(),
              "fully masked row: lse not -inf");
      } else if (tame) {
        for (Index j = 0; j < c.d_v; ++j)
          check(std::isfinite(out(i, j)), "tame input, visible key: output not finite");
        check(std::isfinite(lse.lse(i)), "tame input, visible key: lse not finite");
      }
    }

    // The tiled kernel against the materialising path: out = weights v.
    if (moderate && have_weights) {
      const Mat<Scalar> expected = weights * c.v;
      const long double eps = std::numeric_limits<Scalar>::epsilon();
      const long double tol = (16.0L * score_bound + 4.0L * static_cast<long double>(c.s) + 16.0L) *
                              eps * std::max(max_abs(c.v), 1e-30L);
      for (Index i = 0; i < c.l; ++i) {
        for (Index j = 0; j < c.d_v; ++j) {
          check(std::fabs(static_cast<long double>(out(i, j)) -
                          static_cast<long double>(expected(i, j))) <= tol,
                "tiled kernel and materialising path disagree");
        }
      }
    }

    // merge: attention over keys [0, h) and [h, S), merged, is attention over all keys.
    if (moderate && c.s >= 2) {
      const Index h = c.s / 2;
      BoolMat keep_all(c.l, c.s);
      for (Index i = 0; i < c.l; ++i) {
        for (Index j = 0; j < c.s; ++j) keep_all(i, j) = visible(c, i, j);
      }
      Mat<Scalar> bias_all = Mat<Scalar>::Zero(c.l, c.s);
      if (c.mask_kind == MaskKind::bias) bias_all = c.bias;
      const auto part = [&](Index first, Index count) {
        const BoolMat keep_part = keep_all.middleCols(first, count);
        const Mat<Scalar> bias_part = bias_all.middleCols(first, count);
        return c.mask_kind == MaskKind::bias
                   ? attention::scaled_dot_product_attention_lse(
                         c.q, c.k.middleRows(first, count), c.v.middleRows(first, count),
                         attention::bias(bias_part), options)
                   : attention::scaled_dot_product_attention_lse(
                         c.q, c.k.middleRows(first, count), c.v.middleRows(first, count),
                         attention::keep(keep_part), options);
      };
      const auto merged = attention::merge(part(0, h), part(h, c.s - h));
      const long double eps = std::numeric_limits<Scalar>::epsilon();
      const long double tol = (16.0L * score_bound + 4.0L * static_cast<long double>(c.s) + 64.0L) *
                              eps * std::max(max_abs(c.v), 1e-30L);
      for (Index i = 0; i < c.l; ++i) {
        for (Index j = 0; j < c.d_v; ++j) {
          check(std::fabs(static_cast<long double>(merged.output(i, j)) -
                          static_cast<long double>(out(i, j))) <= tol,
                "merge of two key halves differs from attention over all keys");
        }
      }
      call("merge (bad shape)", false, true, [&] {
        auto other = part(0, h);
        other.lse.conservativeResize(other.lse.size() + 1);
        (void)attention::merge(part(0, h), other);
      });
    }

    // Backward: shapes, and finite gradients for tame, moderate inputs.
    const Mat<Scalar> d_out = Mat<Scalar>::Ones(c.l, c.d_v);
    const auto grads =
        attention::scaled_dot_product_attention_backward(c.q, c.k, c.v, d_out, mask, options);
    check(grads.dq.rows() == c.l && grads.dq.cols() == c.d_k && grads.dk.rows() == c.s &&
              grads.dk.cols() == c.d_k && grads.dv.rows() == c.s && grads.dv.cols() == c.d_v,
          "scaled_dot_product_attention_backward: shapes");
    if (moderate && max_abs(c.v) < 1e6L) {
      check(all_finite(grads.dq) && all_finite(grads.dk) && all_finite(grads.dv),
            "scaled_dot_product_attention_backward: tame input, gradient not finite");
    }
  });
}

template <typename Scalar>
void fuzz_projection_and_multi_head(Case<Scalar>& c, Reader& r) {
  // project: x (L x d_k) w (d_k x d_v) + b; a corrupted w has one row too many.
  const bool project_ok = c.corruption != 1;
  const Mat<Scalar> w = decode_matrix<Scalar>(r, c.d_k + (project_ok ? 0 : 1), c.d_v);
  const attention::RowVector<Scalar> b = decode_matrix<Scalar>(r, 1, c.d_v);
  call("project", project_ok, true, [&] {
    const Mat<Scalar> y = attention::project(c.q, w, b);
    check(y.rows() == c.l && y.cols() == c.d_v, "project: shape");
  });

  // MultiHeadAttention on d_model = d_k with num_heads in 0..4.
  const Index d_model = c.d_k;
  const bool layer_ok = d_model >= 1 && c.num_heads >= 1 && d_model % c.num_heads == 0;
  std::optional<attention::MultiHeadAttention<Scalar>> layer;
  call("MultiHeadAttention", layer_ok, true, [&] { layer.emplace(d_model, c.num_heads); });
  // from_pytorch: in_proj_weight 3E x E, biases, out_proj E x E.
  const Mat<Scalar> in_w = decode_matrix<Scalar>(r, 3 * d_model, d_model);
  const Mat<Scalar> in_b = decode_matrix<Scalar>(r, 3 * d_model, 1);
  const Mat<Scalar> out_w = decode_matrix<Scalar>(r, d_model, d_model);
  const Mat<Scalar> out_b = decode_matrix<Scalar>(r, 1, d_model);
  std::optional<attention::MultiHeadAttention<Scalar>> torch_layer;
  call("MultiHeadAttention::from_pytorch", layer_ok, true, [&] {
    torch_layer.emplace(
        attention::MultiHeadAttention<Scalar>::from_pytorch(in_w, in_b, out_w, out_b, c.num_heads));
  });
  if (!layer) return;
  check(torch_layer.has_value(), "from_pytorch failed where the constructor did not");
  const Mat<Scalar> in_w_t = in_w.transpose();
  check(same_entries(torch_layer->w_q, in_w_t.leftCols(d_model)) &&
            same_entries(torch_layer->w_v, in_w_t.rightCols(d_model)) &&
            same_entries(torch_layer->w_o, out_w.transpose()),
        "from_pytorch: weights not transposed into place");
  // Small weights, so that tame inputs stay tame through the projections.
  for (Mat<Scalar>* m : {&layer->w_q, &layer->w_k, &layer->w_v, &layer->w_o}) {
    *m = decode_matrix<Scalar>(r, d_model, d_model).unaryExpr([](Scalar x) {
      return std::isfinite(x) ? std::clamp(x, Scalar(-8), Scalar(8)) / Scalar(4) : Scalar(0.5);
    });
  }
  const bool cross_ok = c.l >= 1 && c.s >= 1 && c.d_v == d_model && c.corruption == 0;
  const Mat<Scalar> value = c.v;
  with_mask(c, [&](const auto& mask) {
    // Cross-attention: query c.q (L x d_model), key c.k (S x d_model), value c.v (S x d_v).
    Mat<Scalar> y;
    if (call("MultiHeadAttention::forward (cross)", cross_ok, true,
             [&] { y = layer->forward(c.q, c.k, value, mask); })) {
      check(y.rows() == c.l && y.cols() == d_model, "MultiHeadAttention::forward: shape");
      const auto g = attention::multi_head_attention_backward(*layer, c.q, c.k, value, y, mask);
      check(g.d_query.rows() == c.l && g.d_key.rows() == c.s && g.dw_q.rows() == d_model,
            "multi_head_attention_backward: shapes");
    }
    // Self-attention over the keys: x = c.k (S x d_model); the mask must be S x S.
    const bool mask_fits =
        c.mask_kind == MaskKind::none || c.mask_kind == MaskKind::causal || c.l == c.s;
    const bool self_shapes_ok = c.s >= 1 && c.corruption != 1 && mask_fits;
    if (call("MultiHeadAttention::forward (self)", self_shapes_ok, true,
             [&] { y = layer->forward(c.k, mask); })) {
      check(y.rows() == c.s && y.cols() == d_model, "MultiHeadAttention::forward (self): shape");
      std::vector<Mat<Scalar>> heads;
      call("MultiHeadAttention::head_weights", true, true,
           [&] { heads = layer->head_weights(c.k, mask); });
      check(static_cast<Index>(heads.size()) == c.num_heads, "head_weights: count");
      for (const Mat<Scalar>& h : heads) {
        check(h.rows() == c.s && h.cols() == c.s, "head_weights: shape");
        check_weight_rows("head_weights", h);
      }
    }
  });
}

template <typename Scalar>
void run(Reader& r) {
  Case<Scalar> c;
  c.l = decode_size(r.byte());
  c.s = decode_size(r.byte());
  c.d_k = std::min<Index>(decode_size(r.byte()), 24);
  c.d_v = std::min<Index>(decode_size(r.byte()), 24);
  const std::uint8_t flags = r.byte();
  c.mask_kind = static_cast<MaskKind>(flags % 4);
  const std::uint8_t scale_code = r.byte();
  if (scale_code >= 128) {
    const std::uint8_t value = r.byte();
    c.scale = scale_code >= 248   ? static_cast<double>(decode_value<Scalar>(value))
              : scale_code >= 240 ? (scale_code % 2 ? 1e39 : 1e-60)
                                  : (static_cast<int>(value) - 128) / 32.0;
  }
  c.num_heads = r.byte() % 5;
  const std::uint8_t corruption = r.byte();
  c.corruption = corruption < 200 ? 0 : 1 + corruption % 4;

  c.q = decode_matrix<Scalar>(r, c.l, c.d_k);
  c.k = decode_matrix<Scalar>(r, c.s, c.d_k + (c.corruption == 1 ? 1 : 0));
  c.v = decode_matrix<Scalar>(r, c.s + (c.corruption == 2 ? 1 : 0), c.d_v);
  const Index mask_rows = c.l + (c.corruption == 3 ? 1 : 0),
              mask_cols = c.s + (c.corruption == 4 ? 1 : 0);
  if (c.mask_kind == MaskKind::keep) {
    c.keep.resize(mask_rows, mask_cols);
    std::uint8_t bits = 0;
    for (Index i = 0; i < c.keep.size(); ++i) {
      if (i % 8 == 0) bits = r.byte();
      c.keep.data()[i] = ((bits >> (i % 8)) & 1) != 0;
    }
  } else if (c.mask_kind == MaskKind::bias) {
    c.bias.resize(mask_rows, mask_cols);
    for (Index i = 0; i < c.bias.size(); ++i) {
      const std::uint8_t b = r.byte();
      c.bias.data()[i] =
          b < 80 ? -std::numeric_limits<Scalar>::infinity() : decode_value<Scalar>(b);
    }
  } else if (c.corruption >= 3) {
    c.corruption = 0;  // no mask matrix to corrupt
  }
  // A corrupted mask matrix does not exist for softmax; visible() needs the true shape.
  fuzz_softmax(c);
  fuzz_attention(c);
  if (c.corruption >= 3) return;  // visible() would index past the mask below
  fuzz_projection_and_multi_head(c, r);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Reader r(data, size);
  // float and double: the types whose kernels have SIMD and pointer code. long double takes the
  // materialising path, the same templates as float's there, and the main build's typed tests run
  // it; instantiating it here cost a quarter of this harness's build under the sanitizers (about
  // 46 of 174 CPU-s).
  if (r.byte() % 2 == 0) {
    run<float>(r);
  } else {
    run<double>(r);
  }
  return 0;
}
