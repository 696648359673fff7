// A SentencePiece tokenizer.model (tok512.model, Llama 2's tokenizer.model) read directly from its protobuf
// and run through the score-merge BPE with the model's normalizer options (dummy prefix,
// remove_extra_whitespaces), which gives libsentencepiece's ids for BPE models with the identity
// normalization rule, including its treatment of invalid UTF-8 (each ill-formed byte becomes U+FFFD, so its byte
// fallback is <0xEF><0xBF><0xBD>). The tests check this against libsentencepiece (Debian's spm_encode, and the
// Python binding in the `reference` test tests/tokenizer/sentencepiece_check.py).
//
// Why not link libsentencepiece: Debian's libsentencepiece.so.0 carries its own copy of protobuf-lite and
// exports its google::protobuf symbols; in a process that also loads libtorch (which needs
// libprotobuf.so.32) the two copies interpose each other and the process crashes during static
// initialisation (seen here: SIGSEGV in ReflectionOps::FindInitializationErrors before main).
//
// Supported: model_type BPE, normalization "identity" (no precompiled charsmap), whitespace as prefix.
// Unigram / word / char models and NFKC-style normalizers raise a cushion::Error saying so.
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>

#include "base/error.h"
#include "base/file_checks.h"
#include "tokenizer/score_bpe_tokenizer.h"
#include "tokenizer/tokenizer.h"

namespace cushion {
namespace {

// A bounds-checked reader of the protobuf wire format.
class ProtoReader {
public:
    ProtoReader(const char* data, size_t size, const std::string& where) : p_(data), end_(data + size), where_(where) {}
    bool done() const { return p_ >= end_; }
    size_t offset_in(const char* base) const { return static_cast<size_t>(p_ - base); }

    uint64_t varint() {
        uint64_t r = 0;
        for (int shift = 0; shift < 64; shift += 7) {
            if (p_ >= end_) fail("truncated varint");
            const uint8_t c = static_cast<uint8_t>(*p_++);
            r |= uint64_t(c & 0x7F) << shift;
            if (c < 0x80) return r;
        }
        fail("varint longer than 10 bytes");
    }
    // Returns the field number and wire type of the next field.
    std::pair<uint32_t, uint32_t> key() {
        const uint64_t k = varint();
        if ((k >> 3) == 0 || (k >> 3) > (1u << 29)) fail("bad field number " + std::to_string(k >> 3));
        return {static_cast<uint32_t>(k >> 3), static_cast<uint32_t>(k & 7)};
    }
    std::pair<const char*, size_t> bytes() {
        const uint64_t n = varint();
        if (n > static_cast<uint64_t>(end_ - p_)) fail("length " + std::to_string(n) + " runs past the end");
        const char* s = p_;
        p_ += n;
        return {s, static_cast<size_t>(n)};
    }
    float fixed32_float() {
        if (end_ - p_ < 4) fail("truncated fixed32");
        float f;
        std::memcpy(&f, p_, 4);
        p_ += 4;
        return f;
    }
    void skip(uint32_t wire) {
        switch (wire) {
            case 0: varint(); break;
            case 1:
                if (end_ - p_ < 8) fail("truncated fixed64");
                p_ += 8;
                break;
            case 2: bytes(); break;
            case 5:
                if (end_ - p_ < 4) fail("truncated fixed32");
                p_ += 4;
                break;
            default: fail("unsupported wire type " + std::to_string(wire));
        }
    }
    [[noreturn]] void fail(const std::string& what) const { throw Error(where_ + ": " + what); }

private:
    const char* p_;
    const char* end_;
    std::string where_;
};

int32_t as_int32(uint64_t v) { return static_cast<int32_t>(static_cast<uint32_t>(v)); }  // proto int32 (-1 is 10 bytes)

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::string& path) {
    const std::string where = "SentencePiece model '" + path + "'";
    require_regular_file(path, "SentencePiece model");  // a named pipe would block the read, a device never end
    std::ifstream f(path, std::ios::binary);
    if (!f) throw Error(where + ": cannot open the file");
    const std::string data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (data.empty()) throw Error(where + ": the file is empty");

    std::vector<std::string> pieces;
    std::vector<float> scores;
    std::vector<int32_t> types;
    int32_t model_type = 1;  // proto default: UNIGRAM
    bool treat_ws_as_suffix = false;
    std::string bos_piece = "<s>", eos_piece = "</s>";
    std::string norm_name;
    bool precompiled = false;
    detail::ScoreBpeOptions opt;
    opt.kind = "sentencepiece";
    opt.remove_extra_whitespaces = true;  // proto defaults
    opt.add_dummy_prefix = true;
    opt.escape_whitespaces = true;
    opt.replace_invalid_utf8 = true;  // as libsentencepiece: each ill-formed UTF-8 byte becomes U+FFFD

    ProtoReader top(data.data(), data.size(), where);
    while (!top.done()) {
        const size_t field_off = top.offset_in(data.data());
        const auto [field, wire] = top.key();
        if (field == 1 && wire == 2) {  // repeated SentencePiece pieces
            const auto [ptr, len] = top.bytes();
            ProtoReader m(ptr, len, where + ": piece " + std::to_string(pieces.size()) + " at offset " +
                                        std::to_string(field_off));
            std::string piece;
            float score = 0.f;
            int32_t type = 1;  // NORMAL
            while (!m.done()) {
                const auto [pf, pw] = m.key();
                if (pf == 1 && pw == 2) {
                    const auto [s, n] = m.bytes();
                    piece.assign(s, n);
                } else if (pf == 2 && pw == 5) {
                    score = m.fixed32_float();
                } else if (pf == 3 && pw == 0) {
                    type = as_int32(m.varint());
                    if (type < 1 || type > 6) m.fail("unknown piece type " + std::to_string(type));
                } else {
                    m.skip(pw);
                }
            }
            pieces.push_back(std::move(piece));
            scores.push_back(score);
            types.push_back(type);
            if (pieces.size() > (1u << 24)) top.fail("more than 16M pieces");
        } else if (field == 2 && wire == 2) {  // TrainerSpec
            const auto [ptr, len] = top.bytes();
            ProtoReader m(ptr, len, where + ": trainer_spec");
            while (!m.done()) {
                const auto [tf, tw] = m.key();
                if (tf == 3 && tw == 0) model_type = as_int32(m.varint());
                else if (tf == 24 && tw == 0) treat_ws_as_suffix = m.varint() != 0;
                else if (tf == 46 && tw == 2) {
                    const auto [s, n] = m.bytes();
                    bos_piece.assign(s, n);
                } else if (tf == 47 && tw == 2) {
                    const auto [s, n] = m.bytes();
                    eos_piece.assign(s, n);
                } else {
                    m.skip(tw);
                }
            }
        } else if (field == 3 && wire == 2) {  // NormalizerSpec
            const auto [ptr, len] = top.bytes();
            ProtoReader m(ptr, len, where + ": normalizer_spec");
            while (!m.done()) {
                const auto [nf, nw] = m.key();
                if (nf == 1 && nw == 2) {
                    const auto [s, n] = m.bytes();
                    norm_name.assign(s, n);
                } else if (nf == 2 && nw == 2) {
                    precompiled = m.bytes().second > 0;
                } else if (nf == 3 && nw == 0) {
                    opt.add_dummy_prefix = m.varint() != 0;
                } else if (nf == 4 && nw == 0) {
                    opt.remove_extra_whitespaces = m.varint() != 0;
                } else if (nf == 5 && nw == 0) {
                    opt.escape_whitespaces = m.varint() != 0;
                } else {
                    m.skip(nw);
                }
            }
        } else {
            top.skip(wire);
        }
    }

    if (pieces.empty()) throw Error(where + ": no pieces (not a SentencePiece model?)");
    static const char* kTypeNames[] = {"?", "UNIGRAM", "BPE", "WORD", "CHAR"};
    if (model_type != 2)
        throw Error(where + ": model type " +
                    (model_type >= 1 && model_type <= 4 ? kTypeNames[model_type] : std::to_string(model_type)) +
                    " is not supported (only BPE)");
    if (precompiled)
        throw Error(where + ": normalization rule '" + (norm_name.empty() ? std::string("custom") : norm_name) +
                    "' is not supported (only identity)");
    if (treat_ws_as_suffix) throw Error(where + ": treat_whitespace_as_suffix is not supported");

    // <unk> decodes as " ⁇ " (the default unk_surface; llama2.c's tok512.model stores that field escaped).
    // As libsentencepiece: bos/eos are the control pieces named by the trainer spec, unk the UNKNOWN piece.
    int32_t bos = -1, eos = -1, unk = -1;
    for (size_t i = 0; i < pieces.size(); ++i) {
        const auto id = static_cast<int32_t>(i);
        if (types[i] == 3 && pieces[i] == bos_piece && bos < 0) bos = id;
        if (types[i] == 3 && pieces[i] == eos_piece && eos < 0) eos = id;
        if (types[i] == 2 && unk < 0) unk = id;
    }
    return detail::make_score_bpe_tokenizer(std::move(pieces), std::move(scores), std::move(types), bos, eos, unk,
                                            opt);
}

}  // namespace cushion
