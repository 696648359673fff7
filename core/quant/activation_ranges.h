// Activation ranges: per (layer, site) min/max (and per-channel max |x|) of the activations over the real
// tokens of a set of documents (the --calib text), for per-tensor static activation quantization and
// SmoothQuant. (Not `cushion calibrate`, the cushion's search and tuning: that is cushion/.)
//
// With a prefix (cushion) the documents run as [prefix KV] + their tokens, without their own <bos>
// (resources/docs/method.md, "Inputs with a cushion"): the prefix's tokens live only in the KV cache and never reach the
// hook, so they are excluded from the ranges automatically (resources/docs/method.md: "Static ranges must be calibrated
// with the cushion in place (prefix KV prepended, prefix excluded)").
#pragma once
#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <limits>
#include <vector>

#include "model/activation_hook.h"
#include "model/kv_cache.h"
#include "model/model.h"
#include "base/progress.h"

namespace cushion {

struct SiteRange {
    double min = std::numeric_limits<double>::infinity();   // over all real tokens of the documents
    double max = -std::numeric_limits<double>::infinity();
    at::Tensor channel_absmax;  // (C) float32 on the CPU: max |x| per channel (when recorded)
    bool seen() const { return min <= max; }
};

struct ActivationRanges {
    std::vector<std::array<SiteRange, kSiteCount>> layers;  // [layer][site]
    int64_t tokens = 0;         // real tokens the ranges were taken over
    int64_t docs = 0;           // documents that contributed at least one token
    int64_t prefix_length = 0;  // length of the prefix in place while collecting (0 = none)
    const SiteRange& at(int layer, Site s) const { return layers.at(layer)[static_cast<int>(s)]; }
};

struct ActivationRangeOptions {
    const KVCache* prefix = nullptr;  // cushion KV (batch 1); documents then run without their leading <bos>
    int64_t max_batch_tokens = 8192;  // documents are batched (right-padded) up to this many tokens
    ProgressFn progress;              // fraction of documents done; return false to cancel (throws Cancelled)
    std::array<bool, kSiteCount> sites{{true, true, true, true, true}};  // sites to record
    bool channel_absmax = true;       // also record per-channel max |x| (SmoothQuant needs it)
};

// docs: token ids as from tokenize_documents (starting with <bos>). Without a prefix each document runs as
// is; with one, a leading <bos> is dropped (the cushion starts with <bos>) and documents are truncated to
// fit the context after the prefix. Padding never enters a range. Runs under no-grad.
// Throws Error when there are no documents or no tokens at all (e.g. every document is just
// <bos> and a prefix is in place), and Cancelled when the progress callback asks to stop.
ActivationRanges collect_activation_ranges(const Model& m, const std::vector<std::vector<int32_t>>& docs,
                           const ActivationRangeOptions& opts = {});

}  // namespace cushion
