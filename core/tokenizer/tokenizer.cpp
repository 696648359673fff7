// The shared part of the Tokenizer interface. The three implementations live in
// score_bpe_tokenizer.cpp, sentencepiece_tokenizer.cpp and byte_bpe_tokenizer.cpp.
#include "tokenizer/tokenizer.h"

namespace cushion {

// Concatenates decode_token over the ids. The first token is decoded with prev = -1, which the
// SentencePiece-style tokenizers treat like <bos> (their dummy-prefix space is dropped), so
// decode(encode(x, add_bos)) == x for both values of add_bos.
std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
    std::string out;
    int32_t prev = -1;
    for (int32_t id : ids) {
        out += decode_token(prev, id);
        prev = id;
    }
    return out;
}

}  // namespace cushion
