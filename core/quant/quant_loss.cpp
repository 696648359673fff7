#include "quant/quant_loss.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "model/activation_probe.h"
#include "base/error.h"
#include "quant/quantizer.h"

namespace cushion {

at::Tensor quant_loss_rows(const at::Tensor& x, const at::Tensor& valid, int bits) {
    if (x.dim() != 3) throw Error("quantization loss: activation must be (B, T, C)");
    act_qmax(bits);  // validates bits
    const at::ScalarType ct = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    at::Tensor xf = x.to(ct);  // keeps the graph
    at::Tensor q;
    {
        at::NoGradGuard no_grad;
        at::Tensor mn, mx;
        row_minmax(xf, valid, &mn, &mx);
        q = fake_quant_act(xf.detach(), act_params(mn, mx, bits));
    }
    at::Tensor d = xf - q;
    if (valid.defined()) d = d.masked_fill(at::logical_not(valid.to(d.device(), at::kBool)).unsqueeze(-1), 0.0);
    const std::vector<int64_t> dims{1, 2};
    return at::sum(d * d, dims, /*keepdim=*/false, at::kDouble);
}

QuantLossHook::QuantLossHook(QuantLossOptions opts) : opts_(opts) {
    act_qmax(opts_.bits);
    if (opts_.sites[static_cast<int>(Site::Residual)])
        throw Error("quantization loss: the residual stream is not a linear input; choose among the four linear inputs");
}

void QuantLossHook::on_activation(int layer, Site site, at::Tensor& x, const at::Tensor& valid) {
    const int si = static_cast<int>(site);
    if (!opts_.sites[si] || layer < 0) return;
    at::Tensor l = quant_loss_rows(x, valid, opts_.bits);
    if (total_.defined() && total_.size(0) != l.size(0))
        throw Error("quantization loss: batch size changed between forward passes without reset()");
    total_ = total_.defined() ? total_ + l : l;
    if (opts_.breakdown) {
        if ((int)parts_.size() <= layer) parts_.resize(layer + 1);
        at::Tensor d = l.detach();
        at::Tensor& p = parts_[layer][si];
        p = p.defined() ? p + d : d;
    }
}

at::Tensor QuantLossHook::breakdown() const {
    if (!opts_.breakdown) throw Error("quantization loss: breakdown was not requested (QuantLossOptions::breakdown)");
    const int64_t B = total_.defined() ? total_.size(0) : 0;
    at::Tensor out = at::zeros({(int64_t)parts_.size(), kSiteCount, B}, at::kDouble);
    for (size_t l = 0; l < parts_.size(); ++l)
        for (int si = 0; si < kSiteCount; ++si)
            if (parts_[l][si].defined()) out[l][si].copy_(parts_[l][si].cpu());
    return out;
}

at::Tensor QuantLossHook::site_loss(int layer, Site s) const {
    if (!opts_.breakdown) throw Error("quantization loss: breakdown was not requested (QuantLossOptions::breakdown)");
    if (layer < 0 || layer >= (int)parts_.size()) return at::Tensor();
    return parts_[layer][static_cast<int>(s)];
}

void QuantLossHook::reset() {
    total_ = at::Tensor();
    parts_.clear();
}

at::Tensor quantization_loss(const Model& m, const at::Tensor& tokens, const ForwardArgs& args,
                             const QuantLossOptions& opts) {
    QuantLossHook hook(opts);
    HookChain chain;
    chain.hooks = {args.hook, &hook};
    ForwardArgs a = args;
    a.hook = &chain;
    a.skip_logits = true;
    a.last_logits_only = false;
    m.forward(tokens, a);
    at::Tensor l = hook.loss();
    if (!l.defined()) l = at::zeros({tokens.size(0)}, at::TensorOptions().dtype(at::kDouble).device(m.device()));
    return l;
}

}  // namespace cushion
