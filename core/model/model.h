// A loaded model on a device: config, weights, tokenizer, and the forward pass.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <memory>
#include <string>
#include <vector>

#include "model/activation_hook.h"
#include "model/kv_cache.h"
#include "model/model_config.h"
#include "model/model_weights.h"
#include "model/sites.h"
#include "tokenizer/tokenizer.h"

namespace cushion {

// Replaces how the block linears are computed (e.g. real int8 kernels for an exported package). The forward
// pass calls it after the activation hook of the linear's input site; it must return x W^T + b, shaped
// (..., out), in x's dtype. Embeddings, attention products and the LM head are not routed through it.
class LinearKernels {
public:
    virtual ~LinearKernels() = default;
    virtual at::Tensor linear(int layer, LinearId id, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) const = 0;
};

struct ForwardArgs {
    const KVCache* prefix = nullptr;  // prepended K/V (batch 1 is broadcast); positions continue after it
    KVCache* present = nullptr;       // if set, receives prefix + new K/V per layer (for decoding)
    ActivationHook* hook = nullptr;   // observes / replaces activations at every site
    const LinearKernels* kernels = nullptr;  // computes the block linears; null = at::linear (float)
    at::Tensor valid;                 // (B, T) bool, false on right padding; undefined = all real
    bool last_logits_only = false;    // logits for the last position only: (B, 1, V)
    bool skip_logits = false;         // stop after the last block (probes, calibration)
    bool final_hidden = false;        // return the final-norm hidden states (B, T, C) instead of logits
    // Positions skipped between the prefix and the new tokens: they sit at P + position_gap ... as if that many
    // tokens came between (seen by nobody). The candidate screen (cushion/candidate_screen.h) runs the sample
    // where it will sit after one more prefix token. 0 = contiguous.
    int64_t position_gap = 0;
    // >= 0: stop in block `stop_after_kv`, once its keys and values are in `present` (and its on_kv hook ran); the
    // blocks after it, and its attention and feed-forward, are not run, and forward() returns an undefined tensor. For
    // callers that need only the new tokens' K/V up to that block (the candidate screen: every block's, so the last
    // block's attention output and feed-forward are skipped). -1 = run every block.
    int64_t stop_after_kv = -1;
};

class Model {
public:
    ModelConfig config;
    ModelWeights weights;
    std::shared_ptr<const Tokenizer> tokenizer;
    std::string source;  // path it was loaded from
    std::string format;  // "llama2c", "gguf", "hf"
    // The tensor types in the source file, most frequent first, e.g. "Q4_1 x 210, F32 x 61, Q8_0 x 1" (GGUF;
    // block-quantized tensors are dequantized to float32 on load). Empty for the other formats.
    std::string source_types;
    std::vector<std::string> warnings;
    // The weights that held NaN or Inf when loaded, described as the file names them with our layer index
    // (describe_non_finite_weight in model/non_finite.h); the loaders warn with them, and an error about a result
    // that is not finite names them.
    std::vector<std::string> non_finite_weights;

    c10::Device device() const;
    at::ScalarType dtype() const;
    // Moves/casts the weights. Throws Error if the device is not available (e.g. cuda without a GPU).
    void to(c10::Device device, at::ScalarType dtype);

    // tokens: (B, T) int64 on any device. Returns float32 logits (B, T, V) (or (B, 1, V)), or an
    // undefined tensor with skip_logits. Runs under no-grad unless a caller enables gradients.
    at::Tensor forward(const at::Tensor& tokens, const ForwardArgs& args = {}) const;
    // The LM head on final-norm hidden states (from ForwardArgs::final_hidden): float32 logits (..., V).
    // forward() is final_hidden followed by this; callers use it to take the logits a slice at a time.
    at::Tensor lm_logits(const at::Tensor& hidden) const;

    // A stable hash of the architecture and weights (hex), to tie cushion files to their model.
    // Computed once (load_model does it while the weights are float32) and cached.
    std::string fingerprint() const;
    // Sets the cached fingerprint: a model rebuilt from an exported package (dequantized, SmoothQuant-folded
    // weights) reports the fingerprint of the model it was exported from, as QuantizedModel::model() does.
    void set_fingerprint(const std::string& fp) { fingerprint_ = fp; }

private:
    mutable std::string fingerprint_;
};

// "cpu", "cuda", "cuda:1" -> device; throws Error with a clear message when CUDA is not available.
c10::Device parse_device(const std::string& name);
// "fp32"/"float32", "fp16"/"float16", "bf16"/"bfloat16".
at::ScalarType parse_dtype(const std::string& name);
std::string dtype_name(at::ScalarType t);

}  // namespace cushion
