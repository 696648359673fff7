// A per-layer key/value cache: the prefix ("cushion") prepended to every input, or the keys and
// values a forward pass produced (for incremental decoding).
#pragma once
#include <ATen/core/Tensor.h>

#include <vector>

namespace cushion {

struct KVCache {
    std::vector<at::Tensor> k;  // per layer (B, n_kv_heads, P, head_dim), keys after RoPE at their positions
    std::vector<at::Tensor> v;  // per layer (B, n_kv_heads, P, head_dim)

    bool empty() const { return k.empty() || !k[0].defined() || k[0].size(2) == 0; }
    int64_t length() const { return empty() ? 0 : k[0].size(2); }
    int64_t batch() const { return empty() ? 0 : k[0].size(0); }
};

}  // namespace cushion
