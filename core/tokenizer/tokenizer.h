// Tokenizers: text <-> token ids. One interface, three implementations:
//  - score-merge BPE over a SentencePiece-style vocabulary (llama2.c tokenizer.bin, GGUF "llama" vocab),
//  - Google SentencePiece itself (tokenizer.model),
//  - byte-level BPE from a Hugging Face tokenizer.json (GPT-2, Llama 3, Qwen2).
// Each gives the ids of its reference: libsentencepiece for tokenizer.model, Hugging Face tokenizers for
// tokenizer.json, llama2.c / llama.cpp for tokenizer.bin and GGUF vocabularies (`ctest -L reference`,
// tests/tokenizer/*_check.py, compares them on texts, edge strings and every code point's split class).
//
// Invalid UTF-8: every byte that is not part of well-formed UTF-8 (Unicode's Table 3-7: overlong forms, surrogates,
// values past U+10FFFF, truncated sequences, stray continuation bytes) counts as one ill-formed byte.
//  - tokenizer.model: each becomes U+FFFD first, as libsentencepiece does (so its bytes do not come back).
//  - tokenizer.bin, GGUF "llama" vocabularies, SentencePiece-style tokenizer.json: the byte is kept as its <0xXX>
//    byte token (llama2.c, llama.cpp), or <unk> without byte tokens.
//  - byte-level BPE: the byte is one "other" character for the split regexes (where U+FFFD would be) and is encoded
//    as its own byte-level character, so decode(encode(x)) == x for any bytes.
// (The Python libraries take only str: the reference tests emulate these conventions, see their docstrings.)
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace cushion {

class Tokenizer {
public:
    virtual ~Tokenizer() = default;
    // Encodes text. add_bos prepends bos_id(). SentencePiece-style tokenizers add the dummy-prefix space.
    virtual std::vector<int32_t> encode(const std::string& text, bool add_bos) const = 0;
    // The text a token contributes when printed after `prev` (byte tokens decoded, "▁" -> " ",
    // and, as llama2.c does, the leading space dropped right after <bos>).
    virtual std::string decode_token(int32_t prev, int32_t id) const = 0;
    // The raw vocabulary entry, for display ("▁the", "<0x0A>", "<s>").
    virtual std::string piece(int32_t id) const = 0;
    virtual int32_t vocab_size() const = 0;
    virtual int32_t bos_id() const = 0;  // -1 if none
    virtual int32_t eos_id() const = 0;  // -1 if none
    virtual bool is_special(int32_t id) const = 0;  // control / unknown tokens (not byte tokens)
    virtual std::string kind() const = 0;           // "spm-bpe", "sentencepiece", "byte-bpe"

    std::string decode(const std::vector<int32_t>& ids) const;
};

// Score-merge BPE over pieces with scores (llama2.c run.c's algorithm; llama.cpp's SPM tokenizer).
// types follow GGUF token_type (1 normal, 2 unknown, 3 control, 6 byte); empty = infer from piece text.
std::unique_ptr<Tokenizer> make_score_bpe_tokenizer(std::vector<std::string> pieces, std::vector<float> scores,
                                                    std::vector<int32_t> types, int32_t bos, int32_t eos,
                                                    int32_t unk);
// llama2.c tokenizer.bin (e.g. tok512.bin): int32 max_token_length, then per token: f32 score, i32 len, bytes.
std::unique_ptr<Tokenizer> load_llama2c_tokenizer(const std::string& path, int32_t vocab_size);
// A SentencePiece BPE model file (tokenizer.model, tok512.model), read directly (protobuf) and run with
// the score-merge BPE and the model's own whitespace options. (libsentencepiece itself cannot share a
// process with libtorch on Debian: both carry protobuf; tests use its spm_encode as the reference.)
std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::string& path);
// A Hugging Face tokenizer.json with a byte-level BPE model (GPT-2, Llama 3, Qwen2; an NFC normalizer is applied). A
// SentencePiece-style BPE tokenizer.json (Metaspace or the legacy Prepend/Replace normalizer, byte fallback) is routed to
// the score-merge BPE above, with tokenizers' handling of added tokens and of the "▁" prefix.
std::unique_ptr<Tokenizer> load_tokenizer_json(const std::string& path);
// Byte-level BPE (GPT-2 style) from a GGUF "gpt2" vocabulary: tokens (byte-to-unicode mapped strings),
// merges ("a b" lines, rank = index), pre = tokenizer.ggml.pre ("default", "llama-bpe", "qwen2", "smollm", ...).
std::unique_ptr<Tokenizer> make_byte_bpe_tokenizer(std::vector<std::string> tokens, std::vector<std::string> merges,
                                                   std::string pre, int32_t bos, int32_t eos);
// The same with GGUF token_type per token: control (3) and user-defined (4) tokens are matched verbatim in
// the text before pre-tokenizing. The 5-argument form infers them ("<|...|>", "<s>", "</s>", bos, eos).
std::unique_ptr<Tokenizer> make_byte_bpe_tokenizer(std::vector<std::string> tokens, std::vector<std::string> merges,
                                                   std::string pre, int32_t bos, int32_t eos,
                                                   std::vector<int32_t> types);

}  // namespace cushion
