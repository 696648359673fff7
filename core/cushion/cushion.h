// A cushion: the prefix KV cache CushionCache prepends to every input, with what produced it.
//
// File format (one safetensors file, written atomically):
//   tensors  "k.<layer>", "v.<layer>": (1, n_kv_heads, P, head_dim) float32, keys after RoPE
//            "last_logits": (V) float32, the logits at the prefix's last position (they predict the
//                           first text token, so perplexity counts the same tokens with or without it)
//            "prefix_ids": (P) int64
//   metadata "format": "cushioncache-cushion", "version": "1", "model_fingerprint", "prefix_text",
//            "settings" (JSON), "history" (JSON: L_q per accepted step, tuning losses), "tool_version".
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "model/kv_cache.h"
#include "model/model.h"
#include "quant/quant_loss.h"

namespace cushion {

struct Cushion {
    std::vector<int32_t> prefix_ids;  // starts with <bos>
    std::string prefix_text;          // pieces joined, for display
    KVCache kv;                       // batch 1
    at::Tensor last_logits;           // (V) float32
    std::string model_fingerprint;
    std::string settings_json = "{}";
    std::string history_json = "{}";

    int64_t length() const { return kv.length(); }
    bool empty() const { return kv.empty(); }
};

// Runs the prefix through the model (full precision) and returns its KV cache and last logits.
Cushion make_cushion(const Model& m, const std::vector<int32_t>& prefix_ids);

// Throws Error if the cushion was made for another model (fingerprint) or has the wrong shapes.
void check_cushion_fits(const Cushion& c, const Model& m, const std::string& source = "cushion");

void save_cushion(const Cushion& c, const std::string& path);   // atomic
Cushion load_cushion(const std::string& path);                  // validated; tensors on the CPU
// Moves / casts the KV tensors (not last_logits, which stays float32).
Cushion cushion_to(const Cushion& c, c10::Device dev, at::ScalarType dt);

// The L_q settings (bits, sites) the search that made `c` used, from its settings ("search": {"bits", "sites"}), so
// that tuning optimises the same loss; the defaults when the cushion records no search. An Error naming the field
// when they are malformed (source names the cushion in it).
QuantLossOptions search_loss_options(const Cushion& c, const std::string& source = "cushion");

}  // namespace cushion
