// SPDX-License-Identifier: MIT
//
// train_copy_task: a small attention-only model learns, from random initialisation, to output at
// each position the token that appeared `lag` positions earlier -- a task that needs attention,
// since the answer sits at another position than the question. Forward and backward passes come
// from the library (MultiHeadAttention::forward, multi_head_attention_backward, softmax_rows); the
// model, the cross-entropy and a plain Adam optimiser are written out here.
//
//   ./train_copy_task                      full run: trains to >= 99% held-out accuracy, writes
//                                          train_copy_task.svg (the learned attention pattern)
//   ./train_copy_task out/pattern.svg      the same, writing the heat map there
//   ./train_copy_task --steps 200          a shorter run; --smoke is --steps 60
// The ctest smoke test runs the short version (ATTENTION_EXAMPLE_SMOKE=1 in the environment is the
// same as --smoke) and checks that the loss fell.
//
// The model, for a sequence of seq_len tokens (one per row):
//   x0     = E[tokens] + P                      token embedding E (vocab x d_model) plus a learned
//                                               positional embedding P (seq_len x d_model)
//   x1     = x0 + attention_1(x0, causal)       causal multi-head self-attention, residual
//   logits = x1 W_out + b_out                   (seq_len x vocab)
//   loss   = mean over positions t >= lag of -log softmax(logits_t)[tokens[t - lag]]
// The attention layer must learn to send query t to key t - lag: a relation between positions that
// only P can express, while the values carry the token's identity to the output.

#include <algorithm>
#include <attention/attention.hpp>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "print.hpp"
#include "svg_heatmap.hpp"

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#define TRAIN_COPY_TASK_HAS_ISATTY 1
#endif

namespace {

using attention::Index;
using Scalar = float;
using Matrix = attention::Matrix<Scalar>;
using RowVector = attention::RowVector<Scalar>;
using Tokens = std::vector<int>;

// The task and the model's sizes.
constexpr Index vocab = 20;       // tokens 0..19
constexpr Index seq_len = 16;     // tokens per sequence
constexpr Index lag = 3;          // the target at position t is the token at t - lag
constexpr Index d_model = 32;     // embedding width
constexpr Index num_heads = 2;    // heads of the attention layer (head_dim 16)
constexpr Index batch_size = 32;  // sequences per step
constexpr int eval_sequences = 512;
constexpr std::uint32_t seed = 20240611;

/// Uniform in (0, 1) from one raw std::mt19937 output, so runs agree across platforms.
double unit_uniform(std::mt19937& engine) {
  return (static_cast<double>(engine()) + 0.5) / 4294967296.0;
}

/// A uniform integer in [0, n): the fraction of a uniform, fine for a small n.
int uniform_int(std::mt19937& engine, Index n) {
  return static_cast<int>(unit_uniform(engine) * static_cast<double>(n));
}

/// rows x cols, entries uniform in [-bound, bound].
Matrix uniform_matrix(std::mt19937& engine, Index rows, Index cols, double bound) {
  Matrix m(rows, cols);
  for (Index i = 0; i < m.size(); ++i) {
    m.data()[i] = static_cast<Scalar>((2 * unit_uniform(engine) - 1) * bound);
  }
  return m;
}

Tokens random_sequence(std::mt19937& engine) {
  Tokens tokens(seq_len);
  for (int& t : tokens) t = uniform_int(engine, vocab);
  return tokens;
}

/// The parameters of the model, and (in a second instance) their gradients.
struct Model {
  Matrix embedding;  // E, vocab x d_model
  Matrix position;   // P, seq_len x d_model
  attention::MultiHeadAttention<Scalar> attn{d_model, num_heads};
  Matrix w_out;     // d_model x vocab
  RowVector b_out;  // 1 x vocab

  /// Every parameter as a flat array (for the optimiser), in a fixed order.
  std::vector<std::pair<Scalar*, Index>> tensors() {
    std::vector<std::pair<Scalar*, Index>> t;
    for (Matrix* m : {&embedding, &position, &attn.w_q, &attn.w_k, &attn.w_v, &attn.w_o, &w_out}) {
      t.emplace_back(m->data(), m->size());
    }
    for (RowVector* b : {&attn.b_q, &attn.b_k, &attn.b_v, &attn.b_o, &b_out}) {
      t.emplace_back(b->data(), b->size());
    }
    return t;
  }

  void set_zero() {
    for (auto& [data, size] : tensors()) std::fill(data, data + size, Scalar(0));
  }
};

/// Random initialisation: embeddings uniform in [-0.5, 0.5]; the attention layer's weights by its
/// own reset_parameters (Glorot); W_out Glorot; biases zero.
Model initial_model(std::mt19937& engine) {
  Model m;
  m.embedding = uniform_matrix(engine, vocab, d_model, 0.5);
  m.position = uniform_matrix(engine, seq_len, d_model, 0.5);
  m.attn.reset_parameters(engine());
  m.w_out = uniform_matrix(engine, d_model, vocab, std::sqrt(6.0 / (d_model + vocab)));
  m.b_out = RowVector::Zero(vocab);
  return m;
}

/// All zeros, in the model's shapes: the gradient accumulator.
Model zero_model() {
  Model m;  // the attention layer's weights and biases start at zero
  m.embedding = Matrix::Zero(vocab, d_model);
  m.position = Matrix::Zero(seq_len, d_model);
  m.w_out = Matrix::Zero(d_model, vocab);
  m.b_out = RowVector::Zero(vocab);
  return m;
}

/// Everything the forward computes that the backward needs.
struct Activations {
  Matrix x0, x1, probabilities;  // seq_len x d_model, seq_len x d_model, seq_len x vocab
  double loss = 0;               // summed over the positions with a target
  int correct = 0;               // argmax predictions equal to the target
};

Activations forward(const Model& m, const Tokens& tokens) {
  Activations f;
  f.x0 = m.position;
  for (Index t = 0; t < seq_len; ++t) f.x0.row(t) += m.embedding.row(tokens[t]);
  // x1 = x0 + attention(x0, causal): the layer reads x0 as query, key and value.
  f.x1 = f.x0 + m.attn.forward(f.x0, attention::causal);
  const Matrix logits = attention::project(f.x1, m.w_out, m.b_out);
  f.probabilities = attention::softmax_rows(logits);
  for (Index t = lag; t < seq_len; ++t) {
    const int target = tokens[t - lag];
    f.loss -= std::log(std::max(static_cast<double>(f.probabilities(t, target)), 1e-30));
    Index predicted = 0;
    f.probabilities.row(t).maxCoeff(&predicted);
    f.correct += predicted == target ? 1 : 0;
  }
  return f;
}

/// Adds the gradient of (loss / scale) with respect to every parameter to `grad`.
void backward(const Model& m, const Tokens& tokens, const Activations& f, double scale,
              Model& grad) {
  // Cross-entropy of softmax: dlogits = (softmax(logits) - onehot(target)) / scale at the
  // positions with a target, 0 elsewhere.
  Matrix d_logits = Matrix::Zero(seq_len, vocab);
  for (Index t = lag; t < seq_len; ++t) {
    d_logits.row(t) = f.probabilities.row(t);
    d_logits(t, tokens[t - lag]) -= 1;
  }
  d_logits /= static_cast<Scalar>(scale);
  // logits = x1 W_out + b_out:
  //   dW_out = x1ᵀ dlogits,  db_out = colsum(dlogits),  dx1 = dlogits W_outᵀ.
  grad.w_out.noalias() += f.x1.transpose() * d_logits;
  grad.b_out += d_logits.colwise().sum();
  const Matrix d_x1 = d_logits * m.w_out.transpose();
  // x1 = x0 + attention(x0): the residual passes d_x1 straight through, the layer adds its dx.
  const attention::MultiHeadGradients<Scalar> g =
      attention::multi_head_attention_backward(m.attn, f.x0, d_x1, attention::causal);
  grad.attn.w_q += g.dw_q;
  grad.attn.w_k += g.dw_k;
  grad.attn.w_v += g.dw_v;
  grad.attn.w_o += g.dw_o;
  grad.attn.b_q += g.db_q;
  grad.attn.b_k += g.db_k;
  grad.attn.b_v += g.db_v;
  grad.attn.b_o += g.db_o;
  const Matrix d_x0 = d_x1 + g.dx;
  // x0 = E[tokens] + P: each row's gradient goes to its position and to its token's embedding.
  grad.position += d_x0;
  for (Index t = 0; t < seq_len; ++t) grad.embedding.row(tokens[t]) += d_x0.row(t);
}

/// Adam (Kingma & Ba, 2015), with bias correction, for each parameter θ with gradient g at step t:
///   m = b1 m + (1 - b1) g,   v = b2 v + (1 - b2) g²,
///   θ -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
struct Adam {
  double lr = 3e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  std::vector<std::vector<double>> m, v;
  int step = 0;

  void update(Model& params, Model& grads) {
    auto p = params.tensors();
    const auto g = grads.tensors();
    if (m.empty()) {
      for (const auto& [data, size] : p) {
        m.emplace_back(static_cast<std::size_t>(size), 0.0);
        v.emplace_back(static_cast<std::size_t>(size), 0.0);
      }
    }
    ++step;
    const double c1 = 1 - std::pow(beta1, step), c2 = 1 - std::pow(beta2, step);
    for (std::size_t i = 0; i < p.size(); ++i) {
      for (Index j = 0; j < p[i].second; ++j) {
        const double gj = g[i].first[j];
        double& mj = m[i][static_cast<std::size_t>(j)];
        double& vj = v[i][static_cast<std::size_t>(j)];
        mj = beta1 * mj + (1 - beta1) * gj;
        vj = beta2 * vj + (1 - beta2) * gj * gj;
        p[i].first[j] -= static_cast<Scalar>(lr * (mj / c1) / (std::sqrt(vj / c2) + eps));
      }
    }
  }
};

struct Evaluation {
  double loss;      // mean cross-entropy per predicted position
  double accuracy;  // fraction of predicted positions right
};

Evaluation evaluate(const Model& m, const std::vector<Tokens>& sequences) {
  double loss = 0;
  long correct = 0;
  for (const Tokens& tokens : sequences) {
    const Activations f = forward(m, tokens);
    loss += f.loss;
    correct += f.correct;
  }
  const double positions = static_cast<double>(sequences.size()) * (seq_len - lag);
  return {loss / positions, static_cast<double>(correct) / positions};
}

/// A loss for printing: 4 decimals, or 3 significant digits once it is below 0.01.
std::string format_loss(double loss) {
  char text[32];
  std::snprintf(text, sizeof text, loss >= 0.01 ? "%.4f" : "%.2e", loss);
  return text;
}

struct Settings {
  int max_steps = 1000;
  bool smoke = false;
  std::string svg_path = "train_copy_task.svg";
};

bool parse_arguments(int argc, char** argv, Settings& s) {
  const char* smoke_env = std::getenv("ATTENTION_EXAMPLE_SMOKE");
  if (smoke_env != nullptr && std::strcmp(smoke_env, "") != 0 && std::strcmp(smoke_env, "0") != 0) {
    s.smoke = true;
  }
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--smoke") {
      s.smoke = true;
    } else if (arg == "--steps" && i + 1 < argc) {
      s.max_steps = std::atoi(argv[++i]);
      if (s.max_steps < 1) return false;
    } else if (!arg.empty() && arg[0] != '-') {
      s.svg_path = arg;
    } else {
      return false;
    }
  }
  if (s.smoke) s.max_steps = 60;
  return true;
}

/// Trains, reports, writes the heat map; returns the exit status.
int run(const Settings& settings) {
#if defined(TRAIN_COPY_TASK_HAS_ISATTY)
  const bool terminal = isatty(STDOUT_FILENO) != 0;
#else
  const bool terminal = false;
#endif

  std::cout << "Task: at each position t >= " << lag << ", output the token seen " << lag
            << " positions earlier\n(vocabulary " << vocab << ", sequences of " << seq_len
            << " tokens; chance accuracy " << 100.0 / vocab << "%).\n"
            << "Model: embedding + learned positions (d_model " << d_model
            << "), one causal MultiHeadAttention layer (" << num_heads
            << " heads) with residual, output projection, cross-entropy; Adam.\n";

  // Training data is drawn fresh at every step; the held-out sequences come from another seed.
  std::mt19937 engine(seed), held_out_engine(seed + 1);
  Model model = initial_model(engine);
  Model grads = zero_model();
  std::cout << "Parameters: "
            << examples::group_digits(model.attn.parameter_count() + model.embedding.size() +
                                      model.position.size() + model.w_out.size() +
                                      model.b_out.size())
            << ", seed " << seed << "\n\n";
  std::vector<Tokens> held_out;
  held_out.reserve(eval_sequences);
  for (int i = 0; i < eval_sequences; ++i) held_out.push_back(random_sequence(held_out_engine));

  Adam adam;
  const Evaluation initial = evaluate(model, held_out);
  const double positions_per_step = static_cast<double>(batch_size) * (seq_len - lag);
  const int report_every = settings.smoke ? 10 : 50;
  double first_loss = 0, smoothed_loss = 0;  // training loss: first batch, moving average
  Evaluation last = initial;
  const auto start = std::chrono::steady_clock::now();
  for (int step = 1; step <= settings.max_steps; ++step) {
    // One step: forward and backward over a batch of fresh random sequences, gradients summed
    // (the loss is the mean over the batch's predicted positions), then one Adam update.
    grads.set_zero();
    double batch_loss = 0;
    long batch_correct = 0;
    for (Index b = 0; b < batch_size; ++b) {
      const Tokens tokens = random_sequence(engine);
      const Activations f = forward(model, tokens);
      backward(model, tokens, f, positions_per_step, grads);
      batch_loss += f.loss;
      batch_correct += f.correct;
    }
    adam.update(model, grads);
    batch_loss /= positions_per_step;
    if (step == 1) first_loss = smoothed_loss = batch_loss;
    smoothed_loss = 0.9 * smoothed_loss + 0.1 * batch_loss;

    const bool report = step % report_every == 0 || step == settings.max_steps;
    if (report) last = evaluate(model, held_out);
    if (!terminal && !report) continue;
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    char line[160];
    std::snprintf(line, sizeof line,
                  "step %5d  loss %s  batch accuracy %5.1f%%  held-out accuracy %5.1f%%  %.1f s",
                  step, format_loss(smoothed_loss).c_str(),
                  100.0 * static_cast<double>(batch_correct) / positions_per_step,
                  100.0 * last.accuracy, seconds);
    // On a terminal, one line rewritten in place ('\r', then the clear-to-end-of-line escape);
    // in a pipe or a log, one line per report.
    if (terminal) {
      std::cout << '\r' << line << "\x1b[K" << std::flush;
    } else {
      std::cout << line << '\n';
    }
  }
  if (terminal) std::cout << '\n';

  const Evaluation final_eval = evaluate(model, held_out);
  std::cout << "\nAfter " << settings.max_steps << " steps: held-out loss "
            << format_loss(final_eval.loss) << " (from " << format_loss(initial.loss)
            << "), held-out accuracy " << examples::format_number(100.0 * final_eval.accuracy, 2)
            << "% (from " << examples::format_number(100.0 * initial.accuracy, 2) << "%)\n";
  const bool loss_fell = final_eval.loss < initial.loss && smoothed_loss < first_loss;
  std::cout << (loss_fell ? "loss fell" : "loss did not fall") << ": training loss "
            << format_loss(first_loss) << " -> " << format_loss(smoothed_loss) << ", held-out loss "
            << format_loss(initial.loss) << " -> " << format_loss(final_eval.loss) << '\n';
  const bool learned = final_eval.accuracy >= 0.99;
  if (!settings.smoke) {
    std::cout << (learned ? "reached" : "did not reach") << " 99% held-out accuracy\n";
  }

  // The learned pattern on one held-out sequence: each head's weights; the map shows the head that
  // puts most weight on key t - lag.
  const Tokens& example = held_out.front();
  Matrix x0 = model.position;
  for (Index t = 0; t < seq_len; ++t) x0.row(t) += model.embedding.row(example[t]);
  const std::vector<Matrix> patterns = model.attn.head_weights(x0, attention::causal);
  std::size_t best = 0;
  double best_mass = -1;
  for (std::size_t h = 0; h < patterns.size(); ++h) {
    double mass = 0;
    for (Index t = lag; t < seq_len; ++t) mass += patterns[h](t, t - lag);
    mass /= seq_len - lag;
    std::cout << "head " << h << ": mean weight on key t - " << lag << ": "
              << examples::format_number(mass, 3) << '\n';
    if (mass > best_mass) {
      best_mass = mass;
      best = h;
    }
  }
  examples::Labels labels;
  labels.reserve(seq_len);
  for (Index t = 0; t < seq_len; ++t) {
    labels.push_back(std::to_string(t) + ":" +
                     std::to_string(example[static_cast<std::size_t>(t)]));
  }
  std::ofstream svg(settings.svg_path);
  const bool written =
      svg && examples::write_svg_heatmap(
                 svg, patterns[best], labels, labels,
                 {"Learned attention, head " + std::to_string(best) + " (position:token)",
                  "Trained " + std::to_string(settings.max_steps) + " steps to copy the token " +
                      std::to_string(lag) + " positions back; weight on t - " +
                      std::to_string(lag) + ": " + examples::format_number(best_mass, 3)});
  svg.close();
  if (!written || !svg) {
    std::cout << "could not write " << settings.svg_path << '\n';
    return 1;
  }
  std::cout << "wrote " << settings.svg_path << " (" << seq_len << " x " << seq_len
            << " heat map, queries as rows, keys as columns)\n";
  return loss_fell && (settings.smoke || learned) ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Settings settings;
  if (!parse_arguments(argc, argv, settings)) {
    std::cout << "usage: train_copy_task [--steps N | --smoke] [heatmap.svg]\n";
    return 2;
  }
  try {
    return run(settings);
  } catch (const std::exception& error) {  // a ShapeError would mean a bug in the model code
    std::cerr << "train_copy_task: " << error.what() << '\n';
    return 1;
  }
}
