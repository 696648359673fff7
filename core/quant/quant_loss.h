// The quantization loss L_q of resources/docs/method.md, the objective of the cushion search and a term of prefix tuning:
//     L_q = sum over the chosen activation tensors A of || A - Q(A) ||_2^2
// with Q per-tensor asymmetric min-max quantization (quantizer.h) with `bits` bits, its min/max taken over
// the real tokens of A only. Here every batch row is its own "sequence" (a candidate prefix, a document):
// for row b, A is the (T, C) activation of its real tokens (padding excluded; a prefix never reaches the
// hook, so it is never in A), and the hook returns one loss per row.
//
// Gradient: loss = sum (A - Q(A).detach())^2 — scale, zero point and rounding are constants
// (stop-gradient), so dL/dA = 2 (A - Q(A)) for every real element (the paper's straight-through form).
// Gradients flow only when the activations require grad (e.g. a trainable prefix KV under
// at::AutoGradMode(true)); otherwise the computation is a plain reduction.
//
// The hook only observes: it never changes the activation the model goes on with.
#pragma once
#include <ATen/core/grad_mode.h>
#include <ATen/core/Tensor.h>

#include <array>
#include <vector>

#include "model/activation_hook.h"
#include "model/model.h"

namespace cushion {

struct QuantLossOptions {
    int bits = 8;  // 4, 6, 8 or 16
    std::array<bool, kSiteCount> sites{{true, true, true, true, false}};  // the four linear inputs
    bool breakdown = false;  // also keep each (layer, site)'s (B) losses (detached)
};

class QuantLossHook : public ActivationHook {
public:
    explicit QuantLossHook(QuantLossOptions opts = {});
    void on_activation(int layer, Site site, at::Tensor& x, const at::Tensor& valid) override;

    // (B) float64 on the activations' device: the sum over layers and chosen sites of every forward pass
    // since construction / reset(). Carries the graph when the activations required grad. Undefined
    // before any chosen site was seen.
    at::Tensor loss() const { return total_; }
    // (n_layers, kSiteCount, B) float64, detached, on the CPU: per (layer, site) losses (zeros for sites
    // not chosen / not seen). Throws Error unless breakdown was asked for.
    at::Tensor breakdown() const;
    // (B) float64 loss of one (layer, site) (undefined if not seen); needs breakdown.
    at::Tensor site_loss(int layer, Site s) const;
    void reset();
    const QuantLossOptions& options() const { return opts_; }

private:
    QuantLossOptions opts_;
    at::Tensor total_;
    std::vector<std::array<at::Tensor, kSiteCount>> parts_;
};

// L_q of one activation x (B, T, C) with a (B, T) valid mask (undefined = all real): the per-row loss
// above, (B) float64 on x's device. Computed in float32 (float64 for float64 x), summed in float64.
// The building block of QuantLossHook.
at::Tensor quant_loss_rows(const at::Tensor& x, const at::Tensor& valid, int bits);

// Runs m.forward(tokens, args) without logits, with a QuantLossHook (chained after args.hook, if any),
// and returns its (B) losses. args.prefix / args.valid are used as given.
at::Tensor quantization_loss(const Model& m, const at::Tensor& tokens, const ForwardArgs& args = {},
                             const QuantLossOptions& opts = {});

}  // namespace cushion
