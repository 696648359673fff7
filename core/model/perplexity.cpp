#include "model/perplexity.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "base/error.h"
#include "model/non_finite.h"

namespace cushion {

PerplexityResult perplexity(const Model& m, const std::vector<std::vector<int32_t>>& docs,
                            const PerplexityOptions& opts) {
    at::NoGradGuard no_grad;
    const bool with_prefix = opts.prefix && !opts.prefix->empty();
    if (with_prefix && !opts.prefix_last_logits.defined())
        throw Error("perplexity with a prefix needs the prefix's last-position logits");
    at::Tensor first_logp;
    if (with_prefix) first_logp = at::log_softmax(opts.prefix_last_logits.to(at::kCPU, at::kDouble), -1);
    for (const auto& d : docs)
        if (d.empty() || d[0] != m.tokenizer->bos_id()) throw Error("perplexity: documents must start with <bos>");

    double nll = 0;
    int64_t count = 0, done = 0;
    // Longest first, so batches waste little padding; the result does not depend on the order.
    for_each_batch(docs, opts.max_batch_tokens, BatchOrder::LongestFirst, [&](const std::vector<size_t>& idx) {
        std::vector<std::vector<int32_t>> batch;
        for (size_t i : idx) {
            const auto& d = docs[i];
            // With a prefix the document runs without its <bos>.
            batch.push_back(with_prefix ? std::vector<int32_t>(d.begin() + 1, d.end()) : d);
        }
        at::Tensor tokens, valid;
        pad_batch(batch, &tokens, &valid);
        if (tokens.size(1) == 0) { done += batch.size(); return; }
        ForwardArgs fa;
        fa.prefix = with_prefix ? opts.prefix : nullptr;
        fa.hook = opts.hook;
        fa.kernels = opts.kernels;
        fa.valid = valid;
        at::Tensor logits = m.forward(tokens, fa);  // (B, T, V) float32
        at::Tensor logp = at::log_softmax(logits.to(at::kDouble), -1).cpu();
        // Without prefix: position t predicts token t+1. With prefix: position t predicts token t+1 of the
        // text (the first text token comes from the prefix logits).
        auto lp = logp.accessor<double, 3>();
        for (size_t b = 0; b < batch.size(); ++b) {
            const auto& s = batch[b];
            if (with_prefix && !s.empty()) {
                nll -= first_logp[s[0]].item<double>();
                ++count;
            }
            for (size_t t = 0; t + 1 < s.size(); ++t) {
                nll -= lp[b][t][s[t + 1]];
                ++count;
            }
        }
        // One test of one number per batch: NaN or Inf anywhere in the batch reaches the sum. Only then is the
        // batch run again to say where it started (instead of "perplexity nan").
        if (!std::isfinite(nll))
            throw non_finite_error(m, "perplexity", tokens, fa, [&](int64_t row) {
                return "document " + std::to_string(idx.at(static_cast<size_t>(row)) + 1);
            });
        done += batch.size();
        report_progress(opts.progress, double(done) / docs.size(), "perplexity");
    });
    if (count == 0) throw Error("perplexity: no predicted tokens (documents of one token only)");
    PerplexityResult r;
    r.mean_nll = nll / count;
    r.ppl = std::exp(r.mean_nll);
    r.tokens = count;
    r.docs = docs.size();
    return r;
}

}  // namespace cushion
