// What to quantize and how: the settings of a simulated ("fake") quantized model.
//
// - Weights of every linear layer in the blocks (q, k, v, o, gate, up, down; OPT fc1/fc2) — symmetric,
//   per output channel or group-wise. Embeddings, positional embeddings, norms and the LM head stay in
//   full precision.
// - Activations at the chosen linear-input sites (default: all four) — asymmetric min-max with one of
//   three granularities (resources/docs/method.md, "Evaluation").
// - Optional SmoothQuant migration folded into the norms before weight quantization.
// - Optional KV-cache quantization of the new tokens' keys (after RoPE) and values: asymmetric min-max
//   per head and per token (one scale/zero for each head_dim vector). A prefix (cushion) KV is stored,
//   not recomputed, and stays in full precision.
//
// No tensor header (model/sites.h only): the studio's widgets use QuantConfig as it is (ctest light_headers).
#pragma once
#include <array>
#include <cstdint>
#include <string>

#include "model/sites.h"

namespace cushion {

enum class ActGranularity {
    PerTensorStatic,   // "per-tensor-static": one scale/zero per (layer, site), collected offline (activation_ranges.h), fixed
    PerTensorDynamic,  // "per-tensor-dynamic": per forward pass, one per sequence (batch row), real tokens only
    PerToken,          // "per-token": one per token row (dynamic)
};
const char* granularity_name(ActGranularity g);
// Exactly "per-tensor-static", "per-tensor-dynamic" or "per-token"; throws Error naming the choices.
ActGranularity parse_granularity(const std::string& name);

struct QuantConfig {
    int wbits = 0;          // 0 = weights full precision; 4 or 8
    int64_t group = 128;    // weight group size; 0 = per output channel. A group that does not divide a
                            // layer's input size falls back to per-channel for that layer.
    int abits = 0;          // 0 = activations full precision; 4, 6, 8 or 16
    ActGranularity act = ActGranularity::PerTensorStatic;  // the paper's hard case (SmoothQuant O3)
    double smoothquant_alpha = -1;  // <= 0: off (the default); (0, 1]: on. The CLI uses 0.8 when enabled.
    int kv_bits = 0;        // 0 = KV cache full precision; 4 or 8
    // Activation sites quantized when abits > 0. Residual is not a linear input and cannot be chosen.
    std::array<bool, kSiteCount> sites{{true, true, true, true, false}};

    bool weights_on() const { return wbits > 0; }
    bool acts_on() const { return abits > 0; }
    bool smoothquant_on() const { return smoothquant_alpha > 0; }
    bool kv_on() const { return kv_bits > 0; }
    bool site_on(Site s) const { return sites[static_cast<int>(s)]; }
    // Documents (--calib) are needed to collect activation ranges: static activations and SmoothQuant.
    bool needs_activation_ranges() const { return (acts_on() && act == ActGranularity::PerTensorStatic) || smoothquant_on(); }

    // Throws Error with a clear message: bits out of range, negative group, alpha > 1 or NaN, the residual
    // site chosen, activations on with no site chosen.
    void validate() const;
    // e.g. "W8A8 per-tensor-static g128 SQ0.8 KV8 [attn_in,o_in,mlp_in,down_in]", "W4Afp g128"; "FP" when
    // nothing is on.
    std::string describe() const;
};

// "attn_in,o_in,mlp_in,down_in" (or "all") <-> site flags. Throws Error on an unknown name.
std::array<bool, kSiteCount> parse_sites(const std::string& list);
std::string sites_string(const std::array<bool, kSiteCount>& sites);

}  // namespace cushion
