// Perplexity with one fixed protocol: every non-empty line of a text file is one document; its tokens
// are <bos> + the tokenizer's encoding of the line, truncated to the model's context; the mean NLL is
// taken over every predicted position (1..n-1) of every document; ppl = exp(mean).
// With a prefix (cushion) the document runs as [prefix KV] + its text tokens (no <bos>): the same
// tokens are predicted, the first one from the prefix's last-position logits.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "model/activation_hook.h"
#include "model/kv_cache.h"
#include "model/model.h"
#include "base/progress.h"

namespace cushion {

// Non-empty lines of a text file (trailing '\r' stripped). Throws Error if unreadable or empty.
std::vector<std::string> read_documents(const std::string& path);
// <bos> + encoding of each document, truncated to max_len tokens.
std::vector<std::vector<int32_t>> tokenize_documents(const Model& m, const std::vector<std::string>& docs,
                                                     int64_t max_len);

struct PerplexityOptions {
    const KVCache* prefix = nullptr;   // cushion KV (batch 1)
    at::Tensor prefix_last_logits;     // (V) logits at the prefix's last position; required with prefix
    ActivationHook* hook = nullptr;    // e.g. a quantizer
    const LinearKernels* kernels = nullptr;  // ForwardArgs::kernels (e.g. a package's int8 kernels)
    int64_t max_batch_tokens = 8192;   // documents are batched up to this many (padded) tokens
    ProgressFn progress;
};

struct PerplexityResult {
    double ppl = 0;
    double mean_nll = 0;
    int64_t tokens = 0;  // predicted positions
    int64_t docs = 0;
};

// docs: token ids as from tokenize_documents (each starting with <bos>).
PerplexityResult perplexity(const Model& m, const std::vector<std::vector<int32_t>>& docs,
                            const PerplexityOptions& opts = {});

// Right-pads sequences into a (B, T) int64 batch with a (B, T) validity mask.
void pad_batch(const std::vector<std::vector<int32_t>>& seqs, at::Tensor* tokens, at::Tensor* valid);

}  // namespace cushion
