#include "quant/smoothquant.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "base/error.h"

namespace cushion {

namespace {

void check_foldable(const Model& m) {
    if (m.config.arch == Arch::OPT && !m.config.do_layer_norm_before)
        throw Error("SmoothQuant: this OPT model applies LayerNorm after attention/FFN (do_layer_norm_before = "
                    "false), so there is no norm in front of q/k/v or fc1 to fold the scales into");
}

at::Tensor column_absmax(const std::vector<at::Tensor>& ws) {
    std::vector<at::Tensor> cols;
    for (const auto& w : ws)
        if (w.defined()) cols.push_back(w.detach().abs().amax(0).to(at::kCPU, at::kDouble));
    return at::stack(cols).amax(0);
}

at::Tensor factors_for(const at::Tensor& act_absmax, const at::Tensor& w_absmax, double alpha) {
    at::Tensor a = act_absmax.to(at::kCPU, at::kDouble);
    at::Tensor w = w_absmax.clamp_min(1e-5);
    at::Tensor s = (a.pow(alpha) / w.pow(1.0 - alpha)).clamp_min(1e-5);
    s = at::where(a > 0, s, at::ones_like(s));
    return s.to(at::kFloat);
}

// t * s (or t / s) along the last dimension, computed in float32, returned in t's dtype and device.
at::Tensor scale_cols(const at::Tensor& t, const at::Tensor& s, bool divide) {
    if (!t.defined()) return t;
    at::Tensor sd = s.to(t.device(), at::kFloat);
    at::Tensor tf = t.detach().to(at::kFloat);
    return (divide ? tf / sd : tf * sd).to(t.scalar_type()).contiguous();
}

}  // namespace

SmoothFactors smoothquant_factors(const Model& m, const ActivationRanges& ranges, double alpha) {
    check_foldable(m);
    if (!(alpha > 0 && alpha <= 1)) throw Error("SmoothQuant: alpha must be in (0, 1], got " + std::to_string(alpha));
    const int64_t L = m.config.n_layers;
    if ((int64_t)ranges.layers.size() != L)
        throw Error("SmoothQuant: the activation ranges have " + std::to_string(ranges.layers.size()) + " layers, model has " +
                    std::to_string(L));
    at::NoGradGuard no_grad;
    SmoothFactors f;
    f.alpha = alpha;
    for (int64_t l = 0; l < L; ++l) {
        const LayerWeights& W = m.weights.layers[l];
        const SiteRange& ra = ranges.at((int)l, Site::AttnIn);
        const SiteRange& rm = ranges.at((int)l, Site::MlpIn);
        if (!ra.channel_absmax.defined() || !rm.channel_absmax.defined())
            throw Error("SmoothQuant: the activation ranges lack per-channel maxima at attn_in / mlp_in of layer " +
                        std::to_string(l));
        f.attn.push_back(factors_for(ra.channel_absmax, column_absmax({W.wq, W.wk, W.wv}), alpha));
        f.mlp.push_back(factors_for(rm.channel_absmax, column_absmax({W.w_gate, W.w_up}), alpha));
    }
    return f;
}

void fold_smoothquant(Model& m, const SmoothFactors& f) {
    check_foldable(m);
    const int64_t L = m.config.n_layers;
    if ((int64_t)f.attn.size() != L || (int64_t)f.mlp.size() != L)
        throw Error("SmoothQuant: factors for " + std::to_string(f.attn.size()) + " layers, model has " +
                    std::to_string(L));
    at::NoGradGuard no_grad;
    for (int64_t l = 0; l < L; ++l) {
        LayerWeights& W = m.weights.layers[l];
        const at::Tensor& sa = f.attn[l];
        const at::Tensor& sm = f.mlp[l];
        if (sa.numel() != m.config.dim || sm.numel() != m.config.dim)
            throw Error("SmoothQuant: factor size does not match the model's hidden size");
        W.attn_norm = scale_cols(W.attn_norm, sa, true);
        W.attn_norm_bias = scale_cols(W.attn_norm_bias, sa, true);
        W.wq = scale_cols(W.wq, sa, false);
        W.wk = scale_cols(W.wk, sa, false);
        W.wv = scale_cols(W.wv, sa, false);
        W.ffn_norm = scale_cols(W.ffn_norm, sm, true);
        W.ffn_norm_bias = scale_cols(W.ffn_norm_bias, sm, true);
        W.w_gate = scale_cols(W.w_gate, sm, false);
        W.w_up = scale_cols(W.w_up, sm, false);
    }
}

std::shared_ptr<Model> smoothquant_model(const Model& m, const SmoothFactors& f) {
    auto out = std::make_shared<Model>(m);
    fold_smoothquant(*out, f);
    return out;
}

}  // namespace cushion
