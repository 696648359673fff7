// The "eval callback": a forward pass calls a hook at every input of a quantizable linear layer and on
// the residual stream, per block. A hook may only look (probes) or replace the tensor (quantizers).
#pragma once
#include <ATen/core/Tensor.h>

#include "model/sites.h"

namespace cushion {

class ActivationHook {
public:
    virtual ~ActivationHook() = default;
    // x: (B, T, C) activation of block `layer` at `site`; the hook may assign a new tensor of the same
    // shape to x. valid: (B, T) bool marking real tokens (false for padding); undefined means all real.
    // Prefix (cushion) tokens are never part of x: they live only in the KV cache.
    virtual void on_activation(int layer, Site site, at::Tensor& x, const at::Tensor& valid) = 0;
    // The new tokens' keys (after RoPE) and values, (B, n_kv_heads, T, head_dim), before they join the
    // prefix cache; a hook may replace them (KV-cache quantization). Default: nothing.
    virtual void on_kv(int layer, at::Tensor& k, at::Tensor& v, const at::Tensor& valid) {}
    // Observation only: the new tokens' queries (B, n_heads, T, head_dim), after RoPE, and the keys and values
    // they attend over, prefix included, (B, n_kv_heads, P + T, head_dim) (not repeated for grouped heads;
    // query t sees keys 0 .. P + t), with the softmax scale. Default: nothing.
    virtual void on_attention(int layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale) {}
};

}  // namespace cushion
