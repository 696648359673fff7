// Documents, the unit every measurement runs on: read from a text file (one per non-empty line), tokenized
// with <bos>, fitted to the context after a prefix, batched and padded. One rule for the CLI, the studio and
// every engine loop (perplexity, activation ranges, outliers, prefix tuning).
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/model.h"

namespace cushion {

// Non-empty lines of a text file (trailing '\r' stripped). Throws Error if unreadable or empty.
std::vector<std::string> read_documents(const std::string& path);

// <bos> + encoding of each document, truncated to max_len tokens.
std::vector<std::vector<int32_t>> tokenize_documents(const Model& m, const std::vector<std::string>& docs,
                                                     int64_t max_len);

// The longest a tokenized document (its <bos> counted) may be when a prefix of prefix_len tokens runs before it:
// the prefix replaces the document's <bos> (perplexity.h), so prefix + text fill the context exactly.
// prefix_len 0: the model's context.
int64_t max_document_tokens(const Model& m, int64_t prefix_len);

// read_documents + tokenize_documents(max_document_tokens(m, prefix_len)); the first `limit` documents when
// limit > 0.
std::vector<std::vector<int32_t>> read_tokenized_documents(const Model& m, const std::string& path,
                                                           int64_t prefix_len = 0, int limit = 0);

// Right-pads sequences into a (B, T) int64 batch with a (B, T) validity mask.
void pad_batch(const std::vector<std::vector<int32_t>>& seqs, at::Tensor* tokens, at::Tensor* valid);

enum class BatchOrder {
    AsGiven,       // documents in their order
    LongestFirst,  // sorted by length, longest first (stable): little padding; for order-independent sums
};

// Splits docs into batches of at most max_batch_tokens padded tokens (batch size x its longest document; a
// document longer than that is a batch alone) and calls fn with each batch's indices into docs.
void for_each_batch(const std::vector<std::vector<int32_t>>& docs, int64_t max_batch_tokens, BatchOrder order,
                    const std::function<void(const std::vector<size_t>& batch)>& fn);

// The sequences of one batch (copies of docs[i] for i in batch).
std::vector<std::vector<int32_t>> gather(const std::vector<std::vector<int32_t>>& docs,
                                         const std::vector<size_t>& batch);

}  // namespace cushion
