#include "analysis/outlier_report.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <map>
#include <set>

#include "model/activation_probe.h"
#include "base/error.h"
#include "model/documents.h"

namespace cushion {

OutlierReport find_outlier_tokens(const Model& m, const std::vector<std::vector<int32_t>>& docs,
                                  const OutlierOptions& opts) {
    if (!(opts.threshold > 1)) throw Error("outlier threshold must be > 1");
    at::NoGradGuard ng;
    OutlierReport rep;
    rep.threshold = opts.threshold;
    rep.site = opts.site;
    rep.docs = docs.size();
    const int L = static_cast<int>(m.config.n_layers);
    rep.block_max_ratio.assign(L, 0.f);
    ProbeOptions po;
    po.sites.fill(false);
    po.sites[static_cast<int>(opts.site)] = true;
    po.top_k = 1;
    std::map<int32_t, OutlierFrequency> freq;
    std::set<std::pair<int64_t, int64_t>> outlier_positions;
    size_t done = 0;
    for_each_batch(docs, opts.max_batch_tokens, BatchOrder::AsGiven, [&](const std::vector<size_t>& index) {
        const auto batch = gather(docs, index);
        at::Tensor tokens, valid;
        pad_batch(batch, &tokens, &valid);
        ActivationProbe probe(L, po);
        ForwardArgs fa;
        fa.hook = &probe;
        fa.valid = valid;
        fa.skip_logits = true;
        m.forward(tokens, fa);
        auto res = probe.take();
        for (int l = 0; l < L; ++l) {
            const SiteSummary& S = res->at(l, opts.site);
            at::Tensor ratio = S.ratio();  // (B, T)
            for (size_t b = 0; b < batch.size(); ++b) {
                for (size_t t = 0; t < batch[b].size(); ++t) {
                    const float r = ratio[b][t].item<float>();
                    rep.block_max_ratio[l] = std::max(rep.block_max_ratio[l], r);
                    if (r <= opts.threshold) continue;
                    OutlierToken o;
                    o.doc = index[b];
                    o.block = l;
                    o.pos = t;
                    o.token = batch[b][t];
                    o.text = m.tokenizer->piece(o.token);
                    o.ratio = r;
                    o.value = S.token_value[b][t].item<float>();
                    o.channel = S.token_channel[b][t].item<int64_t>();
                    rep.outliers.push_back(o);
                    outlier_positions.insert({o.doc, o.pos});
                    auto& f = freq[o.token];
                    if (std::find(f.blocks.begin(), f.blocks.end(), l) == f.blocks.end()) f.blocks.push_back(l);
                }
            }
        }
        done += index.size();
        report_progress(opts.progress, double(done) / docs.size(), "finding outlier tokens");
    });
    for (size_t d = 0; d < docs.size(); ++d)
        for (size_t t = 0; t < docs[d].size(); ++t) {
            rep.tokens++;
            auto it = freq.find(docs[d][t]);
            if (it == freq.end()) continue;
            it->second.occurrences++;
            if (outlier_positions.count({int64_t(d), int64_t(t)})) it->second.outlier_count++;
        }
    for (auto& [tok, f] : freq) {
        f.token = tok;
        f.text = m.tokenizer->piece(tok);
        std::sort(f.blocks.begin(), f.blocks.end());
        rep.frequency.push_back(f);
    }
    std::stable_sort(rep.frequency.begin(), rep.frequency.end(),
                     [](const OutlierFrequency& a, const OutlierFrequency& b) { return a.outlier_count > b.outlier_count; });
    return rep;
}

}  // namespace cushion
