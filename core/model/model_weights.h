// The tensors of a model in one canonical layout, whatever file they came from.
//
// Canonical layout (Hugging Face's): linear weights are (out, in) row-major; Q and K rows are in
// "rotate-half" order per head (Hugging Face). llama2.c and GGUF store Q/K in Meta's interleaved
// order; their loaders permute rows with `interleaved_to_half` so one RoPE serves every format.
#pragma once
#include <ATen/core/Tensor.h>

#include <functional>
#include <string>
#include <vector>

#include "model/model_config.h"

namespace cushion {

struct LayerWeights {
    at::Tensor attn_norm, attn_norm_bias;  // (C); bias: OPT only
    at::Tensor wq, wk, wv, wo;             // (C, C), (KV, C), (KV, C), (C, C)
    at::Tensor bq, bk, bv, bo;             // optional biases (Qwen2 q/k/v, OPT all four)
    at::Tensor ffn_norm, ffn_norm_bias;    // (C); bias: OPT only
    at::Tensor w_gate, w_up, w_down;       // Llama: (H, C), (H, C), (C, H); OPT: fc1 = w_up, fc2 = w_down, no gate
    at::Tensor b_up, b_down;               // OPT fc1 / fc2 biases
};

// One tensor of an architecture as a Hugging Face directory stores it.
struct WeightSlot {
    std::string name;            // "model.layers.0.self_attn.q_proj.weight"
    std::vector<int64_t> shape;  // expected from the config
    bool stored = true;          // a Hugging Face checkpoint of this config holds it (false: the q/k/v biases
                                 // without qkv_bias, the Llama-family o_proj bias; other loaders may fill them)
};

struct ModelWeights {
    at::Tensor tok_emb;                     // (V, C)
    at::Tensor pos_emb;                     // OPT learned positions (max_pos + offset, C)
    at::Tensor final_norm, final_norm_bias; // (C)
    at::Tensor lm_head;                     // (V, C); aliases tok_emb when tied
    std::vector<LayerWeights> layers;

    // Visits every defined tensor with its Hugging Face name for `arch`
    // ("model.layers.0.self_attn.q_proj.weight", ...). The lm_head is skipped when tied.
    void for_each(const ModelConfig& cfg, const std::function<void(const std::string&, at::Tensor&)>& fn);
    void for_each(const ModelConfig& cfg, const std::function<void(const std::string&, const at::Tensor&)>& fn) const;
    // The one list of Hugging Face names (for_each and the Hugging Face reader use it): every slot of the
    // architecture, defined or not, in the same order as for_each, with its expected shape. `layers` must
    // already have cfg.n_layers entries.
    void for_each_slot(const ModelConfig& cfg, const std::function<void(const WeightSlot&, at::Tensor&)>& fn);

    // Makes each layer's wq, wk and wv (and bq, bk, bv when all three are set) consecutive row blocks of one
    // tensor, so that the forward pass computes the three projections as one matrix product (packed_qkv; without
    // autograd and int8 kernels: the same bits as three products). They keep their names, shapes and values and take no extra memory (row views of the packed
    // tensor; an in-place change of one is seen by the packed product). A tensor replaced later (fake-quantized
    // weights, SmoothQuant's folding) ends the packing of its layer: the forward pass then runs three products
    // again. Called by the loaders (load_model_file) and Model::to.
    void pack_qkv();
};

// The packed (wq; wk; wv) weight of a layer as one (Q + 2 KV, C) view, and its (bq; bk; bv) bias (undefined when
// the layer has no q/k/v biases), when ModelWeights::pack_qkv made them consecutive rows of one tensor and they
// still are; false otherwise (the caller computes the three products).
bool packed_qkv(const LayerWeights& L, at::Tensor* w, at::Tensor* b);

// Row permutation between Meta/GGUF interleaved RoPE order and Hugging Face rotate-half order for a
// (n_heads * head_dim, in) Q or K weight (or a (n_heads * head_dim) bias).
at::Tensor interleaved_to_half(const at::Tensor& w, int64_t n_heads);
at::Tensor half_to_interleaved(const at::Tensor& w, int64_t n_heads);

// Checks every tensor's shape against the config; throws Error naming the tensor and both shapes.
void check_shapes(const ModelConfig& cfg, const ModelWeights& w, const std::string& source);
// Names of tensors holding NaN or Inf (the loaders warn with them).
std::vector<std::string> non_finite_tensors(const ModelConfig& cfg, const ModelWeights& w);

}  // namespace cushion
