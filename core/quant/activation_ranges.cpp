#include "quant/activation_ranges.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <numeric>

#include "base/error.h"
#include "model/documents.h"

namespace cushion {

namespace {

// Running min / max / per-channel abs-max per (layer, site), kept on the model's device (no syncs).
class RangeRecorder : public ActivationHook {
public:
    RangeRecorder(int n_layers, const ActivationRangeOptions& o) : opts_(o), state_(n_layers) {}

    void on_activation(int layer, Site site, at::Tensor& x, const at::Tensor& valid) override {
        const int si = static_cast<int>(site);
        if (layer < 0 || layer >= (int)state_.size() || !opts_.sites[si] || x.numel() == 0) return;
        const double inf = std::numeric_limits<double>::infinity();
        at::Tensor xf = x.detach().to(at::kFloat);
        const int64_t C = xf.size(-1);
        at::Tensor mn, mx, cm;
        if (valid.defined()) {
            at::Tensor pad = at::logical_not(valid.to(xf.device(), at::kBool)).unsqueeze(-1);  // (B, T, 1)
            mn = xf.masked_fill(pad, inf).min();
            mx = xf.masked_fill(pad, -inf).max();
            if (opts_.channel_absmax) cm = xf.abs().masked_fill(pad, 0.0).reshape({-1, C}).amax(0);
        } else {
            mn = xf.min();
            mx = xf.max();
            if (opts_.channel_absmax) cm = xf.abs().reshape({-1, C}).amax(0);
        }
        Slot& s = state_[layer][si];
        s.min = s.min.defined() ? at::minimum(s.min, mn) : mn;
        s.max = s.max.defined() ? at::maximum(s.max, mx) : mx;
        if (cm.defined()) s.cmax = s.cmax.defined() ? at::maximum(s.cmax, cm) : cm;
    }

    void finish(ActivationRanges* r) const {
        r->layers.assign(state_.size(), {});
        for (size_t l = 0; l < state_.size(); ++l)
            for (int si = 0; si < kSiteCount; ++si) {
                const Slot& s = state_[l][si];
                SiteRange& out = r->layers[l][si];
                if (s.min.defined()) {
                    out.min = s.min.item<double>();
                    out.max = s.max.item<double>();
                }
                if (s.cmax.defined()) out.channel_absmax = s.cmax.cpu();
            }
    }

private:
    struct Slot {
        at::Tensor min, max, cmax;
    };
    ActivationRangeOptions opts_;
    std::vector<std::array<Slot, kSiteCount>> state_;
};

}  // namespace

ActivationRanges collect_activation_ranges(const Model& m, const std::vector<std::vector<int32_t>>& docs_in,
                           const ActivationRangeOptions& opts) {
    at::NoGradGuard no_grad;
    if (docs_in.empty()) throw Error("activation ranges: no documents (is the --calib text empty?)");
    const bool with_prefix = opts.prefix && !opts.prefix->empty();
    const int64_t P = with_prefix ? opts.prefix->length() : 0;
    const int64_t room = m.config.max_seq_len - P;
    if (room <= 0)
        throw Error("activation ranges: the prefix (" + std::to_string(P) + " tokens) fills the model's context of " +
                    std::to_string(m.config.max_seq_len));
    const int32_t bos = m.tokenizer ? m.tokenizer->bos_id() : -1;

    // The token sequences actually run: without <bos> after a prefix, truncated to the room left.
    std::vector<std::vector<int32_t>> seqs;
    int64_t total = 0;
    for (const auto& d : docs_in) {
        auto begin = d.begin();
        if (with_prefix && !d.empty() && d[0] == bos) ++begin;
        std::vector<int32_t> s(begin, d.end());
        if ((int64_t)s.size() > room) s.resize(room);
        if (s.empty()) continue;
        total += s.size();
        seqs.push_back(std::move(s));
    }
    if (total == 0)
        throw Error("activation ranges: no tokens in " + std::to_string(docs_in.size()) + " document(s)" +
                    (with_prefix ? " (with a prefix in place each document's <bos> is dropped; documents of only "
                                   "<bos> contribute nothing)"
                                 : "") +
                    "; give a longer --calib text");

    RangeRecorder rec(static_cast<int>(m.config.n_layers), opts);
    report_progress(opts.progress, 0.0, "activation ranges");
    size_t done = 0;
    for_each_batch(seqs, opts.max_batch_tokens, BatchOrder::LongestFirst, [&](const std::vector<size_t>& idx) {
        at::Tensor tokens, valid;
        pad_batch(gather(seqs, idx), &tokens, &valid);
        ForwardArgs fa;
        fa.prefix = with_prefix ? opts.prefix : nullptr;
        fa.hook = &rec;
        fa.valid = valid;
        fa.skip_logits = true;
        m.forward(tokens, fa);
        done += idx.size();
        report_progress(opts.progress, double(done) / seqs.size(), "activation ranges");
    });
    ActivationRanges r;
    rec.finish(&r);
    r.tokens = total;
    r.docs = static_cast<int64_t>(seqs.size());
    r.prefix_length = P;
    return r;
}

}  // namespace cushion
