#pragma once
// SPDX-License-Identifier: MIT
//
// An attention pattern as an SVG heat map, for the examples: queries as rows, keys as columns, one
// square per weight, coloured on a fixed 0..1 scale (weights are probabilities, so two maps compare
// at a glance) with the value written in it, the tokens on both axes and a colour legend. Weights
// of exactly 0, which only a mask produces, are drawn grey as "masked". Not part of the library.
//
//   std::ofstream file("pattern.svg");
//   examples::write_svg_heatmap(file, weights, tokens, tokens, {"Title", "subtitle"});

#include <Eigen/Core>
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <ostream>
#include <string>
#include <vector>

#include "print.hpp"

namespace examples {

/// Text around the map.
struct HeatmapText {
  std::string title;
  std::string subtitle;
};

/// `text` with the five XML special characters escaped, for element content and attribute values.
inline std::string xml_escape(const std::string& text) {
  std::string escaped;
  for (const char c : text) {
    switch (c) {
      case '&':
        escaped += "&amp;";
        break;
      case '<':
        escaped += "&lt;";
        break;
      case '>':
        escaped += "&gt;";
        break;
      case '"':
        escaped += "&quot;";
        break;
      case '\'':
        escaped += "&apos;";
        break;
      default:
        escaped += c;
    }
  }
  return escaped;
}

namespace heatmap_detail {

struct Rgb {
  double r, g, b;
};

// ColorBrewer's sequential "Blues" (Brewer, colorbrewer2.org), from weight 0 to weight 1.
inline constexpr std::array<Rgb, 9> blues = {{{247, 251, 255},
                                              {222, 235, 247},
                                              {198, 219, 239},
                                              {158, 202, 225},
                                              {107, 174, 214},
                                              {66, 146, 198},
                                              {33, 113, 181},
                                              {8, 81, 156},
                                              {8, 48, 107}}};

/// Linear interpolation between the stops of `blues`, for t in [0, 1].
inline Rgb colour_at(double t) {
  t = std::clamp(t, 0.0, 1.0) * static_cast<double>(blues.size() - 1);
  const auto i = std::min(static_cast<std::size_t>(t), blues.size() - 2);
  const double f = t - static_cast<double>(i);
  const Rgb& a = blues[i];
  const Rgb& b = blues[i + 1];
  return {a.r + f * (b.r - a.r), a.g + f * (b.g - a.g), a.b + f * (b.b - a.b)};
}

inline std::string hex(const Rgb& c) {
  char text[8];
  std::snprintf(text, sizeof text, "#%02x%02x%02x", static_cast<unsigned>(std::lround(c.r)),
                static_cast<unsigned>(std::lround(c.g)), static_cast<unsigned>(std::lround(c.b)));
  return text;
}

/// Dark text on light cells, white text on dark ones (relative luminance, ITU-R BT.709).
inline const char* text_colour_on(const Rgb& c) {
  const double luminance = (0.2126 * c.r + 0.7152 * c.g + 0.0722 * c.b) / 255.0;
  return luminance > 0.55 ? "#1a1a1a" : "#ffffff";
}

inline std::string number(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f", value);
  return text;
}

/// A rough width in pixels of `text` at `font_size`, for layout only.
inline double text_width(const std::string& text, double font_size) {
  return 0.62 * font_size * static_cast<double>(display_width(text));
}

}  // namespace heatmap_detail

/// Writes `weights` (rows: queries, columns: keys) as an SVG heat map. `query_labels` and
/// `key_labels` name the rows and columns; they may hold any UTF-8 text (escaped here). Returns
/// false, writing nothing, if the numbers of labels do not match the matrix.
template <typename Derived>
bool write_svg_heatmap(std::ostream& out, const Eigen::MatrixBase<Derived>& weights,
                       const Labels& query_labels, const Labels& key_labels,
                       const HeatmapText& text) {
  namespace hd = heatmap_detail;
  const auto rows = static_cast<std::size_t>(weights.rows());
  const auto cols = static_cast<std::size_t>(weights.cols());
  if (query_labels.size() != rows || key_labels.size() != cols || rows == 0 || cols == 0) {
    return false;
  }

  // Layout, in pixels: title block, key labels, grid, legend to the right.
  const double cell = 60, label_font = 15, value_font = 14, gap = 10;
  double longest_query = 0, longest_key = 0;
  for (const auto& label : query_labels)
    longest_query = std::max(longest_query, hd::text_width(label, label_font));
  for (const auto& label : key_labels)
    longest_key = std::max(longest_key, hd::text_width(label, label_font));
  // Key labels run horizontally when they fit in a column, else at -45 degrees.
  const bool slanted = longest_key > cell - 6;
  const double key_band = slanted ? longest_key * 0.72 + 16 : label_font + 10;
  const double left = 34 + longest_query + gap;  // axis title, query labels
  const double top = 70 + 22 + key_band;         // title, axis title, key labels
  const double grid_w = cell * static_cast<double>(cols);
  const double grid_h = cell * static_cast<double>(rows);
  const double legend_x = left + grid_w + 28, legend_w = 16;
  const double width = std::max(legend_x + legend_w + 74, left + hd::text_width(text.title, 20));
  const double height = top + grid_h + 28;
  const auto n = [](double v) { return hd::number(v); };

  out << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << n(width) << "\" height=\""
      << n(height) << "\" viewBox=\"0 0 " << n(width) << ' ' << n(height) << "\""
      << " font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n"
      << "  <title>" << xml_escape(text.title) << "</title>\n"
      << "  <defs>\n    <linearGradient id=\"scale\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">\n";
  for (std::size_t s = 0; s < hd::blues.size(); ++s) {
    const double offset = static_cast<double>(s) / static_cast<double>(hd::blues.size() - 1);
    out << "      <stop offset=\"" << offset << "\" stop-color=\"" << hd::hex(hd::blues[s])
        << "\"/>\n";
  }
  out << "    </linearGradient>\n"
      << "    <pattern id=\"masked\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" "
         "patternTransform=\"rotate(45)\">\n"
      << "      <rect width=\"6\" height=\"6\" fill=\"#f2f2f2\"/>\n"
      << "      <line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\" stroke=\"#dcdcdc\" stroke-width=\"2\"/>\n"
      << "    </pattern>\n  </defs>\n"
      << "  <rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n";

  // Title, subtitle, axis titles.
  out << "  <text x=\"" << n(left) << "\" y=\"30\" font-size=\"20\" font-weight=\"bold\" "
      << "fill=\"#1a1a1a\">" << xml_escape(text.title) << "</text>\n"
      << "  <text x=\"" << n(left) << "\" y=\"54\" font-size=\"13\" fill=\"#555555\">"
      << xml_escape(text.subtitle) << "</text>\n"
      << "  <text x=\"" << n(left + grid_w / 2) << "\" y=\"" << n(top - key_band - 8)
      << "\" font-size=\"13\" fill=\"#555555\" text-anchor=\"middle\">keys (attended to)</text>\n"
      << "  <text transform=\"translate(20 " << n(top + grid_h / 2) << ") rotate(-90)\" "
      << "font-size=\"13\" fill=\"#555555\" text-anchor=\"middle\">queries (attending)</text>\n";

  // Key labels across the top, query labels down the left.
  for (std::size_t j = 0; j < cols; ++j) {
    const double x = left + cell * (static_cast<double>(j) + 0.5);
    if (slanted) {
      out << "  <text transform=\"translate(" << n(x) << ' ' << n(top - 8) << ") rotate(-45)\" "
          << "font-size=\"" << label_font << "\" fill=\"#1a1a1a\">" << xml_escape(key_labels[j])
          << "</text>\n";
    } else {
      out << "  <text x=\"" << n(x) << "\" y=\"" << n(top - 9) << "\" font-size=\"" << label_font
          << "\" fill=\"#1a1a1a\" text-anchor=\"middle\">" << xml_escape(key_labels[j])
          << "</text>\n";
    }
  }
  for (std::size_t i = 0; i < rows; ++i) {
    const double y = top + cell * (static_cast<double>(i) + 0.5);
    out << "  <text x=\"" << n(left - gap) << "\" y=\"" << n(y) << "\" font-size=\"" << label_font
        << "\" fill=\"#1a1a1a\" text-anchor=\"end\" dominant-baseline=\"central\">"
        << xml_escape(query_labels[i]) << "</text>\n";
  }

  // The cells: colour for the weight, the weight written in the middle. Exactly 0 means masked.
  for (std::size_t i = 0; i < rows; ++i) {
    for (std::size_t j = 0; j < cols; ++j) {
      const double w =
          static_cast<double>(weights(static_cast<Eigen::Index>(i), static_cast<Eigen::Index>(j)));
      const double x = left + cell * static_cast<double>(j);
      const double y = top + cell * static_cast<double>(i);
      const bool masked = w == 0.0;
      const hd::Rgb colour = hd::colour_at(w);
      out << "  <rect x=\"" << n(x) << "\" y=\"" << n(y) << "\" width=\"" << n(cell)
          << "\" height=\"" << n(cell) << "\" fill=\""
          << (masked ? std::string("url(#masked)") : hd::hex(colour))
          << "\" stroke=\"#ffffff\" stroke-width=\"1.5\"><title>" << xml_escape(query_labels[i])
          << " &#8594; " << xml_escape(key_labels[j]) << ": " << format_number(w, 4)
          << "</title></rect>\n";
      out << "  <text x=\"" << n(x + cell / 2) << "\" y=\"" << n(y + cell / 2) << "\" font-size=\""
          << value_font << "\" fill=\"" << (masked ? "#b0b0b0" : hd::text_colour_on(colour))
          << "\" text-anchor=\"middle\" dominant-baseline=\"central\">"
          << (masked ? std::string("0") : format_number(w, 2)) << "</text>\n";
    }
  }
  out << "  <rect x=\"" << n(left) << "\" y=\"" << n(top) << "\" width=\"" << n(grid_w)
      << "\" height=\"" << n(grid_h) << "\" fill=\"none\" stroke=\"#9a9a9a\"/>\n";

  // The legend: colour scale from 0 (bottom) to 1 (top), ticks every 0.25, the masked swatch.
  const double legend_h = std::max(grid_h - 40, 80.0);
  out << "  <text x=\"" << n(legend_x) << "\" y=\"" << n(top - 18) << "\" font-size=\"12\" "
      << "fill=\"#555555\">weight</text>\n"
      << "  <rect x=\"" << n(legend_x) << "\" y=\"" << n(top) << "\" width=\"" << n(legend_w)
      << "\" height=\"" << n(legend_h) << "\" fill=\"url(#scale)\" stroke=\"#9a9a9a\"/>\n";
  for (int t = 0; t <= 4; ++t) {
    const double y = top + legend_h * (1.0 - t / 4.0);
    out << "  <line x1=\"" << n(legend_x + legend_w) << "\" y1=\"" << n(y) << "\" x2=\""
        << n(legend_x + legend_w + 4) << "\" y2=\"" << n(y) << "\" stroke=\"#555555\"/>\n"
        << "  <text x=\"" << n(legend_x + legend_w + 7) << "\" y=\"" << n(y) << "\" "
        << "font-size=\"12\" fill=\"#333333\" dominant-baseline=\"central\">"
        << format_number(t / 4.0, 2) << "</text>\n";
  }
  const double swatch_y = top + legend_h + 16;
  out << "  <rect x=\"" << n(legend_x) << "\" y=\"" << n(swatch_y) << "\" width=\"" << n(legend_w)
      << "\" height=\"" << n(legend_w) << "\" fill=\"url(#masked)\" "
      << "stroke=\"#9a9a9a\"/>\n"
      << "  <text x=\"" << n(legend_x + legend_w + 7) << "\" y=\"" << n(swatch_y + legend_w / 2)
      << "\" font-size=\"12\" fill=\"#333333\" dominant-baseline=\"central\">masked</text>\n"
      << "</svg>\n";
  return static_cast<bool>(out);
}

}  // namespace examples
