// SmoothQuant (Xiao et al., 2023): migrate activation outlier scale into the weights, per input channel,
// at the two linear inputs that follow a norm and can absorb the division exactly:
//   AttnIn (q/k/v input, after attn_norm) and MlpIn (gate/up or OPT fc1 input, after ffn_norm).
// Per channel j:  s_j = max|X_j|^alpha / max|W_j|^(1-alpha),  clamped to s_j >= 1e-5, where max|X_j| is the
// collected per-channel abs-max at that site and max|W_j| the abs-max of column j over every weight that
// consumes it (q, k, v  /  gate, up  /  OPT fc1), itself clamped to >= 1e-5 (as SmoothQuant's reference
// code). A channel never active in the documents (max|X_j| = 0) keeps s_j = 1 rather than 1e-5, so an
// unseen channel is not blown up by 1e5.
// Fold: norm weight (and OPT LayerNorm bias) /= s; consuming weights' columns *= s. In exact arithmetic
// the model is unchanged; in float32 the logits move by rounding only.
#pragma once
#include <ATen/core/Tensor.h>

#include <memory>
#include <vector>

#include "quant/activation_ranges.h"
#include "model/model.h"

namespace cushion {

struct SmoothFactors {
    double alpha = 0;
    std::vector<at::Tensor> attn;  // per layer: (C) float32 on the CPU, s for the AttnIn channels
    std::vector<at::Tensor> mlp;   // per layer: (C) float32 on the CPU, s for the MlpIn channels
};

// ranges: from collect_activation_ranges with channel_absmax recorded at AttnIn and MlpIn. alpha in (0, 1].
// Throws Error for a post-LayerNorm OPT model (do_layer_norm_before = false: nothing to fold into) or
// missing ranges.
SmoothFactors smoothquant_factors(const Model& m, const ActivationRanges& ranges, double alpha);

// Replaces (never modifies in place) the norm and consuming weight tensors of m with folded ones; other
// tensors stay shared with whatever m was copied from.
void fold_smoothquant(Model& m, const SmoothFactors& f);

// A shallow copy of m with the factors folded in; m is untouched.
std::shared_ptr<Model> smoothquant_model(const Model& m, const SmoothFactors& f);

}  // namespace cushion
