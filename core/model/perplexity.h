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
#include "model/documents.h"
#include "model/kv_cache.h"
#include "model/model.h"
#include "base/progress.h"

namespace cushion {

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

}  // namespace cushion
