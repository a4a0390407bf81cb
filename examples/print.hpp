#pragma once
// SPDX-License-Identifier: MIT
//
// Printing helpers shared by the examples: matrices as labelled tables, the way the seeds'
// notebooks show them (a pandas DataFrame with the tokens as row and column labels), step headings,
// and integers with thousands separators. Not part of the library.
//
//   examples::print_table("A = softmax(S)", a, tokens, tokens, 3);
//
//   A = softmax(S)
//           t1     t2     t3
//     t1  0.401  0.401  0.198
//     t2  0.198  0.401  0.401

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

namespace examples {

using Labels = std::vector<std::string>;

/// Terminal columns taken by a UTF-8 string: one per code point, which is right for the accented
/// Latin letters of the examples' tokens ("créature" is 8 columns, 9 bytes).
inline std::size_t display_width(const std::string& text) {
  std::size_t width = 0;
  for (const unsigned char byte : text) width += (byte & 0xC0) != 0x80 ? 1 : 0;  // skip 10xxxxxx
  return width;
}

/// `text` padded with spaces to `width` columns, on the left (right-aligned) or on the right.
inline std::string pad(const std::string& text, std::size_t width, bool align_right) {
  const std::size_t used = display_width(text);
  const std::string fill(width > used ? width - used : 0, ' ');
  return align_right ? fill + text : text + fill;
}

/// `value` in fixed notation with `precision` decimals, as NumPy prints a rounded array: "-inf" for
/// a masked score, and no minus sign on a value that rounds to zero.
inline std::string format_number(double value, int precision) {
  if (std::isinf(value)) return value < 0 ? "-inf" : "inf";
  if (std::isnan(value)) return "nan";
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.*f", precision, value);
  std::string text = buffer;
  if (text[0] == '-' && text.find_first_not_of("-0.") == std::string::npos) text.erase(0, 1);
  return text;
}

/// 57982058496 -> "57,982,058,496".
inline std::string group_digits(std::int64_t value) {
  std::string digits = std::to_string(value < 0 ? -value : value);
  for (auto i = static_cast<std::ptrdiff_t>(digits.size()) - 3; i > 0; i -= 3) {
    digits.insert(static_cast<std::size_t>(i), ",");
  }
  return value < 0 ? "-" + digits : digits;
}

/// {prefix + first, prefix + (first + 1), ...}: labels for unnamed rows or feature columns.
inline Labels numbered(const std::string& prefix, Eigen::Index count, int first = 0) {
  Labels labels;
  for (Eigen::Index i = 0; i < count; ++i) labels.push_back(prefix + std::to_string(first + i));
  return labels;
}

/// A heading for one step of a walkthrough, then its one-line explanation.
inline void print_step(const std::string& title, const std::string& explanation) {
  std::cout << "\n--- " << title << '\n' << "    " << explanation << '\n';
}

/// Prints `m` under `title`, with `row_labels` down the left and `col_labels` across the top, each
/// entry with `precision` decimals, right-aligned in columns two spaces apart.
template <typename Derived>
void print_table(const std::string& title, const Eigen::MatrixBase<Derived>& m,
                 const Labels& row_labels, const Labels& col_labels, int precision) {
  const auto rows = static_cast<std::size_t>(m.rows());
  const auto cols = static_cast<std::size_t>(m.cols());
  if (row_labels.size() != rows || col_labels.size() != cols) {
    std::cerr << "print_table(" << title << "): " << m.rows() << " x " << m.cols()
              << " matrix with " << row_labels.size() << " row and " << col_labels.size()
              << " column labels\n";
    std::exit(1);
  }
  // Format every entry first, so each column can be as wide as its widest entry or label.
  std::vector<std::vector<std::string>> cells(rows, std::vector<std::string>(cols));
  std::vector<std::size_t> width(cols);
  for (std::size_t j = 0; j < cols; ++j) width[j] = display_width(col_labels[j]);
  for (std::size_t i = 0; i < rows; ++i) {
    for (std::size_t j = 0; j < cols; ++j) {
      const auto value = m(static_cast<Eigen::Index>(i), static_cast<Eigen::Index>(j));
      cells[i][j] = format_number(static_cast<double>(value), precision);
      width[j] = std::max(width[j], cells[i][j].size());
    }
  }
  std::size_t label_width = 0;
  for (const std::string& label : row_labels)
    label_width = std::max(label_width, display_width(label));

  std::cout << '\n' << title << '\n' << "  " << std::string(label_width, ' ');
  for (std::size_t j = 0; j < cols; ++j) std::cout << "  " << pad(col_labels[j], width[j], true);
  std::cout << '\n';
  for (std::size_t i = 0; i < rows; ++i) {
    std::cout << "  " << pad(row_labels[i], label_width, false);
    for (std::size_t j = 0; j < cols; ++j) std::cout << "  " << pad(cells[i][j], width[j], true);
    std::cout << '\n';
  }
}

}  // namespace examples
