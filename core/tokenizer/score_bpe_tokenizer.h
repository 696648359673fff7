// Internal to the tokenizer implementation files: the score-merge BPE with SentencePiece's normalizer
// options, used by the tokenizer.model reader (sentencepiece_tokenizer.cpp) and, with Hugging Face's added-token and
// prefix rules, by the SentencePiece-style tokenizer.json route (byte_bpe_tokenizer.cpp); and the strict UTF-8
// sequence test both files use. Not part of the public API.
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace cushion::detail {

// The length (1-4) of the well-formed UTF-8 sequence at p[0..n), or 0 when p[0] does not start one (Unicode's
// Table 3-7: no overlong forms, no surrogates, nothing past U+10FFFF, no truncated sequence). Every byte that is not
// part of a well-formed sequence is "ill-formed" on its own, which is how Python's surrogateescape and
// libsentencepiece count them (one U+DCxx / U+FFFD per byte).
inline size_t utf8_sequence_length(const char* p, size_t n) {
    if (n == 0) return 0;
    const auto b = [p](size_t i) { return static_cast<unsigned char>(p[i]); };
    const unsigned char c = b(0);
    if (c < 0x80) return 1;
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c == 0xE0) len = 3, lo = 0xA0;
    else if (c == 0xED) len = 3, hi = 0x9F;
    else if (c >= 0xE1 && c <= 0xEF) len = 3;
    else if (c == 0xF0) len = 4, lo = 0x90;
    else if (c == 0xF4) len = 4, hi = 0x8F;
    else if (c >= 0xF1 && c <= 0xF3) len = 4;
    else return 0;
    if (n < len || b(1) < lo || b(1) > hi) return 0;
    for (size_t k = 2; k < len; ++k)
        if ((b(k) & 0xC0) != 0x80) return 0;
    return len;
}

struct ScoreBpeOptions {
    bool add_dummy_prefix = true;            // prepend "▁" to non-empty text
    bool remove_extra_whitespaces = false;   // SentencePiece: drop leading/trailing ' ', collapse runs of ' '
    bool escape_whitespaces = true;          // ' ' -> "▁"
    std::string kind = "spm-bpe";
    std::string unk_surface = " \xE2\x81\x87 ";  // what <unk> decodes to (" ⁇ ")
    // libsentencepiece replaces every ill-formed UTF-8 byte by U+FFFD before anything else; llama2.c and llama.cpp
    // keep the raw byte (a <0xXX> byte token).
    bool replace_invalid_utf8 = false;
    // Hugging Face tokenizer.json semantics (SentencePiece-style BPE converted by transformers):
    //  - added_tokens: ids matched verbatim in the raw text first (longest first), as tokenizers' added vocabulary
    //    does; the text between them is normalized and encoded segment by segment (empty segments give nothing);
    //  - prefix_unless_space: the Metaspace pre-tokenizer adds the "▁" prefix only to a segment that does not already
    //    start with ' ' or "▁" (the legacy Prepend normalizer always adds it);
    //  - prefix_first_only: Metaspace prepend_scheme "first": only the segment at the start of the text gets it.
    std::vector<int32_t> added_tokens;
    bool prefix_unless_space = false;
    bool prefix_first_only = false;
};

std::unique_ptr<Tokenizer> make_score_bpe_tokenizer(std::vector<std::string> pieces, std::vector<float> scores,
                                                    std::vector<int32_t> types, int32_t bos, int32_t eos,
                                                    int32_t unk, const ScoreBpeOptions& options);

}  // namespace cushion::detail
