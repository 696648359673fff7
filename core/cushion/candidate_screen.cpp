#include "cushion/candidate_screen.h"

#include "base/out_of_memory.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "base/error.h"
#include "quant/quantizer.h"

namespace cushion {

namespace {

at::Tensor ids_tensor(const std::vector<int32_t>& v, c10::Device dev) {
    return at::tensor(std::vector<int64_t>(v.begin(), v.end()), at::kLong).to(dev);
}

// (B, KVH, S, D) -> (B, H, S, D): head h reads KV head h / rep, as the forward pass does.
at::Tensor expand_heads(const at::Tensor& k, int64_t H) {
    const int64_t KVH = k.size(1), rep = H / KVH;
    if (rep == 1) return k;
    return k.unsqueeze(2).expand({k.size(0), KVH, rep, k.size(2), k.size(3)}).reshape({k.size(0), H, k.size(2), k.size(3)});
}

struct SiteRange {
    int layer = 0, site = 0;
    double c = 0;                                  // dL_q/d(range) at the sample's range
    double max0 = 0, min0 = 0;                     // the sample's range without the candidate
    double head_max = -std::numeric_limits<double>::infinity(), head_min = std::numeric_limits<double>::infinity();
    double rest_max = -std::numeric_limits<double>::infinity(), rest_min = std::numeric_limits<double>::infinity();
};

// Quantization error of x with the per-tensor min-max range [mn, mx] (as L_q's quantizer), float64.
double range_error(const at::Tensor& x, double mn, double mx, int bits) {
    at::Tensor q = fake_quant_act(x, act_params(mn, mx, bits, x));
    at::Tensor d = x - q;
    return at::sum(d * d, at::kDouble).item<double>();
}

// dL_q/d(range) of one activation tensor at its own range: central differences of the quantization error with
// the range scaled by 1 +- e about its centre, averaged over e = 1%, 2%, 4% (the error is a staircase in the
// range at small e; the average is its slope).
double range_slope(const at::Tensor& x, int bits) {
    const double mn = x.min().item<double>(), mx = x.max().item<double>();
    const double r = mx - mn, c = 0.5 * (mx + mn);
    if (!(r > 0) || !std::isfinite(r)) return 0;
    double sum = 0;
    int count = 0;
    for (double e : {0.01, 0.02, 0.04}) {
        const double up = range_error(x, c - 0.5 * r * (1 + e), c + 0.5 * r * (1 + e), bits);
        const double dn = range_error(x, c - 0.5 * r * (1 - e), c + 0.5 * r * (1 - e), bits);
        sum += (up - dn) / (2 * e * r);
        ++count;
    }
    return sum / count;
}

// The head-exact part (see candidate_screen.h): per-row max / min of every L_q site over the head tokens of a
// candidate batch (rows: [t, sample 0 .. m-1]; positions 1 .. m), in forward order.
// It also calls `on_block` (when set) as each block's keys and values are made: where a candidate batch's forward
// checks for a cancel (CandidateScreen::estimate).
class HeadRangeHook : public ActivationHook {
public:
    HeadRangeHook(const QuantLossOptions& loss, const std::function<void(int)>& on_block)
        : loss_(loss), on_block_(on_block) {}
    void on_kv(int layer, at::Tensor&, at::Tensor&, const at::Tensor&) override {
        if (on_block_ && layer >= 0) on_block_(layer);
    }
    void on_activation(int layer, Site site, at::Tensor& x, const at::Tensor& valid) override {
        if (layer < 0 || !loss_.sites[static_cast<int>(site)] || x.size(1) < 2) return;
        at::Tensor h = x.narrow(1, 1, x.size(1) - 1).to(at::kFloat);
        const std::vector<int64_t> dims{1, 2};
        max.push_back(h.amax(dims));
        min.push_back(h.amin(dims));
    }
    const QuantLossOptions& loss_;
    const std::function<void(int)>& on_block_;
    std::vector<at::Tensor> max, min;  // (b) each
};

// The sample's pass: records queries and log-normalisers per block, adds a zero probe to every attention output
// (o_in) so that the backward pass gives dL~/da, and builds L~ over the chosen sites.
class ScreenHook : public ActivationHook {
public:
    ScreenHook(const QuantLossOptions& loss, int layers, int64_t head)
        : loss_(loss), head_(head), q(layers), lse(layers), a(layers), probe(layers), scale(layers, 1.0) {}

    void on_attention(int layer, const at::Tensor& qi, const at::Tensor& k, const at::Tensor& v, double sc) override {
        if (layer < 0 || layer >= (int)q.size()) return;
        at::NoGradGuard ng;
        at::Tensor qf = qi.detach().to(at::kFloat)[0];                         // (H, n, D)
        at::Tensor kf = expand_heads(k.detach(), qf.size(0)).to(at::kFloat)[0];  // (H, S, D)
        const int64_t n = qf.size(1), S = kf.size(1), P = S - n;
        at::Tensor scores = at::matmul(qf, kf.transpose(-2, -1)).mul_(sc);  // (H, n, S)
        at::Tensor key = at::arange(S, at::TensorOptions().dtype(at::kLong).device(scores.device()));
        at::Tensor qpos = at::arange(P, S, at::TensorOptions().dtype(at::kLong).device(scores.device()));
        scores.masked_fill_(key.unsqueeze(0) > qpos.unsqueeze(1), -std::numeric_limits<float>::infinity());
        q[layer] = qf;
        lse[layer] = at::logsumexp(scores, -1);  // (H, n)
        scale[layer] = sc;
    }

    void on_activation(int layer, Site site, at::Tensor& x, const at::Tensor& valid) override {
        if (layer < 0 || layer >= (int)q.size()) return;
        if (site == Site::OIn) {
            a[layer] = x.detach().to(at::kFloat);
            probe[layer] = at::zeros(x.sizes(), x.options().dtype(at::kFloat)).requires_grad_(true);
            x = x + probe[layer].to(x.scalar_type());
        }
        const int si = static_cast<int>(site);
        if (!loss_.sites[si]) return;
        at::Tensor xf = x.to(at::kFloat);
        const int64_t n = xf.size(1), m = std::min<int64_t>(head_, n);
        SiteRange r;
        r.layer = layer;
        r.site = si;
        {
            at::NoGradGuard ng;
            at::Tensor d = xf.detach();
            r.c = range_slope(d, loss_.bits);
            r.max0 = d.max().item<double>();
            r.min0 = d.min().item<double>();
            if (m > 0) {
                r.head_max = d.narrow(1, 0, m).max().item<double>();
                r.head_min = d.narrow(1, 0, m).min().item<double>();
            }
            if (m < n) {
                r.rest_max = d.narrow(1, m, n - m).max().item<double>();
                r.rest_min = d.narrow(1, m, n - m).min().item<double>();
            }
        }
        ranges.push_back(r);
        if (r.c == 0 || m >= n) return;
        // L~ of the tokens after the head, where they set the range: its gradient is the first-order part.
        at::Tensor rest = xf.narrow(1, m, n - m);
        at::Tensor term;
        if (r.rest_max >= r.head_max) term = rest.max().to(at::kDouble) * r.c;
        if (r.rest_min <= r.head_min) {
            at::Tensor t = rest.min().to(at::kDouble) * (-r.c);
            term = term.defined() ? term + t : t;
        }
        if (term.defined()) total = total.defined() ? total + term : term;
    }

    const QuantLossOptions& loss_;
    int64_t head_;
    std::vector<at::Tensor> q, lse, a, probe;
    std::vector<SiteRange> ranges;  // every L_q site, in forward order
    std::vector<double> scale;
    at::Tensor total;  // L~, with the graph back to the probes
};

}  // namespace

CandidateScreen::CandidateScreen(const Model& m, const KVCache& prefix_kv, const std::vector<int32_t>& sample,
                                 const QuantLossOptions& loss, int64_t head)
    : model_(m), prefix_kv_(prefix_kv), n_(static_cast<int64_t>(sample.size())) {
    if (sample.empty()) throw Error("candidate screen: the sample is empty");
    if (head < 0) throw Error("candidate screen: the exact head must not be negative");
    const int64_t mh = std::min<int64_t>(head, n_);
    head_tokens_.assign(sample.begin(), sample.begin() + mh);
    loss_ = loss;
    const ModelConfig& c = m.config;
    const auto dev = m.device();
    ScreenHook hook(loss, c.n_layers, mh);
    {
        at::AutoGradMode grad(true);
        ForwardArgs fa;
        fa.prefix = &prefix_kv_;
        fa.hook = &hook;
        fa.skip_logits = true;
        fa.position_gap = 1;  // where the sample sits once a candidate follows the prefix
        m.forward(ids_tensor(sample, dev).unsqueeze(0), fa);
        if (hook.total.defined()) {
            surrogate_ = hook.total.item<double>();
            if (hook.total.requires_grad()) hook.total.backward();
        }
    }
    at::NoGradGuard ng;
    for (const SiteRange& r : hook.ranges) {
        Range q;
        q.c = r.c;
        q.range0 = r.max0 - r.min0;
        q.rest_max = r.rest_max;
        q.rest_min = r.rest_min;
        ranges_.push_back(q);
    }
    const int64_t H = c.n_heads, D = c.head_dim;
    layers_.resize(c.n_layers);
    for (int l = 0; l < c.n_layers; ++l) {
        Layer& L = layers_[l];
        if (!hook.q[l].defined() || !hook.a[l].defined())
            throw Error("candidate screen: the forward pass did not report block " + std::to_string(l) + "'s attention");
        const at::Tensor q = hook.q[l];      // (H, n, D)
        const at::Tensor lse = hook.lse[l];  // (H, n)
        const at::Tensor& pg = hook.probe[l].grad();
        const at::Tensor gf = pg.defined() ? pg.detach()[0] : at::zeros({n_, H * D}, q.options());
        const at::Tensor g = gf.view({n_, H, D}).permute({1, 0, 2});         // (H, n, D) dL~/da
        const at::Tensor a = hook.a[l][0].view({n_, H, D}).permute({1, 0, 2});  // (H, n, D)
        const at::Tensor ga = (g * a).sum(-1);                                // (H, n)
        // The first-order part covers the tokens after the head; its two products with their affine parts folded in
        // (one pass each): [scale q, -lse] . [k; 1] = scale q.k - lse and [g, -g.a] . [v; 1] = g.(v - a).
        const int64_t rest = n_ - mh;
        L.qa = at::cat({q.narrow(1, mh, rest) * hook.scale[l], -lse.narrow(1, mh, rest).unsqueeze(-1)}, -1).contiguous();
        L.gaa = at::cat({g.narrow(1, mh, rest), -ga.narrow(1, mh, rest).unsqueeze(-1)}, -1).contiguous();
    }
}

void CandidateScreen::candidate_pass(const std::vector<int32_t>& tokens, std::vector<at::Tensor>* k,
                                     std::vector<at::Tensor>* v, std::vector<at::Tensor>* head_max,
                                     std::vector<at::Tensor>* head_min, const std::function<void(int)>& on_block) const {
    at::NoGradGuard ng;
    const ModelConfig& c = model_.config;
    const int64_t P = prefix_kv_.length(), b = tokens.size(), m = head_tokens_.size();
    std::vector<int64_t> rows;
    rows.reserve(b * (1 + m));
    for (int32_t t : tokens) {
        rows.push_back(t);
        rows.insert(rows.end(), head_tokens_.begin(), head_tokens_.end());
    }
    const at::Tensor ids = at::tensor(rows, at::kLong).view({b, 1 + m}).to(model_.device());
    KVCache ext;
    HeadRangeHook hook(loss_, on_block);
    ForwardArgs ea;
    ea.prefix = &prefix_kv_;
    ea.present = &ext;
    ea.skip_logits = true;
    // Without an exact head only the candidate's K/V are needed: the forward stops once the last block used has them.
    // (The hook then only passes on_block on: with one token per row it records no head range.)
    const int64_t blocks = depth();
    if (m > 0 || on_block) ea.hook = &hook;
    if (m == 0) ea.stop_after_kv = blocks - 1;
    model_.forward(ids, ea);
    k->assign(blocks, at::Tensor());
    v->assign(blocks, at::Tensor());
    for (int64_t l = 0; l < blocks; ++l) {
        // The candidate's slot, (b, KVH, 1, D) -> per query head (H, D + 1, b), with a row of ones under it (the
        // products' affine parts, see Layer::qa).
        const at::Tensor one = at::ones({c.n_heads, 1, b}, at::TensorOptions().dtype(at::kFloat).device(model_.device()));
        (*k)[l] = at::cat({expand_heads(ext.k[l].narrow(2, P, 1), c.n_heads).squeeze(2).to(at::kFloat).permute({1, 2, 0}), one}, 1);
        (*v)[l] = at::cat({expand_heads(ext.v[l].narrow(2, P, 1), c.n_heads).squeeze(2).to(at::kFloat).permute({1, 2, 0}), one}, 1);
    }
    if (m > 0 && hook.max.size() != ranges_.size())
        throw Error("candidate screen: the candidate pass saw " + std::to_string(hook.max.size()) + " L_q sites, the sample " +
                    std::to_string(ranges_.size()));
    *head_max = std::move(hook.max);
    *head_min = std::move(hook.min);
}

std::vector<double> CandidateScreen::estimate(const std::vector<int32_t>& tokens, int64_t batch,
                                              const ProgressFn& progress, double f0, double f1,
                                              const std::string& label, std::vector<double>* attention_mass,
                                              const std::function<void(int64_t, int64_t)>& on_halve) const {
    std::vector<double> out(tokens.size(), std::numeric_limits<double>::quiet_NaN());
    if (attention_mass) attention_mass->assign(tokens.size(), 0.0);
    if (tokens.empty()) return out;
    at::NoGradGuard ng;
    int64_t bs = std::max<int64_t>(1, std::min<int64_t>(batch, tokens.size()));
    const size_t total = tokens.size();
    const int64_t blocks = depth();
    auto run_batch = [&](size_t i, int64_t batch_now) {
        const std::string what = label + ": " + std::to_string(i) + "/" + std::to_string(total) + " candidates";
        // Progress (and the chance to cancel) before the batch, as each block of its forward starts and before each
        // block's products: a cancel waits for one block's work, not a whole batch's (RESULTS.md: cancel latency).
        // The fraction moves through the batch: its forward as the first half, its products as the second.
        auto report_at = [&](double part) {
            report_progress(progress, f0 + (f1 - f0) * (double(i) + part * double(batch_now)) / double(total), what);
        };
        report_at(0);
        check_injected_out_of_memory(batch_now);
        const size_t b = static_cast<size_t>(batch_now);
        std::vector<int32_t> chunk(tokens.begin() + i, tokens.begin() + i + b);
        std::vector<at::Tensor> k, v, hmax, hmin;
        std::function<void(int)> on_block;
        if (progress)
            on_block = [&](int l) {
                if (l > 0) report_at(0.5 * double(std::min<int64_t>(l, blocks)) / double(blocks));
            };
        candidate_pass(chunk, &k, &v, &hmax, &hmin, on_block);
        at::Tensor d = at::zeros({(int64_t)b}, at::TensorOptions().dtype(at::kDouble).device(model_.device()));
        at::Tensor mass = at::zeros_like(d);
        // The head's exact ranges.
        for (size_t r = 0; r < hmax.size(); ++r) {
            const Range& R = ranges_[r];
            if (R.c == 0) continue;
            at::Tensor mx = at::clamp_min(hmax[r].to(at::kDouble), R.rest_max);
            at::Tensor mn = at::clamp_max(hmin[r].to(at::kDouble), R.rest_min);
            d += ((mx - mn) - R.range0) * R.c;
        }
        // Per block: w = sigmoid(scale q.k_t - lse), gv = g.(v_t - a), summed over heads and sample tokens. In column
        // slices of kProductColumns candidates, so that the (H, n, columns) products stay in cache.
        for (size_t l = 0; l < k.size(); ++l) {
            report_at(0.5 + 0.5 * double(l) / double(k.size()));
            const Layer& L = layers_[l];
            const int64_t Hn = L.qa.size(0) * L.qa.size(1);
            for (int64_t j0 = 0; j0 < (int64_t)b; j0 += kProductColumns) {
                const int64_t nb = std::min<int64_t>(kProductColumns, b - j0);
                at::Tensor w = at::bmm(L.qa, k[l].narrow(2, j0, nb)).sigmoid_();  // (H, n, nb)
                if (attention_mass) mass.narrow(0, j0, nb) += w.view({Hn, nb}).sum(0, false, at::kDouble);
                at::Tensor gv = at::bmm(L.gaa, v[l].narrow(2, j0, nb));            // (H, n, nb)
                // Summed over the sample tokens in float32 (ATen's cascade sum, per head), then over the heads in
                // float64: a float64 sum over all H n terms converted the whole (H, n, nb) product to float64 first,
                // ~30% of the products' time (RESULTS.md, session 6); the estimates move by ~1e-7 absolute.
                d.narrow(0, j0, nb) += w.mul_(gv).sum(1).sum(0, false, at::kDouble);
            }
        }
        at::Tensor dc = d.cpu();
        auto acc = dc.accessor<double, 1>();
        for (size_t j = 0; j < b; ++j) out[i + j] = acc[j];
        if (attention_mass) {
            at::Tensor mc = mass.cpu();
            auto ma = mc.accessor<double, 1>();
            for (size_t j = 0; j < b; ++j) (*attention_mass)[i + j] = ma[j];
        }
    };
    // A batch that runs out of memory: halved, the same candidates again (base/out_of_memory.h).
    run_halving_on_oom(0, total, &bs, run_batch, on_halve, label);
    report_progress(progress, f1, label + ": " + std::to_string(total) + "/" + std::to_string(total) + " candidates");
    return out;
}

void CandidateScreen::set_depth(int64_t blocks) {
    if (blocks < 0 || blocks > (int64_t)layers_.size())
        throw Error("candidate screen: depth " + std::to_string(blocks) + " outside [0, " + std::to_string(layers_.size()) + "]");
    depth_ = blocks;
}

int64_t CandidateScreen::depth() const { return depth_ > 0 ? depth_ : (int64_t)layers_.size(); }

at::Tensor CandidateScreen::slot_weights(int32_t token) const {
    at::NoGradGuard ng;
    std::vector<at::Tensor> k, v, hmax, hmin;
    candidate_pass({token}, &k, &v, &hmax, &hmin);
    std::vector<at::Tensor> w;
    for (size_t l = 0; l < k.size(); ++l) {
        const Layer& L = layers_[l];
        w.push_back(at::sigmoid(at::bmm(L.qa, k[l])).squeeze(-1));  // (H, n)
    }
    return at::stack(w).cpu();
}

double CandidateScreen::flops_per_candidate(const ModelConfig& c, int64_t P, int64_t n, int64_t head) {
    const double C = c.dim, Hd = c.hidden_dim, Q = double(c.n_heads) * c.head_dim, KV = c.kv_dim();
    const double linear = 2 * (C * Q + 2 * C * KV + Q * C + (c.arch == Arch::Llama ? 3 : 2) * C * Hd);
    const double T = double(1 + std::min(head, n));
    const double forward = double(c.n_layers) * (T * linear + 4.0 * Q * (T * double(P) + T * (T + 1) / 2));
    return forward + double(c.n_layers) * 4.0 * double(n) * Q;
}

}  // namespace cushion
