// The simulated ("fake") quantized model: a copy of a model with SmoothQuant folded in and its block
// linear weights replaced by their quantize-dequantize values, plus a hook that quantize-dequantizes
// activations at the chosen linear inputs (and optionally the new tokens' K/V) during the forward pass.
// Everything is computed in the model's floating dtype; the numbers equal what an integer kernel with
// the same scales would produce up to float rounding.
//
// Build order: (1) SmoothQuant factors from an activation-range pass over the original model, folded into a
// shallow copy; (2) weights quantized; (3) per-tensor static activation ranges collected on that smoothed,
// weight-quantized model (activations in full precision), with the prefix in place when one is given.
//
// Activation granularities (padding never influences a range):
//   per-tensor-static  : the collected [min, max] of the (layer, site), for every token; values outside clamp.
//   per-tensor-dynamic : min/max over each sequence's (batch row's) real tokens, per forward pass.
//   per-token          : min/max over each token's channels.
#pragma once
#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "model/activation_hook.h"
#include "quant/activation_ranges.h"
#include "model/model.h"
#include "model/perplexity.h"
#include "base/progress.h"
#include "quant/quant_config.h"
#include "quant/smoothquant.h"

namespace cushion {

// Fake-quantizes activations (and K/V) as a QuantConfig says. Holds no per-call state: one instance may
// serve any number of forward passes. When an activation requires grad the result is a straight-through
// estimate, x + (Q(x) - x).detach(); otherwise exactly Q(x).
class ActQuantHook : public ActivationHook {
public:
    // ranges: required for per-tensor-static activations: every chosen (layer, site) must have been seen.
    ActQuantHook(const QuantConfig& cfg, int n_layers, std::shared_ptr<const ActivationRanges> ranges = nullptr);
    void on_activation(int layer, Site site, at::Tensor& x, const at::Tensor& valid) override;
    void on_kv(int layer, at::Tensor& k, at::Tensor& v, const at::Tensor& valid) override;
    const QuantConfig& config() const { return cfg_; }

private:
    QuantConfig cfg_;
    int n_layers_;
    std::shared_ptr<const ActivationRanges> ranges_;
};

struct QuantizeOptions {
    const KVCache* prefix = nullptr;  // the cushion in place while collecting ranges (its tokens are excluded)
    int64_t max_batch_tokens = 8192;  // batching of the range passes
    ProgressFn progress;              // progress of the range passes; false cancels (throws Cancelled)
};

class QuantizedModel {
public:
    // calib_docs: as from tokenize_documents; required when cfg.needs_activation_ranges() (static activations
    // or SmoothQuant), else unused. Throws Error on a bad config or missing/empty documents.
    QuantizedModel(const Model& fp, const QuantConfig& cfg, const std::vector<std::vector<int32_t>>& calib_docs = {},
                   const QuantizeOptions& opts = {});

    // The smoothed, weight-quantized copy. Tensors it did not change are shared with the original.
    // Its fingerprint() is the original model's (cushions made for the original apply to it).
    const Model& model() const { return *model_; }
    std::shared_ptr<const Model> model_ptr() const { return model_; }
    // The activation/KV quantizer to pass as ForwardArgs::hook or PerplexityOptions::hook; nullptr when
    // activations and KV cache are in full precision.
    ActivationHook* hook() const { return hook_.get(); }
    const QuantConfig& config() const { return cfg_; }
    // Static ranges (per-tensor-static only, else null) and SmoothQuant factors (null when off).
    std::shared_ptr<const ActivationRanges> ranges() const { return ranges_; }
    const SmoothFactors* smooth() const { return smooth_ ? smooth_.get() : nullptr; }
    // Remarks for the user, e.g. layers where the weight group fell back to per-channel.
    const std::vector<std::string>& notes() const { return notes_; }

    // model().forward with the quantizer. A hook already in args runs first (it sees the activation the
    // quantizer receives), then the quantizer.
    at::Tensor forward(const at::Tensor& tokens, const ForwardArgs& args = {}) const;
    // cushion::perplexity on model() with the quantizer chained after opts.hook (if any).
    PerplexityResult perplexity(const std::vector<std::vector<int32_t>>& docs, const PerplexityOptions& opts = {}) const;

private:
    QuantConfig cfg_;
    std::shared_ptr<Model> model_;
    std::unique_ptr<ActQuantHook> hook_;
    std::shared_ptr<const ActivationRanges> ranges_;
    std::unique_ptr<SmoothFactors> smooth_;
    std::vector<std::string> notes_;
};

std::shared_ptr<QuantizedModel> make_quantized_model(const Model& fp, const QuantConfig& cfg,
                                                     const std::vector<std::vector<int32_t>>& calib_docs = {},
                                                     const QuantizeOptions& opts = {});

// Replaces every block linear weight of m (q, k, v, o, gate, up, down / fc1, fc2) by its fake-quantized
// value (never in place). Embeddings, norms, biases and the LM head are untouched. Appends a note per
// weight whose group size fell back to per-channel.
void quantize_model_weights(Model& m, int bits, int64_t group, std::vector<std::string>* notes = nullptr);

}  // namespace cushion
