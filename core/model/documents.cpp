#include "model/documents.h"

#include <ATen/ATen.h>

#include <algorithm>
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
        if ((int64_t)ids.size() > max_len) ids.resize(std::max<int64_t>(max_len, 0));
        out.push_back(std::move(ids));
    }
    return out;
}

int64_t max_document_tokens(const Model& m, int64_t prefix_len) {
    return prefix_len > 0 ? m.config.max_seq_len - prefix_len + 1 : m.config.max_seq_len;
}

std::vector<std::vector<int32_t>> read_tokenized_documents(const Model& m, const std::string& path,
                                                           int64_t prefix_len, int limit) {
    auto lines = read_documents(path);
    if (limit > 0 && static_cast<size_t>(limit) < lines.size()) lines.resize(limit);
    return tokenize_documents(m, lines, max_document_tokens(m, prefix_len));
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

void for_each_batch(const std::vector<std::vector<int32_t>>& docs, int64_t max_batch_tokens, BatchOrder order,
                    const std::function<void(const std::vector<size_t>& batch)>& fn) {
    std::vector<size_t> idx(docs.size());
    std::iota(idx.begin(), idx.end(), 0);
    if (order == BatchOrder::LongestFirst)
        std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return docs[a].size() > docs[b].size(); });
    size_t i = 0;
    while (i < idx.size()) {
        std::vector<size_t> batch;
        int64_t longest = 0;
        while (i < idx.size()) {
            const int64_t len = std::max<int64_t>(longest, static_cast<int64_t>(docs[idx[i]].size()));
            if (!batch.empty() && len * static_cast<int64_t>(batch.size() + 1) > max_batch_tokens) break;
            longest = len;
            batch.push_back(idx[i++]);
        }
        fn(batch);
    }
}

std::vector<std::vector<int32_t>> gather(const std::vector<std::vector<int32_t>>& docs,
                                         const std::vector<size_t>& batch) {
    std::vector<std::vector<int32_t>> out;
    out.reserve(batch.size());
    for (size_t i : batch) out.push_back(docs[i]);
    return out;
}

}  // namespace cushion
