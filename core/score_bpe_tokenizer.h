// Internal to the tokenizer implementation files: the score-merge BPE with SentencePiece's normalizer
// options, used by the tokenizer.model reader (sentencepiece_tokenizer.cpp). Not part of the public API.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "tokenizer.h"

namespace cushion::detail {

struct ScoreBpeOptions {
    bool add_dummy_prefix = true;            // prepend "▁" to non-empty text
    bool remove_extra_whitespaces = false;   // SentencePiece: drop leading/trailing ' ', collapse runs of ' '
    bool escape_whitespaces = true;          // ' ' -> "▁"
    std::string kind = "spm-bpe";
    std::string unk_surface = " \xE2\x81\x87 ";  // what <unk> decodes to (" ⁇ ")
};

std::unique_ptr<Tokenizer> make_score_bpe_tokenizer(std::vector<std::string> pieces, std::vector<float> scores,
                                                    std::vector<int32_t> types, int32_t bos, int32_t eos,
                                                    int32_t unk, const ScoreBpeOptions& options);

}  // namespace cushion::detail
