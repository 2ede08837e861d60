// Rotary frequencies for every rope scaling Hugging Face transformers defines for Llama-family
// models (modeling_rope_utils): default, linear, dynamic NTK, llama3 and yarn.
#include <cmath>
#include <string>
#include <vector>

#include "common.h"

namespace {

constexpr double kPi = 3.14159265358979323846;

std::vector<double> default_inv_freq(double base, int dim) {
  std::vector<double> inv(static_cast<size_t>(dim / 2));
  for (int i = 0; i < dim / 2; i++) {
    // HF: 1 / base ** (arange(0, dim, 2).float() / dim), in fp32.
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(dim);
    inv[static_cast<size_t>(i)] = 1.0 / static_cast<double>(std::pow(static_cast<float>(base), exponent));
  }
  return inv;
}

double yarn_mscale(double scale, double mscale) {
  if (scale <= 1.0) return 1.0;
  return 0.1 * mscale * std::log(scale) + 1.0;
}

double yarn_correction_dim(double rotations, int dim, double base, double max_pos) {
  return (dim * std::log(max_pos / (rotations * 2 * kPi))) / (2 * std::log(base));
}

}  // namespace

extern "C" lm_status lm_rope_inv_freq(const lm_rope_config* c, int64_t seq_len, float* inv_freq_out,
                                      float* attention_scaling_out) {
  using lm::fail;
  if (c == nullptr || inv_freq_out == nullptr || attention_scaling_out == nullptr) {
    return fail(LM_ERR_ARGUMENT, "rope: config and outputs are required");
  }
  const int dim = c->rotary_dim;
  if (dim <= 0 || dim % 2 != 0) return fail(LM_ERR_ARGUMENT, "rope: rotary_dim must be a positive even number");
  if (!(c->base > 1.0)) return fail(LM_ERR_ARGUMENT, "rope: rope_theta must be greater than 1");
  const bool needs_factor = c->type != LM_ROPE_DEFAULT;
  if (needs_factor && !(c->factor > 0.0)) return fail(LM_ERR_ARGUMENT, "rope: scaling factor must be positive");

  std::vector<double> inv;
  double attention = 1.0;
  switch (c->type) {
    case LM_ROPE_DEFAULT:
      inv = default_inv_freq(c->base, dim);
      break;
    case LM_ROPE_LINEAR:
      inv = default_inv_freq(c->base, dim);
      for (double& f : inv) f /= c->factor;
      break;
    case LM_ROPE_DYNAMIC: {
      if (c->max_position_embeddings <= 0) return fail(LM_ERR_ARGUMENT, "rope: dynamic needs max_position_embeddings");
      double base = c->base;
      const double max_pos = c->max_position_embeddings;
      // HF grows the base only once the sequence is longer than the trained context.
      if (static_cast<double>(seq_len) > max_pos) {
        base = c->base * std::pow((c->factor * static_cast<double>(seq_len) / max_pos) - (c->factor - 1.0),
                                  static_cast<double>(dim) / (dim - 2));
      }
      inv = default_inv_freq(base, dim);
      break;
    }
    case LM_ROPE_LLAMA3: {
      const double old_ctx = c->original_max_position_embeddings > 0 ? c->original_max_position_embeddings
                                                                      : c->max_position_embeddings;
      if (old_ctx <= 0 || !(c->high_freq_factor > c->low_freq_factor)) {
        return fail(LM_ERR_ARGUMENT, "rope: llama3 needs original_max_position_embeddings and high_freq_factor > low_freq_factor");
      }
      inv = default_inv_freq(c->base, dim);
      const double low_wavelen = old_ctx / c->low_freq_factor;
      const double high_wavelen = old_ctx / c->high_freq_factor;
      for (double& f : inv) {
        const double wavelen = 2 * kPi / f;
        double scaled = wavelen > low_wavelen ? f / c->factor : f;
        if (!(wavelen < high_wavelen) && !(wavelen > low_wavelen)) {
          const double smooth = (old_ctx / wavelen - c->low_freq_factor) / (c->high_freq_factor - c->low_freq_factor);
          scaled = (1 - smooth) * scaled / c->factor + smooth * scaled;
        }
        f = scaled;
      }
      break;
    }
    case LM_ROPE_YARN: {
      double factor = c->factor;
      double original = c->max_position_embeddings;
      // As HF: when the config names the pretrained context, the factor is the ratio of the two.
      if (c->original_max_position_embeddings > 0) {
        original = c->original_max_position_embeddings;
        if (c->max_position_embeddings > 0) factor = static_cast<double>(c->max_position_embeddings) / original;
      }
      if (original <= 0) return fail(LM_ERR_ARGUMENT, "rope: yarn needs max_position_embeddings");
      if (c->attention_factor > 0) {
        attention = c->attention_factor;
      } else if (c->mscale > 0 && c->mscale_all_dim > 0) {
        attention = yarn_mscale(factor, c->mscale) / yarn_mscale(factor, c->mscale_all_dim);
      } else {
        attention = yarn_mscale(factor, 1.0);
      }
      const double beta_fast = c->beta_fast > 0 ? c->beta_fast : 32.0;
      const double beta_slow = c->beta_slow > 0 ? c->beta_slow : 1.0;
      double low = yarn_correction_dim(beta_fast, dim, c->base, original);
      double high = yarn_correction_dim(beta_slow, dim, c->base, original);
      if (c->truncate != 0) {
        low = std::floor(low);
        high = std::ceil(high);
      }
      low = std::max(low, 0.0);
      high = std::min(high, static_cast<double>(dim - 1));
      if (low == high) high += 0.001;
      std::vector<double> pos = default_inv_freq(c->base, dim);
      inv.resize(pos.size());
      for (size_t i = 0; i < pos.size(); i++) {
        const double extrapolation = pos[i];
        const double interpolation = pos[i] / factor;
        const double ramp = std::min(1.0, std::max(0.0, (static_cast<double>(i) - low) / (high - low)));
        const double extrapolation_weight = 1.0 - ramp;
        inv[i] = interpolation * (1 - extrapolation_weight) + extrapolation * extrapolation_weight;
      }
      break;
    }
    default:
      return fail(LM_ERR_ARGUMENT, "rope: unknown scaling type " + std::to_string(static_cast<int>(c->type)));
  }
  for (size_t i = 0; i < inv.size(); i++) inv_freq_out[i] = static_cast<float>(inv[i]);
  *attention_scaling_out = static_cast<float>(attention);
  return LM_OK;
}
