#include "quant/quantized_model.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>

#include "model/activation_probe.h"
#include "base/error.h"
#include "quant/quantizer.h"

namespace cushion {

// ---------------------------------------------------------------- ActQuantHook

ActQuantHook::ActQuantHook(const QuantConfig& cfg, int n_layers, std::shared_ptr<const ActivationRanges> ranges)
    : cfg_(cfg), n_layers_(n_layers), ranges_(std::move(ranges)) {
    cfg_.validate();
    if (cfg_.acts_on() && cfg_.act == ActGranularity::PerTensorStatic) {
        if (!ranges_) throw Error("per-tensor-static activation quantization needs activation ranges");
        if ((int)ranges_->layers.size() != n_layers)
            throw Error("activation ranges cover " + std::to_string(ranges_->layers.size()) +
                        " layers, the model has " + std::to_string(n_layers));
        for (int l = 0; l < n_layers; ++l)
            for (int si = 0; si < kSiteCount; ++si)
                if (cfg_.sites[si] && !ranges_->at(l, static_cast<Site>(si)).seen())
                    throw Error(std::string("no activation range for layer ") + std::to_string(l) + " " +
                                site_name(static_cast<Site>(si)) + " (collect that site)");
    }
}

namespace {
void assign(at::Tensor& x, const at::Tensor& q) { x = x.requires_grad() ? x + (q - x).detach() : q; }
}  // namespace

void ActQuantHook::on_activation(int layer, Site site, at::Tensor& x, const at::Tensor& valid) {
    if (!cfg_.acts_on() || !cfg_.site_on(site) || layer < 0 || layer >= n_layers_) return;
    at::Tensor q;
    {
        at::NoGradGuard no_grad;
        at::Tensor xd = x.detach();
        switch (cfg_.act) {
            case ActGranularity::PerTensorStatic: {
                const SiteRange& r = ranges_->at(layer, site);
                q = fake_quant_act(xd, act_params(r.min, r.max, cfg_.abits, xd));
                break;
            }
            case ActGranularity::PerTensorDynamic: {
                at::Tensor mn, mx;
                row_minmax(xd, valid, &mn, &mx);
                q = fake_quant_act(xd, act_params(mn, mx, cfg_.abits));
                break;
            }
            case ActGranularity::PerToken: q = fake_quant_act_per_token(xd, cfg_.abits); break;
        }
    }
    assign(x, q);
}

void ActQuantHook::on_kv(int layer, at::Tensor& k, at::Tensor& v, const at::Tensor& valid) {
    if (!cfg_.kv_on() || layer < 0 || layer >= n_layers_) return;
    at::Tensor qk, qv;
    {
        at::NoGradGuard no_grad;
        // (B, KVH, T, D): one scale/zero per head and token, over head_dim.
        qk = fake_quant_act_per_token(k.detach(), cfg_.kv_bits);
        qv = fake_quant_act_per_token(v.detach(), cfg_.kv_bits);
    }
    assign(k, qk);
    assign(v, qv);
}

// ---------------------------------------------------------------- weights

void quantize_model_weights(Model& m, int bits, int64_t group, std::vector<std::string>* notes) {
    if (!weight_bits_supported(bits)) weight_qmax(bits);  // throws with the message
    const bool opt = m.config.arch == Arch::OPT;
    std::vector<std::string> fallbacks;
    for (size_t l = 0; l < m.weights.layers.size(); ++l) {
        LayerWeights& W = m.weights.layers[l];
        const std::pair<const char*, at::Tensor*> ws[] = {
            {"q_proj", &W.wq}, {"k_proj", &W.wk}, {"v_proj", &W.wv}, {"o_proj", &W.wo},
            {"gate_proj", &W.w_gate}, {opt ? "fc1" : "up_proj", &W.w_up}, {opt ? "fc2" : "down_proj", &W.w_down}};
        for (auto& [name, t] : ws) {
            if (!t->defined()) continue;
            const int64_t in = t->size(1);
            if (group > 0 && effective_group(in, group) != group && l == 0)
                fallbacks.push_back(std::string(name) + " (" + std::to_string(in) + " inputs)");
            *t = fake_quant_weight(*t, bits, group);
        }
    }
    if (notes && !fallbacks.empty()) {
        std::string s = "weight group " + std::to_string(group) + " does not divide the input size of ";
        for (size_t i = 0; i < fallbacks.size(); ++i) s += (i ? ", " : "") + fallbacks[i];
        notes->push_back(s + ": quantized per output channel");
    }
}

// ---------------------------------------------------------------- QuantizedModel

QuantizedModel::QuantizedModel(const Model& fp, const QuantConfig& cfg,
                               const std::vector<std::vector<int32_t>>& calib_docs, const QuantizeOptions& opts)
    : cfg_(cfg) {
    cfg_.validate();
    if (cfg_.needs_activation_ranges() && calib_docs.empty())
        throw Error(std::string("quantization (") + cfg_.describe() +
                    ") needs documents (--calib) for " +
                    (cfg_.smoothquant_on() ? "SmoothQuant" : "per-tensor-static activation ranges"));
    const int n_layers = static_cast<int>(fp.config.n_layers);
    const bool sq = cfg_.smoothquant_on();
    const bool stat = cfg_.acts_on() && cfg_.act == ActGranularity::PerTensorStatic;
    const int passes = int(sq) + int(stat);
    int pass = 0;
    auto collect = [&](const Model& m, std::array<bool, kSiteCount> sites, bool channels) {
        ActivationRangeOptions co;
        co.prefix = opts.prefix;
        co.max_batch_tokens = opts.max_batch_tokens;
        co.sites = sites;
        co.channel_absmax = channels;
        if (opts.progress) {
            const int p = pass;
            co.progress = [&opts, p, passes](double f, const std::string& what) {
                return opts.progress((p + f) / passes, what);
            };
        }
        ActivationRanges r = collect_activation_ranges(m, calib_docs, co);
        ++pass;
        return r;
    };

    fp.fingerprint();                      // cached first, so the copy reports the original's fingerprint
    model_ = std::make_shared<Model>(fp);  // shallow: tensors shared until replaced
    if (sq) {
        std::array<bool, kSiteCount> sites{};
        sites[static_cast<int>(Site::AttnIn)] = sites[static_cast<int>(Site::MlpIn)] = true;
        ActivationRanges r = collect(fp, sites, /*channels=*/true);
        smooth_ = std::make_unique<SmoothFactors>(smoothquant_factors(fp, r, cfg_.smoothquant_alpha));
        fold_smoothquant(*model_, *smooth_);
    }
    if (cfg_.weights_on()) quantize_model_weights(*model_, cfg_.wbits, cfg_.group, &notes_);
    if (stat) ranges_ = std::make_shared<const ActivationRanges>(collect(*model_, cfg_.sites, /*channels=*/false));
    if (cfg_.acts_on() || cfg_.kv_on()) hook_ = std::make_unique<ActQuantHook>(cfg_, n_layers, ranges_);
}

at::Tensor QuantizedModel::forward(const at::Tensor& tokens, const ForwardArgs& args) const {
    ForwardArgs a = args;
    HookChain chain;
    if (hook_) {
        chain.hooks = {args.hook, hook_.get()};
        a.hook = &chain;
    }
    return model_->forward(tokens, a);
}

PerplexityResult QuantizedModel::perplexity(const std::vector<std::vector<int32_t>>& docs,
                                            const PerplexityOptions& opts) const {
    PerplexityOptions o = opts;
    HookChain chain;
    if (hook_) {
        chain.hooks = {opts.hook, hook_.get()};
        o.hook = &chain;
    }
    return cushion::perplexity(*model_, docs, o);
}

std::shared_ptr<QuantizedModel> make_quantized_model(const Model& fp, const QuantConfig& cfg,
                                                     const std::vector<std::vector<int32_t>>& calib_docs,
                                                     const QuantizeOptions& opts) {
    return std::make_shared<QuantizedModel>(fp, cfg, calib_docs, opts);
}

}  // namespace cushion
