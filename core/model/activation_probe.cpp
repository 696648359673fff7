#include "model/activation_probe.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

namespace cushion {

at::Tensor SiteSummary::ratio() const { return token_max / token_median.clamp_min(1e-12); }

at::Tensor ProbeResult::layer_token_map(Site s, int64_t b) const {
    std::vector<at::Tensor> rows;
    for (auto& L : layers) rows.push_back(L[static_cast<int>(s)].token_max[b]);
    return at::stack(rows);
}

bool ProbeResult::all_finite() const {
    for (const auto& L : layers)
        for (const SiteSummary& S : L) {
            if (!S.defined()) continue;
            at::Tensor ok = at::isfinite(S.token_max);
            if (valid.defined() && valid.sizes() == ok.sizes()) ok = at::logical_or(ok, at::logical_not(valid));
            if (!ok.all().item<bool>()) return false;
        }
    return true;
}

ActivationProbe::ActivationProbe(int n_layers, ProbeOptions opts)
    : opts_(opts), result_(std::make_shared<ProbeResult>()), n_layers_(n_layers) {
    result_->layers.resize(n_layers);
}

void ActivationProbe::on_activation(int layer, Site site, at::Tensor& x, const at::Tensor& valid) {
    if (!opts_.sites[static_cast<int>(site)] || layer < 0 || layer >= n_layers_) return;
    at::NoGradGuard no_grad;
    const int64_t B = x.size(0), T = x.size(1), C = x.size(2);
    at::Tensor ax = x.detach().abs().to(at::kFloat);  // (B, T, C)
    at::Tensor real = valid.defined() ? valid.to(ax.device(), at::kBool)
                                      : at::ones({B, T}, ax.options().dtype(at::kBool));
    at::Tensor realf = real.unsqueeze(-1).to(at::kFloat);
    at::Tensor masked = ax * realf;  // padding -> 0, never an outlier
    SiteSummary s;
    auto tok = masked.max(-1);  // per token: max |x| and its channel
    s.token_max = std::get<0>(tok).cpu();
    s.token_channel = std::get<1>(tok).cpu();
    s.token_value = x.detach().gather(-1, std::get<1>(tok).unsqueeze(-1)).squeeze(-1).to(at::kFloat).cpu();
    s.token_median = std::get<0>(ax.median(-1)).mul(real.to(at::kFloat)).cpu();
    s.token_mean = ax.mean(-1).mul(real.to(at::kFloat)).cpu();
    s.channel_max = masked.reshape({B * T, C}).amax(0).cpu();
    const int64_t k = std::min<int64_t>(opts_.top_k, masked.numel());
    if (k > 0) {
        auto top = masked.reshape({-1}).topk(k);
        at::Tensor idx = std::get<1>(top).cpu();
        at::Tensor vals = x.detach().reshape({-1}).index_select(0, std::get<1>(top)).to(at::kFloat).cpu();
        at::Tensor absvals = std::get<0>(top).cpu();
        for (int64_t i = 0; i < k; ++i) {
            if (absvals[i].item<float>() <= 0) break;
            int64_t f = idx[i].item<int64_t>();
            s.top.push_back({f / (T * C), (f / C) % T, f % C, vals[i].item<float>()});
        }
    }
    if (opts_.keep_full) s.full = x.detach().to(at::kFloat).cpu();
    if (!result_->valid.defined()) result_->valid = real.cpu();
    result_->layers[layer][static_cast<int>(site)] = std::move(s);
}

std::shared_ptr<const ProbeResult> ActivationProbe::take() {
    auto r = result_;
    result_ = std::make_shared<ProbeResult>();
    result_->layers.resize(n_layers_);
    return r;
}

}  // namespace cushion
