#pragma once
// SPDX-License-Identifier: MIT
//
// An independent reference for attention, in long double, written as plain loops: no Eigen
// products or reductions and no code from the library. Eigen matrices serve only as storage (and
// column-major, unlike the library). Every formula is the textbook one:
//   scores  s = q k^T                         (L x S)
//   weights p = softmax_rows(scale * s + mask), scale = 1 / sqrt(d_k) unless given
//   output  o = p v                           (L x d_v), a weight of exactly 0 adding nothing
//           (not 0 * NaN: a masked key's NaN or infinite value stays out, docs/conventions.md)
//   multi-head: Q = x_q W_q + b_q, K = x_k W_k + b_k, V = x_v W_v + b_v;
//               head h = attention(Q_h, K_h, V_h) on columns [h * head_dim, (h + 1) * head_dim);
//               out = [head_0 ... head_{H-1}] W_o + b_o
//   grouped-query (num_kv_heads < num_heads): K and V have num_kv_heads heads; they are first
//               expanded to num_heads heads by copying K/V head g to query heads
//               g * r ... g * r + r - 1, r = num_heads / num_kv_heads (PyTorch's
//               repeat_interleave), then used as in multi-head attention.
// Masks: causal is top-left aligned (key j visible to query i iff j <= i, for any L and S),
// causal_lower_right sees j <= i + (S - L), window(left, right) sees
// i + (S - L) - left <= j <= i + (S - L) + right, keep is a bool matrix (true = visible), bias is
// added to the scaled scores, key_padding(n) hides keys j >= n, sequences(...) is block-diagonal
// (each sequence written out in its own local coordinates), and both(parts) hides what any part
// hides and adds every part's bias; alibi(m) adds -m * ((i + S - L) - j) and hides nothing
// (Press et al., 2022, lower-right aligned). The softmax subtracts the row
// max; a row with no visible key (all -inf) becomes zeros; a NaN or +inf in a row makes it NaN.

#include <Eigen/Core>
#include <cmath>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace support::reference {

using Real = long double;
using Index = Eigen::Index;
/// Storage only; all arithmetic below is written out.
using Matrix = Eigen::Matrix<Real, Eigen::Dynamic, Eigen::Dynamic>;
using BoolMatrix = Eigen::Matrix<bool, Eigen::Dynamic, Eigen::Dynamic>;

inline constexpr Real minus_inf = -std::numeric_limits<Real>::infinity();

/// Element-by-element copy into long double.
template <typename Derived>
Matrix to_real(const Eigen::DenseBase<Derived>& m) {
  Matrix out(m.rows(), m.cols());
  for (Index i = 0; i < m.rows(); ++i) {
    for (Index j = 0; j < m.cols(); ++j) out(i, j) = static_cast<Real>(m(i, j));
  }
  return out;
}

inline void require(bool ok, const char* what) {
  if (!ok) throw std::logic_error(std::string("support::reference: ") + what);
}

/// a b, (n x m)(m x p), summed in order.
inline Matrix matmul(const Matrix& a, const Matrix& b) {
  require(a.cols() == b.rows(), "matmul: inner sizes differ");
  Matrix out(a.rows(), b.cols());
  for (Index i = 0; i < a.rows(); ++i) {
    for (Index j = 0; j < b.cols(); ++j) {
      Real sum = 0;
      for (Index c = 0; c < a.cols(); ++c) sum += a(i, c) * b(c, j);
      out(i, j) = sum;
    }
  }
  return out;
}

/// p v, (L x S)(S x d_v), summed in order over the keys whose weight is not exactly 0, so that a
/// NaN or infinite value row reaches only the queries that give its key a weight (0 * NaN would
/// be NaN): the library's documented rule for non-finite values (docs/conventions.md).
inline Matrix weighted_values(const Matrix& p, const Matrix& v) {
  require(p.cols() == v.rows(), "weighted_values: p's columns and v's rows differ");
  Matrix out(p.rows(), v.cols());
  for (Index i = 0; i < p.rows(); ++i) {
    for (Index j = 0; j < v.cols(); ++j) {
      Real sum = 0;
      for (Index c = 0; c < p.cols(); ++c) {
        if (p(i, c) != 0) sum += p(i, c) * v(c, j);
      }
      out(i, j) = sum;
    }
  }
  return out;
}

inline Matrix transpose(const Matrix& a) {
  Matrix out(a.cols(), a.rows());
  for (Index i = 0; i < a.rows(); ++i) {
    for (Index j = 0; j < a.cols(); ++j) out(j, i) = a(i, j);
  }
  return out;
}

/// Columns [first, first + count) of a.
inline Matrix columns(const Matrix& a, Index first, Index count) {
  Matrix out(a.rows(), count);
  for (Index i = 0; i < a.rows(); ++i) {
    for (Index j = 0; j < count; ++j) out(i, j) = a(i, first + j);
  }
  return out;
}

/// Rows [first, first + count) of a.
inline Matrix rows(const Matrix& a, Index first, Index count) {
  Matrix out(count, a.cols());
  for (Index i = 0; i < count; ++i) {
    for (Index j = 0; j < a.cols(); ++j) out(i, j) = a(first + i, j);
  }
  return out;
}

/// s(i, j) = sum_c q(i, c) k(j, c): the raw scores q k^T, L x S.
inline Matrix scores(const Matrix& q, const Matrix& k) {
  require(q.cols() == k.cols(), "scores: q and k widths differ");
  Matrix s(q.rows(), k.rows());
  for (Index i = 0; i < q.rows(); ++i) {
    for (Index j = 0; j < k.rows(); ++j) {
      Real sum = 0;
      for (Index c = 0; c < q.cols(); ++c) sum += q(i, c) * k(j, c);
      s(i, j) = sum;
    }
  }
  return s;
}

/// 1 / sqrt(d_k), in long double.
inline Real default_scale(Index d_k) { return 1.0L / std::sqrt(static_cast<Real>(d_k)); }

/// The reference's own mask description, independent of the library's mask types.
struct Mask {
  enum class Kind {
    none,
    causal,
    keep,
    bias,
    causal_lower_right,
    window,
    key_padding,
    sequences,
    both,
    alibi
  };
  Kind kind = Kind::none;
  BoolMatrix visible;                // keep: true = query i may attend to key j
  Matrix added;                      // bias: added to the scaled scores
  std::optional<Index> left, right;  // window, sequences: sides, nullopt = unbounded
  Index valid_keys = 0;              // key_padding: keys j >= valid_keys hidden
  std::vector<Index> query_offsets, key_offsets, valid_per_sequence;  // sequences
  std::vector<Mask> parts;                                            // both: every part applies
  Real slope = 0;                                                     // alibi: the head's slope m

  static Mask none() { return {}; }
  static Mask of_kind(Kind kind) {
    Mask m;
    m.kind = kind;
    return m;
  }
  static Mask causal() { return of_kind(Kind::causal); }
  static Mask causal_lower_right() { return of_kind(Kind::causal_lower_right); }
  static Mask window(std::optional<Index> left, std::optional<Index> right) {
    Mask m = of_kind(Kind::window);
    m.left = left;
    m.right = right;
    return m;
  }
  static Mask key_padding(Index valid_keys) {
    Mask m = of_kind(Kind::key_padding);
    m.valid_keys = valid_keys;
    return m;
  }
  /// Sequence b: query rows [query_offsets[b], query_offsets[b + 1]), key rows [key_offsets[b],
  /// key_offsets[b] + valid[b]) (valid[b] defaults to the whole sequence), and within it, in local
  /// positions, the window [left, right] around the lower-right diagonal.
  static Mask sequences(std::vector<Index> query_offsets, std::vector<Index> key_offsets,
                        std::optional<Index> left = {}, std::optional<Index> right = {},
                        std::vector<Index> valid = {}) {
    Mask m = of_kind(Kind::sequences);
    m.query_offsets = std::move(query_offsets);
    m.key_offsets = std::move(key_offsets);
    m.left = left;
    m.right = right;
    m.valid_per_sequence = std::move(valid);
    if (m.valid_per_sequence.empty()) {
      for (std::size_t b = 0; b + 1 < m.key_offsets.size(); ++b) {
        m.valid_per_sequence.push_back(m.key_offsets[b + 1] - m.key_offsets[b]);
      }
    }
    return m;
  }
  static Mask alibi(Real slope) {
    Mask m = of_kind(Kind::alibi);
    m.slope = slope;
    return m;
  }
  static Mask both(std::vector<Mask> parts) {
    Mask m = of_kind(Kind::both);
    m.parts = std::move(parts);
    return m;
  }
  template <typename Derived>
  static Mask keep(const Eigen::DenseBase<Derived>& visible) {
    Mask m = of_kind(Kind::keep);
    m.visible.resize(visible.rows(), visible.cols());
    for (Index i = 0; i < visible.rows(); ++i) {
      for (Index j = 0; j < visible.cols(); ++j) m.visible(i, j) = visible(i, j);
    }
    return m;
  }
  template <typename Derived>
  static Mask bias(const Eigen::DenseBase<Derived>& added) {
    Mask m = of_kind(Kind::bias);
    m.added = to_real(added);
    return m;
  }
};

/// Whether the window [position - left, position + right] (sides optional) holds key j.
inline bool in_window(Index j, Index position, const std::optional<Index>& left,
                      const std::optional<Index>& right) {
  if (left && j < position - *left) return false;
  if (right && j > position + *right) return false;
  return true;
}

/// Whether the mask hides key j from query i in an L x S score matrix. Lower-right alignment puts
/// query i at position i + (S - L) among the keys.
inline bool hides(const Mask& mask, Index num_queries, Index num_keys, Index i, Index j) {
  const Index position = i + num_keys - num_queries;
  switch (mask.kind) {
    case Mask::Kind::none:
    case Mask::Kind::alibi:
      return false;
    case Mask::Kind::causal:
      return j > i;
    case Mask::Kind::causal_lower_right:
      return j > position;
    case Mask::Kind::window:
      return !in_window(j, position, mask.left, mask.right);
    case Mask::Kind::key_padding:
      return j >= mask.valid_keys;
    case Mask::Kind::keep:
      require(mask.visible.rows() == num_queries && mask.visible.cols() == num_keys,
              "keep mask shape");
      return !mask.visible(i, j);
    case Mask::Kind::bias:
      require(mask.added.rows() == num_queries && mask.added.cols() == num_keys, "bias mask shape");
      return mask.added(i, j) == minus_inf;
    case Mask::Kind::sequences: {
      require(mask.query_offsets.back() == num_queries && mask.key_offsets.back() == num_keys,
              "sequence offsets");
      std::size_t b = 0;
      while (!(mask.query_offsets[b] <= i && i < mask.query_offsets[b + 1])) ++b;
      // Local coordinates within sequence b, whose keys are its first valid[b] ones.
      const Index local_i = i - mask.query_offsets[b];
      const Index local_j = j - mask.key_offsets[b];
      const Index local_queries = mask.query_offsets[b + 1] - mask.query_offsets[b];
      const Index local_keys = mask.valid_per_sequence[b];
      if (local_j < 0 || local_j >= local_keys) return true;
      return !in_window(local_j, local_i + local_keys - local_queries, mask.left, mask.right);
    }
    case Mask::Kind::both:
      for (const Mask& part : mask.parts) {
        if (hides(part, num_queries, num_keys, i, j)) return true;
      }
      return false;
  }
  return false;
}

/// What the mask adds to the score of a key it does not hide: the sum of its biases. ALiBi's is
/// -m times the distance from the query's position i + (S - L) back to key j.
inline Real added_bias(const Mask& mask, Index num_queries, Index num_keys, Index i, Index j) {
  if (mask.kind == Mask::Kind::bias) return mask.added(i, j);
  if (mask.kind == Mask::Kind::alibi) {
    const Index distance = (i + num_keys - num_queries) - j;
    return -mask.slope * static_cast<Real>(distance);
  }
  Real sum = 0;
  if (mask.kind == Mask::Kind::both) {
    for (const Mask& part : mask.parts) sum += added_bias(part, num_queries, num_keys, i, j);
  }
  return sum;
}

/// Applies the mask to scaled scores s (L x S), in place: -inf where it hides the key, else its
/// biases added.
inline void apply_mask(Matrix& s, const Mask& mask) {
  for (Index i = 0; i < s.rows(); ++i) {
    for (Index j = 0; j < s.cols(); ++j) {
      if (hides(mask, s.rows(), s.cols(), i, j)) {
        s(i, j) = minus_inf;
      } else {
        s(i, j) += added_bias(mask, s.rows(), s.cols(), i, j);
      }
    }
  }
}

/// Row-wise softmax with the row max subtracted. All -inf -> zeros; a NaN or +inf -> NaN row.
inline Matrix softmax_rows(const Matrix& x) {
  Matrix p(x.rows(), x.cols());
  for (Index i = 0; i < x.rows(); ++i) {
    Real row_max = minus_inf;
    bool has_nan = false;
    for (Index j = 0; j < x.cols(); ++j) {
      if (std::isnan(x(i, j))) has_nan = true;
      if (x(i, j) > row_max) row_max = x(i, j);
    }
    if (has_nan || row_max == std::numeric_limits<Real>::infinity()) {
      for (Index j = 0; j < x.cols(); ++j) p(i, j) = std::numeric_limits<Real>::quiet_NaN();
      continue;
    }
    if (row_max == minus_inf) {
      for (Index j = 0; j < x.cols(); ++j) p(i, j) = 0;
      continue;
    }
    Real sum = 0;
    for (Index j = 0; j < x.cols(); ++j) {
      p(i, j) = x(i, j) == minus_inf ? Real(0) : std::exp(x(i, j) - row_max);
      sum += p(i, j);
    }
    for (Index j = 0; j < x.cols(); ++j) p(i, j) /= sum;
  }
  return p;
}

/// scale * q k^T with the mask applied: the scores that enter the softmax. With a softcap c
/// (Gemma 2's logit soft-capping) each scaled score s becomes c * tanh(s / c) before the mask.
inline Matrix masked_scores(const Matrix& q, const Matrix& k, const Mask& mask = Mask::none(),
                            std::optional<Real> scale = std::nullopt,
                            std::optional<Real> softcap = std::nullopt) {
  Matrix s = scores(q, k);
  const Real factor = scale ? *scale : default_scale(q.cols());
  for (Index i = 0; i < s.rows(); ++i) {
    for (Index j = 0; j < s.cols(); ++j) {
      s(i, j) *= factor;
      if (softcap) s(i, j) = *softcap * std::tanh(s(i, j) / *softcap);
    }
  }
  apply_mask(s, mask);
  return s;
}

/// softmax_rows(scale * q k^T + mask), L x S (soft-capped before the mask if softcap is given).
inline Matrix weights(const Matrix& q, const Matrix& k, const Mask& mask = Mask::none(),
                      std::optional<Real> scale = std::nullopt,
                      std::optional<Real> softcap = std::nullopt) {
  return softmax_rows(masked_scores(q, k, mask, scale, softcap));
}

/// softmax_rows(scale * q k^T + mask) v, L x d_v (soft-capped before the mask if softcap is given).
inline Matrix attention(const Matrix& q, const Matrix& k, const Matrix& v,
                        const Mask& mask = Mask::none(), std::optional<Real> scale = std::nullopt,
                        std::optional<Real> softcap = std::nullopt) {
  require(v.rows() == k.rows(), "attention: v and k lengths differ");
  return weighted_values(weights(q, k, mask, scale, softcap), v);
}

/// Each row's log-sum-exp of the scores that enter the softmax (-inf for a row with no visible
/// key).
inline Matrix row_logsumexp(const Matrix& s) {
  Matrix out(s.rows(), 1);
  for (Index i = 0; i < s.rows(); ++i) {
    Real row_max = minus_inf;
    for (Index j = 0; j < s.cols(); ++j) {
      if (s(i, j) > row_max) row_max = s(i, j);
    }
    if (row_max == minus_inf) {
      out(i, 0) = minus_inf;
      continue;
    }
    Real sum = 0;
    for (Index j = 0; j < s.cols(); ++j) {
      if (s(i, j) != minus_inf) sum += std::exp(s(i, j) - row_max);
    }
    // sum >= 1: the max entry contributes exp(0) = 1.
    // cppcheck-suppress invalidFunctionArg
    out(i, 0) = row_max + std::log(sum);
  }
  return out;
}

/// Rotary position embedding (Su et al., 2021), written out: row r of x (the token at position
/// offset + r) has pair i of its first rotary_dim columns rotated by the angle
/// (offset + r) * base^(-2i / rotary_dim). The pair is columns (2i, 2i + 1) when interleaved, else
/// (i, i + rotary_dim / 2) (GPT-NeoX's rotate_half); the other columns are copied.
inline Matrix rope(const Matrix& x, bool interleaved, Real base, Index rotary_dim, Index offset) {
  require(rotary_dim % 2 == 0 && rotary_dim <= x.cols(), "rope: rotary_dim");
  Matrix y = x;
  for (Index r = 0; r < x.rows(); ++r) {
    const Real m = static_cast<Real>(offset + r);
    for (Index i = 0; i < rotary_dim / 2; ++i) {
      const Real theta = std::pow(base, -static_cast<Real>(2 * i) / static_cast<Real>(rotary_dim));
      const Index a = interleaved ? 2 * i : i;
      const Index b = interleaved ? 2 * i + 1 : i + rotary_dim / 2;
      const Real c = std::cos(m * theta), s = std::sin(m * theta);
      y(r, a) = x(r, a) * c - x(r, b) * s;
      y(r, b) = x(r, a) * s + x(r, b) * c;
    }
  }
  return y;
}

/// y = x w + b, w: (d_in x d_out), b: 1 x d_out (the seeds' convention).
inline Matrix project(const Matrix& x, const Matrix& w, const Matrix& b) {
  require(w.rows() == x.cols() && b.rows() == 1 && b.cols() == w.cols(), "project: shapes");
  Matrix y(x.rows(), w.cols());
  for (Index i = 0; i < x.rows(); ++i) {
    for (Index o = 0; o < w.cols(); ++o) {
      Real sum = b(0, o);
      for (Index c = 0; c < x.cols(); ++c) sum += x(i, c) * w(c, o);
      y(i, o) = sum;
    }
  }
  return y;
}

/// y = x w^T + b with w: (d_out x d_in), PyTorch's nn.Linear convention; b has d_out entries
/// (any shape, read in storage order).
inline Matrix project_transposed(const Matrix& x, const Matrix& w, const Matrix& b) {
  require(w.cols() == x.cols() && b.size() == w.rows(), "project_transposed: shapes");
  Matrix y(x.rows(), w.rows());
  for (Index i = 0; i < x.rows(); ++i) {
    for (Index o = 0; o < w.rows(); ++o) {
      Real sum = b.data()[o];
      for (Index c = 0; c < x.cols(); ++c) sum += x(i, c) * w(o, c);
      y(i, o) = sum;
    }
  }
  return y;
}

/// The weights of a multi-head layer in the seeds' convention (y = x W + b).
struct MultiHeadParameters {
  Matrix w_q, w_k, w_v, w_o;  // d_model x d_model (w_k, w_v: d_model x num_kv_heads * head_dim)
  Matrix b_q, b_k, b_v, b_o;  // 1 x d_model (b_k, b_v: 1 x num_kv_heads * head_dim)
  Index num_heads = 1;
  Index num_kv_heads = 0;  // 0: num_heads (no grouping)
};

/// The K (or V) of num_kv_heads heads of width head_dim, expanded to num_heads heads: column block
/// h of the result is a copy of column block h / (num_heads / num_kv_heads) of kv.
inline Matrix repeat_kv_heads(const Matrix& kv, Index num_heads, Index num_kv_heads) {
  require(num_kv_heads >= 1 && num_heads % num_kv_heads == 0 && kv.cols() % num_kv_heads == 0,
          "repeat_kv_heads: num_kv_heads must divide num_heads and the width");
  const Index head_dim = kv.cols() / num_kv_heads, group = num_heads / num_kv_heads;
  Matrix out(kv.rows(), num_heads * head_dim);
  for (Index h = 0; h < num_heads; ++h) {
    const Index g = h / group;
    for (Index i = 0; i < kv.rows(); ++i) {
      for (Index j = 0; j < head_dim; ++j) out(i, h * head_dim + j) = kv(i, g * head_dim + j);
    }
  }
  return out;
}

/// The per-head projected inputs of multi-head attention.
struct Projected {
  Matrix q, k, v;
};

/// Q, K and V, with K and V expanded to num_heads heads (repeat_kv_heads) under grouped-query
/// attention, so that head h of each is column block h.
inline Projected project_inputs(const Matrix& query, const Matrix& key, const Matrix& value,
                                const MultiHeadParameters& p) {
  Projected x{project(query, p.w_q, p.b_q), project(key, p.w_k, p.b_k),
              project(value, p.w_v, p.b_v)};
  if (p.num_kv_heads != 0 && p.num_kv_heads != p.num_heads) {
    x.k = repeat_kv_heads(x.k, p.num_heads, p.num_kv_heads);
    x.v = repeat_kv_heads(x.v, p.num_heads, p.num_kv_heads);
  }
  return x;
}

/// Position features of a multi-head layer, each optional:
///   rope: every head of Q and of K rotated (reference::rope above) after the projection, query row
///         r at position query_offset + r and key row j at key_offset + j;
///   alibi_slopes: one per query head; head h adds Mask::alibi(alibi_slopes[h]) to the mask;
///   softcap: each head's scaled scores s become softcap * tanh(s / softcap) before the mask.
struct Positions {
  bool rope = false;
  bool interleaved = true;  // rope: pairs (2i, 2i + 1), else (i, i + rotary_dim / 2)
  Real base = 10000;
  Index rotary_dim = 0;  // 0: the whole head
  Index query_offset = 0, key_offset = 0;
  std::vector<Real> alibi_slopes;
  std::optional<Real> softcap;
};

/// Column block h (of width head_dim) of x, rotated by RoPE when `positions` asks for it.
inline Matrix head_block(const Matrix& x, Index h, Index head_dim, const Positions& positions,
                         Index offset) {
  Matrix block = columns(x, h * head_dim, head_dim);
  if (!positions.rope) return block;
  const Index rotary_dim = positions.rotary_dim == 0 ? head_dim : positions.rotary_dim;
  return rope(block, positions.interleaved, positions.base, rotary_dim, offset);
}

/// The mask of query head h: `mask`, and ALiBi's bias when `positions` has slopes.
inline Mask head_mask(const Mask& mask, Index h, const Positions& positions) {
  if (positions.alibi_slopes.empty()) return mask;
  return Mask::both({mask, Mask::alibi(positions.alibi_slopes[static_cast<std::size_t>(h)])});
}

/// Each head's attention pattern, L x S, num_heads of them.
inline std::vector<Matrix> multi_head_weights(const Matrix& query, const Matrix& key,
                                              const MultiHeadParameters& p,
                                              const Mask& mask = Mask::none(),
                                              const Positions& positions = {}) {
  const Projected x = project_inputs(query, key, key, p);
  const Index head_dim = x.q.cols() / p.num_heads;
  std::vector<Matrix> out;
  for (Index h = 0; h < p.num_heads; ++h) {
    out.push_back(weights(head_block(x.q, h, head_dim, positions, positions.query_offset),
                          head_block(x.k, h, head_dim, positions, positions.key_offset),
                          head_mask(mask, h, positions), std::nullopt, positions.softcap));
  }
  return out;
}

/// Multi-head attention: per-head attention on column slices, concatenated, then W_o and b_o
/// (with the position features of `positions` in each head).
inline Matrix multi_head(const Matrix& query, const Matrix& key, const Matrix& value,
                         const MultiHeadParameters& p, const Mask& mask = Mask::none(),
                         const Positions& positions = {}) {
  const Projected x = project_inputs(query, key, value, p);
  const Index d_model = x.q.cols();
  require(d_model % p.num_heads == 0, "multi_head: num_heads must divide d_model");
  const Index head_dim = d_model / p.num_heads;
  Matrix concat(query.rows(), d_model);
  for (Index h = 0; h < p.num_heads; ++h) {
    const Matrix head = attention(head_block(x.q, h, head_dim, positions, positions.query_offset),
                                  head_block(x.k, h, head_dim, positions, positions.key_offset),
                                  columns(x.v, h * head_dim, head_dim),
                                  head_mask(mask, h, positions), std::nullopt, positions.softcap);
    for (Index i = 0; i < head.rows(); ++i) {
      for (Index j = 0; j < head_dim; ++j) concat(i, h * head_dim + j) = head(i, j);
    }
  }
  return project(concat, p.w_o, p.b_o);
}

/// torch.nn.MultiheadAttention's forward (batch of one, no dropout), from its own parameters:
///   in_proj_weight (3E x E) = rows [W_q; W_k; W_v], each applied as x W^T; in_proj_bias (3E);
///   out_proj_weight (E x E), out_proj_bias (E).
inline Matrix pytorch_multi_head(const Matrix& query, const Matrix& key, const Matrix& value,
                                 const Matrix& in_proj_weight, const Matrix& in_proj_bias,
                                 const Matrix& out_proj_weight, const Matrix& out_proj_bias,
                                 Index num_heads, const Mask& mask = Mask::none()) {
  const Index e = in_proj_weight.cols();
  const auto bias_part = [&](Index part) {
    Matrix b(1, e);
    for (Index j = 0; j < e; ++j) b(0, j) = in_proj_bias.data()[part * e + j];
    return b;
  };
  const Matrix q = project_transposed(query, rows(in_proj_weight, 0, e), bias_part(0));
  const Matrix k = project_transposed(key, rows(in_proj_weight, e, e), bias_part(1));
  const Matrix v = project_transposed(value, rows(in_proj_weight, 2 * e, e), bias_part(2));
  const Index head_dim = e / num_heads;
  Matrix concat(query.rows(), e);
  for (Index h = 0; h < num_heads; ++h) {
    const Matrix head =
        attention(columns(q, h * head_dim, head_dim), columns(k, h * head_dim, head_dim),
                  columns(v, h * head_dim, head_dim), mask);
    for (Index i = 0; i < head.rows(); ++i) {
      for (Index j = 0; j < head_dim; ++j) concat(i, h * head_dim + j) = head(i, j);
    }
  }
  return project_transposed(concat, out_proj_weight, out_proj_bias);
}

}  // namespace support::reference
