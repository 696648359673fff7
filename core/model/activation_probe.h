// Activation probes: a hook that reduces every observed activation on the device to small summaries
// (per-token max |x|, per-channel max |x|, top outliers, max/median per token), so only a few KB cross
// to the CPU. Full tensors are copied only when asked for.
#pragma once
#include <ATen/core/Tensor.h>

#include <array>
#include <memory>
#include <vector>

#include "model/activation_hook.h"

namespace cushion {

struct Outlier {
    int64_t batch = 0, token = 0, channel = 0;
    float value = 0;  // signed activation value
};

// Summary of one (layer, site) activation x of shape (B, T, C). All tensors on the CPU, float32.
struct SiteSummary {
    at::Tensor token_max;     // (B, T) max |x| over channels (0 on padding)
    at::Tensor token_channel; // (B, T) int64 channel of that max
    at::Tensor token_value;   // (B, T) signed x at that channel
    at::Tensor token_median;  // (B, T) median |x| over channels
    at::Tensor token_mean;    // (B, T) mean |x| over channels
    at::Tensor channel_max;   // (C) max |x| over real tokens
    std::vector<Outlier> top; // largest |x| over real tokens, descending
    at::Tensor full;          // (B, T, C) only when ProbeOptions::keep_full
    bool defined() const { return token_max.defined(); }
    // max |x| / median |x| per token (median clamped away from zero).
    at::Tensor ratio() const;
};

struct ProbeOptions {
    std::array<bool, kSiteCount> sites{{true, true, true, true, true}};
    int top_k = 16;
    bool keep_full = false;
};

// The result of one probed forward pass: [layer][site].
struct ProbeResult {
    std::vector<std::array<SiteSummary, kSiteCount>> layers;
    at::Tensor valid;  // (B, T) bool on the CPU
    const SiteSummary& at(int layer, Site s) const { return layers.at(layer)[static_cast<int>(s)]; }
    // False when a real token's max |x| is NaN or Inf at any probed (layer, site): the caller then says where
    // (model/non_finite.h) instead of printing "nan".
    bool all_finite() const;
    // (n_layers, T) per-token max |x| at `site` for batch row b: a heatmap's data.
    at::Tensor layer_token_map(Site s, int64_t b = 0) const;
};

class ActivationProbe : public ActivationHook {
public:
    explicit ActivationProbe(int n_layers, ProbeOptions opts = {});
    void on_activation(int layer, Site site, at::Tensor& x, const at::Tensor& valid) override;
    // Hands over the collected result and resets the probe.
    std::shared_ptr<const ProbeResult> take();

private:
    ProbeOptions opts_;
    std::shared_ptr<ProbeResult> result_;
    int n_layers_;
};

// Chains hooks: each sees (and may replace) the tensor in order.
class HookChain : public ActivationHook {
public:
    std::vector<ActivationHook*> hooks;
    void on_activation(int layer, Site site, at::Tensor& x, const at::Tensor& valid) override {
        for (auto* h : hooks)
            if (h) h->on_activation(layer, site, x, valid);
    }
    void on_kv(int layer, at::Tensor& k, at::Tensor& v, const at::Tensor& valid) override {
        for (auto* h : hooks)
            if (h) h->on_kv(layer, k, v, valid);
    }
    void on_attention(int layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale) override {
        for (auto* h : hooks)
            if (h) h->on_attention(layer, q, k, v, scale);
    }
};

}  // namespace cushion
