// Outlier tokens, PrefixQuant's way: for each block, the tokens whose down-projection input has
// max |x| / median |x| above a threshold (64 in PrefixQuant), with their position, text, channel and
// value, and how often each token is an outlier over a text. The fast baseline beside CushionCache.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "model/activation_hook.h"
#include "model/model.h"
#include "base/progress.h"

namespace cushion {

struct OutlierToken {
    int64_t doc = 0, block = 0, pos = 0, channel = 0;
    int32_t token = 0;
    std::string text;    // the token's piece
    float value = 0;     // signed value at (pos, channel)
    float ratio = 0;     // max |x| / median |x| of that token
};

struct OutlierFrequency {
    int32_t token = 0;
    std::string text;
    int64_t outlier_count = 0;  // (doc, pos) occurrences that are outliers in at least one block
    int64_t occurrences = 0;    // occurrences of the token in the text
    std::vector<int64_t> blocks;  // blocks where it was an outlier
};

struct OutlierReport {
    double threshold = 64;
    Site site = Site::DownIn;
    int64_t docs = 0, tokens = 0;
    std::vector<OutlierToken> outliers;       // every (doc, block, pos) above the threshold
    std::vector<OutlierFrequency> frequency;  // by outlier_count, descending
    std::vector<float> block_max_ratio;       // per block, the largest ratio seen
};

struct OutlierOptions {
    double threshold = 64;
    Site site = Site::DownIn;
    int64_t max_batch_tokens = 8192;
    ProgressFn progress;
};

// docs: token ids (with <bos>), as from tokenize_documents.
OutlierReport find_outlier_tokens(const Model& m, const std::vector<std::vector<int32_t>>& docs,
                                  const OutlierOptions& opts = {});

}  // namespace cushion
