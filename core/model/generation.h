// Text generation: greedy (temperature 0) or sampled with a seed, incremental with a KV cache,
// optionally after a prefix (cushion).
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "model/kv_cache.h"
#include "model/model.h"

namespace cushion {

struct GenerateOptions {
    int64_t max_new_tokens = 128;
    double temperature = 0.0;  // 0 = greedy (argmax, lowest id wins ties)
    double top_p = 1.0;
    uint64_t seed = 42;
    bool stop_at_eos = true;             // stop at </s> or <s>
    const KVCache* prefix = nullptr;     // cushion; the prompt then runs without its own <bos>
    at::Tensor prefix_last_logits;       // the cushion's last-position logits: used when the prompt is only <bos>
    ActivationHook* hook = nullptr;      // e.g. a quantized package's activation quantizer, on every forward pass
    const LinearKernels* kernels = nullptr;  // ForwardArgs::kernels, on every forward pass
    // Called with each new token; return false to stop.
    std::function<bool(int32_t token)> on_token;
};

// Returns the generated token ids (not including the prompt).
std::vector<int32_t> generate(const Model& m, const std::vector<int32_t>& prompt, const GenerateOptions& opts);

// Picks the next token from (V) logits: argmax when temperature == 0, else samples with `rng_state`.
int32_t sample_token(const at::Tensor& logits, double temperature, double top_p, uint64_t* rng_state);

}  // namespace cushion
