#include "model/perplexity.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <numeric>

#include "base/error.h"
#include "base/file_checks.h"

namespace cushion {

std::vector<std::string> read_documents(const std::string& path) {
    require_regular_file(path, "text file");
    std::ifstream in(path);
    if (!in) throw Error(path + ": cannot open text file");
    std::vector<std::string> docs;
    std::string line;
    while (std::getline(in, line)) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.find_first_not_of(" \t") != std::string::npos) docs.push_back(line);
    }
    if (docs.empty()) throw Error(path + ": no non-empty lines (each line is one document)");
    return docs;
}

std::vector<std::vector<int32_t>> tokenize_documents(const Model& m, const std::vector<std::string>& docs,
                                                     int64_t max_len) {
    std::vector<std::vector<int32_t>> out;
    for (const auto& d : docs) {
        auto ids = m.tokenizer->encode(d, /*add_bos=*/true);
        if ((int64_t)ids.size() > max_len) ids.resize(max_len);
        out.push_back(std::move(ids));
    }
    return out;
}

void pad_batch(const std::vector<std::vector<int32_t>>& seqs, at::Tensor* tokens, at::Tensor* valid) {
    int64_t T = 0;
    for (auto& s : seqs) T = std::max<int64_t>(T, s.size());
    const int64_t B = seqs.size();
    *tokens = at::zeros({B, T}, at::kLong);
    *valid = at::zeros({B, T}, at::kBool);
    auto tk = tokens->accessor<int64_t, 2>();
    auto vk = valid->accessor<bool, 2>();
    for (int64_t b = 0; b < B; ++b)
        for (size_t t = 0; t < seqs[b].size(); ++t) {
            tk[b][t] = seqs[b][t];
            vk[b][t] = true;
        }
}

PerplexityResult perplexity(const Model& m, const std::vector<std::vector<int32_t>>& docs,
                            const PerplexityOptions& opts) {
    at::NoGradGuard no_grad;
    const bool with_prefix = opts.prefix && !opts.prefix->empty();
    if (with_prefix && !opts.prefix_last_logits.defined())
        throw Error("perplexity with a prefix needs the prefix's last-position logits");
    // Sort by length (longest first) so batches waste little padding; results don't depend on order.
    std::vector<size_t> order(docs.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return docs[a].size() > docs[b].size(); });
    at::Tensor first_logp;
    if (with_prefix) first_logp = at::log_softmax(opts.prefix_last_logits.to(at::kCPU, at::kDouble), -1);

    double nll = 0;
    int64_t count = 0, done = 0;
    size_t i = 0;
    while (i < order.size()) {
        // Fill a batch up to max_batch_tokens padded tokens.
        std::vector<std::vector<int32_t>> batch;
        const int64_t T = docs[order[i]].size();
        while (i < order.size() && (int64_t)(batch.size() + 1) * T <= std::max<int64_t>(opts.max_batch_tokens, T)) {
            const auto& d = docs[order[i]];
            if (d.empty() || d[0] != m.tokenizer->bos_id()) throw Error("perplexity: documents must start with <bos>");
            // With a prefix the document runs without its <bos>.
            batch.push_back(with_prefix ? std::vector<int32_t>(d.begin() + 1, d.end()) : d);
            ++i;
        }
        at::Tensor tokens, valid;
        pad_batch(batch, &tokens, &valid);
        if (tokens.size(1) == 0) { done += batch.size(); continue; }
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
        done += batch.size();
        report_progress(opts.progress, double(done) / docs.size(), "perplexity");
    }
    if (count == 0) throw Error("perplexity: no predicted tokens (documents of one token only)");
    PerplexityResult r;
    r.mean_nll = nll / count;
    r.ppl = std::exp(r.mean_nll);
    r.tokens = count;
    r.docs = docs.size();
    return r;
}

}  // namespace cushion
