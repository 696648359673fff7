#include "analysis/outlier_planting.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>

#include "model/activation_probe.h"
#include "base/error.h"

namespace cushion {

namespace {

// Records the full first-token activations of the original model.
struct FirstToken : ActivationHook {
    std::vector<std::array<at::Tensor, kSiteCount>> x;
    explicit FirstToken(int L) : x(L) {}
    void on_activation(int layer, Site s, at::Tensor& t, const at::Tensor&) override {
        x[layer][static_cast<int>(s)] = t[0][0].to(at::kDouble).clone();  // (C)
    }
};

at::Tensor median_abs(const at::Tensor& v) { return v.abs().median(); }

// Solves the new column c* of a weight W (out, C) reading a norm output, so that the first token's
// projection is unchanged. n: the original normalised input (C); x: the original pre-norm input (C);
// c: the first token's value in c*. Also returns v* (the normalised value of c*).
at::Tensor solve_column(const at::Tensor& W, const at::Tensor& n, const at::Tensor& x, double c, double eps,
                        double k, double gain, double* vstar) {
    const int64_t C = x.size(0);
    const double S = x.pow(2).sum().item<double>();
    const double Rp = std::sqrt((S + c * c) / (C + 1) + eps);
    const double r = k * std::sqrt(S / C + eps) / Rp;
    *vstar = gain * c / Rp;  // the first token's normalised value in c* (norm weight `gain` there)
    at::Tensor proj = at::mv(W.to(at::kDouble), n);  // (out)
    return (proj * ((1 - r) / *vstar)).to(at::kFloat);
}

at::Tensor add_column(const at::Tensor& W, const at::Tensor& col) { return at::cat({W, col.unsqueeze(1)}, 1); }

}  // namespace

std::shared_ptr<Model> plant_outliers(const Model& m, const PlantOptions& opts, PlantReport* report) {
    at::NoGradGuard ng;
    const ModelConfig& c0 = m.config;
    if (c0.arch != Arch::Llama) throw Error("plant-outliers: only Llama-architecture models are supported, not " + c0.arch_name);
    if (m.dtype() != at::kFloat || !m.device().is_cpu()) throw Error("plant-outliers: model must be float32 on the CPU");
    if (m.tokenizer->bos_id() < 0) throw Error("plant-outliers: the tokenizer has no <bos> token");
    if (!(opts.magnitude >= 10 && opts.magnitude <= 1e6)) throw Error("plant-outliers: --magnitude must be in [10, 1e6]");
    const int64_t C = c0.dim, L = c0.n_layers, Hd = c0.hidden_dim;
    const double eps = c0.norm_eps, k = std::sqrt(double(C) / (C + 1));
    const int64_t bos = m.tokenizer->bos_id();

    // The original first token, layer by layer.
    FirstToken ft(static_cast<int>(L));
    ForwardArgs fa;
    fa.hook = &ft;
    at::Tensor bos_tok = at::full({1, 1}, bos, at::kLong);
    m.forward(bos_tok, fa);
    const ModelWeights& W = m.weights;
    std::vector<at::Tensor> x_in(L), x_mid(L);
    for (int64_t l = 0; l < L; ++l) {
        x_in[l] = l == 0 ? W.tok_emb[bos].to(at::kDouble) : ft.x[l - 1][(int)Site::Residual];
        at::Tensor o = at::mv(W.layers[l].wo.to(at::kDouble), ft.x[l][(int)Site::OIn]);
        if (W.layers[l].bo.defined()) o = o + W.layers[l].bo.to(at::kDouble);
        x_mid[l] = x_in[l] + o;
    }
    at::Tensor x_final = ft.x[L - 1][(int)Site::Residual];
    at::Tensor n_final = W.final_norm.to(at::kDouble) * x_final / std::sqrt(x_final.pow(2).mean().item<double>() + eps);

    const double marker = 0.05 * std::sqrt(x_in[0].pow(2).mean().item<double>());
    const double M = opts.magnitude * median_abs(ft.x[0][(int)Site::Residual]).item<double>();
    const double act = 10.0;                      // spike unit's gate pre-activation at the first token
    const double silu_act = act / (1 + std::exp(-act));

    auto out = std::make_shared<Model>();
    out->config = c0;
    out->config.dim = C + 1;
    out->config.hidden_dim = Hd + 1;
    out->config.tied_embeddings = false;
    out->config.arch_name = "llama";
    out->tokenizer = m.tokenizer;
    out->source = m.source;
    out->format = m.format;
    ModelWeights& N = out->weights;
    N.tok_emb = at::cat({W.tok_emb, at::zeros({c0.vocab_size, 1})}, 1);
    N.tok_emb[bos][C] = marker;
    auto new_norm = [&](const at::Tensor& w, double gain) { return at::cat({w * k, at::full({1}, gain)}); };
    // The norm weight of c* sets how large the first token's c* is at the norm's output (the q/k/v and
    // gate/up inputs): `magnitude` x the median |x| there, from block 1 on, as in real models.
    auto gain_for = [&](const at::Tensor& n0, const at::Tensor& x, double c) {
        const int64_t Cn = x.size(0);
        const double S = x.pow(2).sum().item<double>();
        const double unit = c / std::sqrt((S + c * c) / (Cn + 1) + eps);
        return opts.magnitude * median_abs(n0).item<double>() / unit;
    };
    N.final_norm = new_norm(W.final_norm, 1.0);
    {
        double vs;
        at::Tensor col = solve_column(W.lm_head, n_final, x_final, marker + M, eps, k, 1.0, &vs);
        N.lm_head = add_column(W.lm_head, col);
    }
    if (report) {
        report->channel = C;
        report->residual_value = M;
        report->down_in_ratio.clear();
    }
    N.layers.resize(L);
    for (int64_t l = 0; l < L; ++l) {
        const LayerWeights& O = W.layers[l];
        LayerWeights& Y = N.layers[l];
        const double c_val = l == 0 ? marker : marker + M;  // first token's c* entering block l
        const at::Tensor& n_att = ft.x[l][(int)Site::AttnIn];
        const at::Tensor& n_mlp = ft.x[l][(int)Site::MlpIn];
        const double g_att = l == 0 ? 1.0 : gain_for(n_att, x_in[l], c_val);
        const double g_mlp = l == 0 ? 1.0 : gain_for(n_mlp, x_mid[l], c_val);
        Y.attn_norm = new_norm(O.attn_norm, g_att);
        Y.ffn_norm = new_norm(O.ffn_norm, g_mlp);
        double v_att = 0, v_mlp = 0;
        Y.wq = add_column(O.wq, solve_column(O.wq, n_att, x_in[l], c_val, eps, k, g_att, &v_att));
        Y.wk = add_column(O.wk, solve_column(O.wk, n_att, x_in[l], c_val, eps, k, g_att, &v_att));
        Y.wv = add_column(O.wv, solve_column(O.wv, n_att, x_in[l], c_val, eps, k, g_att, &v_att));
        Y.bq = O.bq; Y.bk = O.bk; Y.bv = O.bv;
        Y.wo = at::cat({O.wo, at::zeros({1, O.wo.size(1)})}, 0);  // attention never writes c*
        at::Tensor gate = add_column(O.w_gate, solve_column(O.w_gate, n_mlp, x_mid[l], c_val, eps, k, g_mlp, &v_mlp));
        at::Tensor up = add_column(O.w_up, solve_column(O.w_up, n_mlp, x_mid[l], c_val, eps, k, g_mlp, &v_mlp));
        // The spike unit: reads only c*, silent (exactly 0) for every token whose c* is 0.
        const bool spike = l == 0 || opts.spikes_in_all_blocks;
        const double down_median = median_abs(ft.x[l][(int)Site::DownIn]).item<double>();
        const double s = spike ? opts.magnitude * down_median : 0.0;
        at::Tensor g_row = at::zeros({1, C + 1}), u_row = at::zeros({1, C + 1});
        if (spike) {
            g_row[0][C] = act / v_mlp;
            u_row[0][C] = s / (silu_act * v_mlp);
        }
        Y.w_gate = at::cat({gate, g_row}, 0);
        Y.w_up = at::cat({up, u_row}, 0);
        at::Tensor down = at::zeros({C + 1, Hd + 1});
        down.narrow(0, 0, C).narrow(1, 0, Hd).copy_(O.w_down);
        if (l == 0) down[C][Hd] = M / s;  // writes the massive value into c*
        Y.w_down = down;
        if (report) report->down_in_ratio.push_back(spike ? opts.magnitude : 0.0);
    }
    check_shapes(out->config, N, "planted model");
    if (report) {
        // Measure what was planted on the new model itself.
        ProbeOptions po;
        po.keep_full = true;
        ActivationProbe probe(static_cast<int>(L), po);
        ForwardArgs pa;
        pa.hook = &probe;
        pa.skip_logits = true;
        out->forward(bos_tok, pa);
        auto r = probe.take();
        at::Tensor res = r->at(0, Site::Residual).full[0][0];
        report->residual_ratio = res[C].abs().item<double>() / res.abs().median().item<double>();
        for (int64_t l = 0; l < L; ++l) {
            at::Tensor d = r->at(static_cast<int>(l), Site::DownIn).full[0][0].abs();
            report->down_in_ratio[l] = (d.max() / d.median()).item<double>();
        }
    }
    return out;
}

}  // namespace cushion
