// Tokenizers: score-merge BPE (tok512.bin, GGUF vocab, tok512.model) against spm_encode (SentencePiece),
// broken files, byte-level BPE by hand. The comparisons with the reference libraries (Hugging Face tokenizers,
// the sentencepiece Python binding) are the `reference` tests: tests/tokenizer/*_check.py.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <random>
#include <sstream>
#include <tuple>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "test_support.h"
#include "tokenizer/tokenizer.h"

namespace {
using cushion::Error;
using cushion::Tokenizer;
using nlohmann::json;
namespace t = cushion::test;

std::string read_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    EXPECT_TRUE(f) << "cannot open " << path;
    return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}
void write_file(const std::string& path, const std::string& data) {
    std::ofstream f(path, std::ios::binary);
    f << data;
}
std::vector<std::string> read_lines(const std::string& path) {
    std::vector<std::string> out;
    std::ifstream f(path);
    EXPECT_TRUE(f) << "cannot open " << path;
    for (std::string line; std::getline(f, line);)
        if (!line.empty()) out.push_back(line);
    return out;
}
std::vector<std::string> text_lines() {
    auto a = read_lines(t::calib_text());
    auto b = read_lines(t::eval_text());
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

// --- A minimal GGUF metadata reader (independent of the engine's loader): the tokenizer arrays only. ---
struct GgufVocab {
    std::vector<std::string> tokens;
    std::vector<float> scores;
    std::vector<int32_t> types;
    int64_t bos = -1, eos = -1, unk = -1;
};
GgufVocab read_gguf_vocab(const std::string& path) {
    const std::string d = read_file(path);
    size_t o = 0;
    auto need = [&](size_t n) {
        if (d.size() - o < n) throw std::runtime_error("gguf truncated");
    };
    auto u32 = [&] { need(4); uint32_t v; std::memcpy(&v, d.data() + o, 4); o += 4; return v; };
    auto u64 = [&] { need(8); uint64_t v; std::memcpy(&v, d.data() + o, 8); o += 8; return v; };
    auto str = [&] { uint64_t n = u64(); need(n); std::string s = d.substr(o, n); o += n; return s; };
    static const size_t scalar_size[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    GgufVocab v;
    if (d.compare(0, 4, "GGUF") != 0) throw std::runtime_error("not gguf");
    o = 4;
    u32();  // version
    u64();  // tensor count
    const uint64_t nkv = u64();
    for (uint64_t i = 0; i < nkv; ++i) {
        const std::string key = str();
        const uint32_t type = u32();
        if (type == 8) {
            str();
        } else if (type == 9) {
            const uint32_t et = u32();
            const uint64_t n = u64();
            for (uint64_t k = 0; k < n; ++k) {
                if (et == 8) {
                    std::string s = str();
                    if (key == "tokenizer.ggml.tokens") v.tokens.push_back(s);
                } else {
                    need(scalar_size[et]);
                    if (key == "tokenizer.ggml.scores") { float f; std::memcpy(&f, d.data() + o, 4); v.scores.push_back(f); }
                    if (key == "tokenizer.ggml.token_type") { int32_t x; std::memcpy(&x, d.data() + o, 4); v.types.push_back(x); }
                    o += scalar_size[et];
                }
            }
        } else {
            need(scalar_size[type]);
            int64_t val = 0;
            if (type == 4 || type == 5) { int32_t x; std::memcpy(&x, d.data() + o, 4); val = x; }
            if (key == "tokenizer.ggml.bos_token_id") v.bos = val;
            if (key == "tokenizer.ggml.eos_token_id") v.eos = val;
            if (key == "tokenizer.ggml.unknown_token_id") v.unk = val;
            o += scalar_size[type];
        }
    }
    return v;
}

std::unique_ptr<Tokenizer> gguf_tokenizer() {
    GgufVocab v = read_gguf_vocab(t::stories_gguf());
    return cushion::make_score_bpe_tokenizer(v.tokens, v.scores, v.types, static_cast<int32_t>(v.bos),
                                             static_cast<int32_t>(v.eos), static_cast<int32_t>(v.unk));
}

// --- The reference: Debian's spm_encode (package `sentencepiece`), run as a separate process. Linking
// libsentencepiece into a process with libtorch crashes (its bundled protobuf clashes with torch's), and a
// separate program is the more independent reference anyway. tok512.model has remove_extra_whitespaces =
// true (drops leading/trailing spaces, collapses runs); llama2.c, llama.cpp and the score BPE keep spaces as
// written, so they are compared with a copy of the model with that flag cleared. ---
uint64_t varint(const std::string& b, size_t& o) {
    uint64_t r = 0;
    for (int s = 0; o < b.size(); s += 7) {
        const uint8_t c = static_cast<uint8_t>(b[o++]);
        r |= uint64_t(c & 0x7F) << s;
        if (c < 0x80) break;
    }
    return r;
}
// Sets the one-byte varint field `inner` of the top-level message field `outer` to `value`, in place.
std::string patch_proto(std::string proto, uint32_t outer, uint32_t inner, uint8_t value) {
    size_t o = 0;
    while (o < proto.size()) {
        const uint64_t key = varint(proto, o);
        const int wire = key & 7;
        if (wire == 0) varint(proto, o);
        else if (wire == 5) o += 4;
        else if (wire == 1) o += 8;
        else if (wire == 2) {
            const uint64_t n = varint(proto, o);
            if ((key >> 3) == outer) {
                size_t p = o;
                while (p < o + n) {
                    const uint64_t k = varint(proto, p);
                    if (k == ((uint64_t(inner) << 3) | 0)) {
                        proto[p] = static_cast<char>(value);  // a one-byte varint stays one byte
                        return proto;
                    }
                    if ((k & 7) == 0) varint(proto, p);
                    else if ((k & 7) == 2) p += varint(proto, p);
                    else if ((k & 7) == 5) p += 4;
                    else p += 8;
                }
            }
            o += n;
        } else {
            break;
        }
    }
    ADD_FAILURE() << "field " << outer << "." << inner << " not found in the model";
    return proto;
}
// Builds a small SentencePiece ModelProto by hand.
std::string pb_varint(uint64_t v) {
    std::string s;
    do {
        uint8_t c = v & 0x7F;
        v >>= 7;
        s += static_cast<char>(v ? (c | 0x80) : c);
    } while (v);
    return s;
}
std::string pb_uint(uint32_t field, uint64_t v) { return pb_varint(field << 3) + pb_varint(v); }
std::string pb_bytes(uint32_t field, const std::string& b) { return pb_varint((field << 3) | 2) + pb_varint(b.size()) + b; }
std::string pb_float(uint32_t field, float f) {
    std::string s = pb_varint((field << 3) | 5);
    s.append(reinterpret_cast<const char*>(&f), 4);
    return s;
}
struct SpPiece {
    std::string piece;
    float score;
    int type;
};
std::string make_model_proto(const std::vector<SpPiece>& pieces, int model_type, bool remove_extra_ws,
                             const std::string& charsmap = "") {
    std::string m;
    for (const auto& p : pieces) m += pb_bytes(1, pb_bytes(1, p.piece) + pb_float(2, p.score) + pb_uint(3, p.type));
    m += pb_bytes(2, pb_uint(3, model_type) + pb_uint(35, 1) + pb_uint(40, 0) + pb_uint(41, 1) + pb_uint(42, 2));
    m += pb_bytes(3, pb_bytes(1, "identity") + (charsmap.empty() ? "" : pb_bytes(2, charsmap)) + pb_uint(3, 1) +
                         pb_uint(4, remove_extra_ws ? 1 : 0) + pb_uint(5, 1));
    return m;
}

bool have_spm_encode() { return t::run_command("command -v spm_encode >/dev/null 2>&1") == 0; }

// spm_encode's ids for each string (one per line, so no '\n' in them), with <s> prepended when bos.
std::map<std::string, std::vector<int32_t>> spm_encode(const std::string& model, const std::vector<std::string>& texts,
                                                       bool bos) {
    std::map<std::string, std::vector<int32_t>> out;
    const std::string dir = t::temp_dir("spm");
    std::string input;
    for (const auto& s : texts) {
        EXPECT_EQ(s.find_first_of("\r\n"), std::string::npos) << "spm_encode reads lines: " << s;
        input += s + "\n";
    }
    write_file(dir + "/in.txt", input);
    std::string stdout_text;
    const int rc = t::run_command("spm_encode --model='" + model + "' --output_format=id --input='" + dir +
                                      "/in.txt' 2>/dev/null",
                                  &stdout_text);
    EXPECT_EQ(rc, 0) << "spm_encode failed on " << model;
    std::istringstream lines(stdout_text);
    std::string line;
    for (const auto& s : texts) {
        if (!std::getline(lines, line)) {
            ADD_FAILURE() << "spm_encode gave fewer lines than inputs";
            break;
        }
        std::vector<int32_t> ids;
        if (bos) ids.push_back(1);
        std::istringstream ls(line);
        for (int32_t id; ls >> id;) ids.push_back(id);
        out[s] = ids;
    }
    return out;
}

// Text that SentencePiece's remove_extra_whitespaces changes ("▁" in the text counts as a space).
bool has_extra_whitespace(const std::string& s) {
    return s.find("▁") != std::string::npos ||
           (!s.empty() && (s.front() == ' ' || s.back() == ' ' || s.find("  ") != std::string::npos));
}
bool has_newline(const std::string& s) { return s.find_first_of("\r\n") != std::string::npos; }

const std::vector<std::string> kEdgeCases = {
    "", " ", "  ", "a", "hello", " hello", "hello ", "hello  world", "   leading", "trailing   ", "a   b    c",
    "\n", "a\nb", "line one\n\nline two\n", "\t", "tab\tsep", " \t ", "\r\n", "é", "café", "naïve résumé", "日本",
    "日本語のテキスト", "😀", "emoji 😀 end", "🇫🇷", "Ünïcödé ñ", "\xC2\xA0nbsp", "it's", "\"Quoted,\" she said.",
    "1234567890", "x", "<s>", "</s>", "<unk>", "<0x41>", "▁", "▁▁ mixed ▁", "Once upon a time, there was a cat.",
    "Ж", "  Lily  and  Tom  ", "a b c d e f g", "...!!!", "\xE2\x80\x8A hair space",
};

class TokenizerScoreBpe : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        bin_ = cushion::load_llama2c_tokenizer(t::stories_tok_bin(), 512).release();
        gguf_ = gguf_tokenizer().release();
        model_ = cushion::load_sentencepiece_tokenizer(t::stories_tok_model()).release();
        if (!have_spm_encode()) return;
        std::vector<std::string> all = text_lines();
        for (const auto& s : kEdgeCases)
            if (!has_newline(s)) all.push_back(s);
        stock_ = new std::map<std::string, std::vector<int32_t>>(spm_encode(t::stories_tok_model(), all, true));
        // The same model with remove_extra_whitespaces = false.
        dir_ = new std::string(t::temp_dir("tokref"));
        write_file(*dir_ + "/verbatim.model", patch_proto(read_file(t::stories_tok_model()), 3, 4, 0));
        verbatim_ = new std::map<std::string, std::vector<int32_t>>(spm_encode(*dir_ + "/verbatim.model", all, true));
    }
    static void TearDownTestSuite() {
        delete bin_;
        delete gguf_;
        delete model_;
        delete stock_;
        delete verbatim_;
        delete dir_;
        bin_ = gguf_ = model_ = nullptr;
        stock_ = verbatim_ = nullptr;
        dir_ = nullptr;
    }
    void SetUp() override {
        ASSERT_TRUE(bin_ && gguf_ && model_);
    }
    static void need_spm() {
        if (!stock_) GTEST_SKIP() << "spm_encode not found (Debian package `sentencepiece`): no reference ids";
    }
    static Tokenizer* bin_;
    static Tokenizer* gguf_;
    static Tokenizer* model_;
    static std::map<std::string, std::vector<int32_t>>* stock_;
    static std::map<std::string, std::vector<int32_t>>* verbatim_;
    static std::string* dir_;
};
Tokenizer* TokenizerScoreBpe::bin_ = nullptr;
Tokenizer* TokenizerScoreBpe::gguf_ = nullptr;
Tokenizer* TokenizerScoreBpe::model_ = nullptr;
std::map<std::string, std::vector<int32_t>>* TokenizerScoreBpe::stock_ = nullptr;
std::map<std::string, std::vector<int32_t>>* TokenizerScoreBpe::verbatim_ = nullptr;
std::string* TokenizerScoreBpe::dir_ = nullptr;

TEST_F(TokenizerScoreBpe, BasicProperties) {
    for (const Tokenizer* tok : {bin_, gguf_, model_}) {
        EXPECT_EQ(tok->vocab_size(), 512);
        EXPECT_EQ(tok->bos_id(), 1);
        EXPECT_EQ(tok->eos_id(), 2);
        EXPECT_EQ(tok->piece(1), "<s>");
        EXPECT_EQ(tok->piece(2), "</s>");
        EXPECT_EQ(tok->piece(13), "<0x0A>");
        EXPECT_EQ(tok->piece(265), "▁the");
        EXPECT_EQ(tok->piece(-1), "");
        EXPECT_EQ(tok->piece(512), "");
        EXPECT_TRUE(tok->is_special(0));
        EXPECT_TRUE(tok->is_special(1));
        EXPECT_TRUE(tok->is_special(2));
        EXPECT_FALSE(tok->is_special(13));
        EXPECT_FALSE(tok->is_special(265));
        EXPECT_EQ(tok->decode_token(1, 13), "\n");      // byte token
        EXPECT_EQ(tok->decode_token(1, 265), "the");     // leading space dropped after <bos>
        EXPECT_EQ(tok->decode_token(265, 265), " the");
        EXPECT_EQ(tok->decode_token(265, 1), "");        // control tokens print nothing
        EXPECT_EQ(tok->decode_token(265, 0), " \xE2\x81\x87 ");  // <unk> as SentencePiece shows it
        EXPECT_EQ(tok->decode_token(265, 9999), "");     // out of range: nothing, no crash
        EXPECT_EQ(tok->decode_token(265, -5), "");
    }
    EXPECT_EQ(bin_->kind(), "spm-bpe");
    EXPECT_EQ(gguf_->kind(), "spm-bpe");
    EXPECT_EQ(model_->kind(), "sentencepiece");
    for (int32_t id = 0; id < 512; ++id) {
        EXPECT_EQ(bin_->piece(id), gguf_->piece(id)) << id;
        EXPECT_EQ(bin_->piece(id), model_->piece(id)) << id;
        EXPECT_EQ(bin_->is_special(id), gguf_->is_special(id)) << id;
        EXPECT_EQ(bin_->is_special(id), model_->is_special(id)) << id;
    }
}

TEST_F(TokenizerScoreBpe, MatchesSentencePieceOnTexts) {
    need_spm();
    const auto lines = text_lines();
    ASSERT_GE(lines.size(), 10u);
    for (const auto& line : lines) {
        const auto& want = stock_->at(line);
        EXPECT_EQ(bin_->encode(line, true), want) << line;
        EXPECT_EQ(gguf_->encode(line, true), want) << line;
        EXPECT_EQ(model_->encode(line, true), want) << line;
        EXPECT_EQ(bin_->encode(line, false), std::vector<int32_t>(want.begin() + 1, want.end())) << line;
    }
}

TEST_F(TokenizerScoreBpe, MatchesSentencePieceOnEdgeCases) {
    need_spm();
    for (const auto& s : kEdgeCases) {
        if (has_newline(s)) continue;  // spm_encode reads lines; see NewlinesAndByteFallback
        // Exactly SentencePiece's algorithm with the whitespace kept as written.
        EXPECT_EQ(bin_->encode(s, true), verbatim_->at(s)) << "'" << s << "'";
        EXPECT_EQ(gguf_->encode(s, true), verbatim_->at(s)) << "'" << s << "'";
        // tokenizer.model applies the model's whitespace normalization, as libsentencepiece does.
        EXPECT_EQ(model_->encode(s, true), stock_->at(s)) << "'" << s << "'";
        // The stock model and the score BPE agree wherever that normalization changes nothing.
        if (!has_extra_whitespace(s)) {
            EXPECT_EQ(bin_->encode(s, true), stock_->at(s)) << "'" << s << "'";
        }
    }
}

TEST_F(TokenizerScoreBpe, RoundTrip) {
    auto texts = text_lines();
    texts.insert(texts.end(), kEdgeCases.begin(), kEdgeCases.end());
    for (const auto& s : texts) {
        if (s.find("▁") != std::string::npos) continue;  // a literal "▁" decodes as a space
        for (const Tokenizer* tok : {bin_, gguf_}) {
            EXPECT_EQ(tok->decode(tok->encode(s, true)), s) << "'" << s << "'";
            EXPECT_EQ(tok->decode(tok->encode(s, false)), s) << "'" << s << "'";
        }
        if (!has_extra_whitespace(s)) {
            EXPECT_EQ(model_->decode(model_->encode(s, true)), s) << "'" << s << "'";
        }
    }
}

TEST_F(TokenizerScoreBpe, NewlinesAndByteFallback) {
    EXPECT_EQ(bin_->encode("", true), std::vector<int32_t>{1});
    EXPECT_TRUE(bin_->encode("", false).empty());
    // No piece contains '\n': it is always the byte token <0x0A> (13), and nothing merges across it.
    for (int32_t id = 0; id < 512; ++id)
        if (bin_->piece(id) != "<0x0A>") {
            EXPECT_EQ(bin_->piece(id).find('\n'), std::string::npos);
        }
    EXPECT_EQ(bin_->encode("\n", true), (std::vector<int32_t>{1, 410, 13}));  // "▁", <0x0A>
    std::vector<int32_t> ab = bin_->encode("a", false);  // "▁a", then <0x0A>, then "b" without a prefix
    ab.push_back(13);
    int32_t b_id = -1;
    for (int32_t id = 0; id < 512; ++id)
        if (bin_->piece(id) == "b") b_id = id;
    ASSERT_GE(b_id, 0);
    ab.push_back(b_id);
    EXPECT_EQ(bin_->encode("a\nb", false), ab);
    // "日本": not in the 512 vocabulary -> "▁" then six byte tokens <0xE6><0x97><0xA5><0xE6><0x9C><0xAC>.
    const std::vector<int32_t> nihon = {1, 410, 0xE6 + 3, 0x97 + 3, 0xA5 + 3, 0xE6 + 3, 0x9C + 3, 0xAC + 3};
    EXPECT_EQ(bin_->encode("日本", true), nihon);
    // An emoji: four byte tokens.
    const auto emoji = bin_->encode("😀", false);
    ASSERT_EQ(emoji.size(), 5u);
    for (size_t i = 1; i < 5; ++i) {
        EXPECT_EQ(bin_->piece(emoji[i]).substr(0, 3), "<0x");
    }
    // "é" is a piece of its own.
    EXPECT_EQ(bin_->piece(bin_->encode("é", false).back()), "é");
    // Spaces are kept: "a  b" has one more "▁" than "a b"; tokenizer.model collapses them.
    EXPECT_EQ(bin_->encode("a  b", false).size(), bin_->encode("a b", false).size() + 1);
    EXPECT_EQ(model_->encode("  a  b ", false), bin_->encode("a b", false));
    EXPECT_TRUE(model_->encode("   ", true) == std::vector<int32_t>{1});
    // Invalid UTF-8 goes through byte fallback and comes back unchanged.
    const std::string bad = "ok\xFF\xC3 end\x80";
    EXPECT_EQ(bin_->decode(bin_->encode(bad, true)), bad);
}

TEST_F(TokenizerScoreBpe, ConstructionErrors) {
    EXPECT_THROW(cushion::make_score_bpe_tokenizer({}, {}, {}, -1, -1, -1), Error);
    EXPECT_THROW(cushion::make_score_bpe_tokenizer({"a", "b"}, {0.f}, {}, -1, -1, -1), Error);
    EXPECT_THROW(cushion::make_score_bpe_tokenizer({"a", "b"}, {0.f, 0.f}, {1}, -1, -1, -1), Error);
    EXPECT_THROW(cushion::make_score_bpe_tokenizer({"a", "b"}, {0.f, 0.f}, {}, 5, -1, -1), Error);
    // A tiny vocabulary without byte tokens: unknown characters become <unk>; NaN scores do not crash.
    auto tok = cushion::make_score_bpe_tokenizer({"<unk>", "▁", "a", "b", "▁a", "ab"},
                                                 {0.f, -1.f, -2.f, -3.f, NAN, 5.f}, {}, -1, -1, 0);
    EXPECT_EQ(tok->encode("ab", false), (std::vector<int32_t>{1, 5}));
    EXPECT_EQ(tok->encode("ax", false), (std::vector<int32_t>{4, 0}));
    EXPECT_EQ(tok->bos_id(), -1);
    EXPECT_EQ(tok->encode("a", true), (std::vector<int32_t>{4}));
}

// --- llama2.c tokenizer.bin validation ---
class TokenizerLlama2cFile : public ::testing::Test {
protected:
    void SetUp() override {
        dir_ = t::temp_dir("tok");
        good_ = read_file(t::stories_tok_bin());
    }
    std::string write(const std::string& name, const std::string& data) {
        std::string p = dir_ + "/" + name;
        write_file(p, data);
        return p;
    }
    static void set_i32(std::string& d, size_t off, int32_t v) { std::memcpy(&d[off], &v, 4); }
    // Offset of token i's record (score) in tok512.bin.
    size_t token_offset(int i) const {
        size_t o = 4;
        for (int k = 0; k < i; ++k) {
            int32_t len;
            std::memcpy(&len, good_.data() + o + 4, 4);
            o += 8 + len;
        }
        return o;
    }
    std::string dir_, good_;
};

void expect_error_mentions(const std::function<void()>& f, const std::vector<std::string>& words) {
    try {
        f();
        ADD_FAILURE() << "no cushion::Error thrown";
    } catch (const Error& e) {
        for (const auto& w : words) {
            EXPECT_NE(std::string(e.what()).find(w), std::string::npos) << e.what() << " / " << w;
        }
    }
}

TEST_F(TokenizerLlama2cFile, Truncated) {
    for (size_t n : {size_t(0), size_t(3), size_t(4), size_t(10), good_.size() / 2, good_.size() - 1}) {
        const std::string p = write("trunc" + std::to_string(n) + ".bin", good_.substr(0, n));
        EXPECT_THROW(cushion::load_llama2c_tokenizer(p, 512), Error) << n;
    }
    // Every truncation point is an error, never a crash.
    for (size_t n = 0; n < good_.size(); n += 97) {
        const std::string p = write("t.bin", good_.substr(0, n));
        EXPECT_THROW(cushion::load_llama2c_tokenizer(p, 512), Error) << n;
    }
    const std::string p = write("half.bin", good_.substr(0, token_offset(300) + 3));
    expect_error_mentions([&] { cushion::load_llama2c_tokenizer(p, 512); }, {p, "token 300", "truncated"});
}

TEST_F(TokenizerLlama2cFile, BadLengths) {
    std::string huge = good_;
    set_i32(huge, token_offset(37) + 4, 0x7FFFFFF0);
    const std::string ph = write("huge.bin", huge);
    expect_error_mentions([&] { cushion::load_llama2c_tokenizer(ph, 512); }, {ph, "token 37"});

    std::string neg = good_;
    set_i32(neg, token_offset(5) + 4, -3);
    const std::string pn = write("neg.bin", neg);
    expect_error_mentions([&] { cushion::load_llama2c_tokenizer(pn, 512); }, {pn, "token 5", "-3"});

    std::string maxlen = good_;
    set_i32(maxlen, 0, -1);
    const std::string pm = write("maxlen.bin", maxlen);
    expect_error_mentions([&] { cushion::load_llama2c_tokenizer(pm, 512); }, {pm, "max_token_length"});

    // A piece longer than the header's max_token_length.
    std::string longer = good_;
    set_i32(longer, 0, 2);
    EXPECT_THROW(cushion::load_llama2c_tokenizer(write("long.bin", longer), 512), Error);

    EXPECT_THROW(cushion::load_llama2c_tokenizer(t::stories_tok_bin(), 0), Error);
    EXPECT_THROW(cushion::load_llama2c_tokenizer(t::stories_tok_bin(), 100000), Error);
    expect_error_mentions([&] { cushion::load_llama2c_tokenizer(dir_ + "/missing.bin", 512); }, {"missing.bin"});
    // A smaller vocab_size reads a prefix; that is what llama2.c does too.
    EXPECT_EQ(cushion::load_llama2c_tokenizer(t::stories_tok_bin(), 300)->vocab_size(), 300);
}

// --- tokenizer.model reader ---
TEST(TokenizerSentencePiece, LoadErrors) {
    const std::string dir = t::temp_dir("tokspm");
    expect_error_mentions([&] { cushion::load_sentencepiece_tokenizer(dir + "/nope.model"); }, {"nope.model"});
    write_file(dir + "/garbage.model", "this is not a protobuf \x01\x02\x03");
    expect_error_mentions([&] { cushion::load_sentencepiece_tokenizer(dir + "/garbage.model"); }, {"garbage.model"});
    write_file(dir + "/empty.model", "");
    EXPECT_THROW(cushion::load_sentencepiece_tokenizer(dir + "/empty.model"), Error);
    // Every truncation of tok512.model is an error or (cut exactly between fields) a smaller model; never a crash.
    const std::string good = read_file(t::stories_tok_model());
    for (size_t n = 0; n < good.size(); n += 37) {
        write_file(dir + "/cut.model", good.substr(0, n));
        try {
            auto tok = cushion::load_sentencepiece_tokenizer(dir + "/cut.model");
            tok->encode("Once upon a time", true);
        } catch (const Error&) {
        }
    }
    write_file(dir + "/cut.model", good.substr(0, 1000));
    EXPECT_THROW(cushion::load_sentencepiece_tokenizer(dir + "/cut.model"), Error);
    // A unigram model (tok512.model with trainer_spec.model_type = UNIGRAM).
    write_file(dir + "/unigram.model", patch_proto(good, 2, 3, 1));
    expect_error_mentions([&] { cushion::load_sentencepiece_tokenizer(dir + "/unigram.model"); },
                          {"unigram.model", "UNIGRAM"});
    // An NFKC-style normalizer (a precompiled charsmap).
    const std::vector<SpPiece> pieces = {{"<unk>", 0, 2}, {"<s>", 0, 3}, {"</s>", 0, 3}, {"▁", -1, 1}, {"a", -2, 1}};
    write_file(dir + "/nfkc.model", make_model_proto(pieces, 2, true, "charsmap"));
    expect_error_mentions([&] { cushion::load_sentencepiece_tokenizer(dir + "/nfkc.model"); }, {"nfkc.model", "normalization"});
}

// A hand-made model with a user-defined symbol, checked against spm_encode.
TEST(TokenizerSentencePiece, UserDefinedPiecesMatchSpmEncode) {
    std::vector<SpPiece> pieces = {{"<unk>", 0, 2}, {"<s>", 0, 3}, {"</s>", 0, 3}, {"<sep>", 0, 4}};
    for (int b = 0; b < 256; ++b) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "<0x%02X>", b);
        pieces.push_back({buf, 0, 6});
    }
    const std::vector<std::string> normal = {"▁a", "ab", "▁ab", "bc", "▁", "a", "b", "c", "s", "e", "p", "<", ">"};
    for (size_t i = 0; i < normal.size(); ++i) pieces.push_back({normal[i], -static_cast<float>(i), 1});
    const std::string dir = t::temp_dir("tokud");
    for (bool remove_ws : {true, false}) {
        const std::string model = dir + (remove_ws ? "/ud1.model" : "/ud0.model");
        write_file(model, make_model_proto(pieces, 2, remove_ws));
        auto tok = cushion::load_sentencepiece_tokenizer(model);
        EXPECT_EQ(tok->bos_id(), 1);
        EXPECT_EQ(tok->eos_id(), 2);
        const std::vector<std::string> texts = {"abc", "a<sep>bc", "<sep>", " <sep> ab ", "ab<sep><sep>c", "<se", "x<sep>y",
                                                "  abc  ab", "é", ""};
        const auto with_sep = tok->encode("a<sep>bc", false);
        EXPECT_NE(std::find(with_sep.begin(), with_sep.end(), 3), with_sep.end());  // <sep> kept whole
        if (!have_spm_encode()) continue;
        const auto ref = spm_encode(model, texts, false);
        for (const auto& s : texts) {
            EXPECT_EQ(tok->encode(s, false), ref.at(s)) << "'" << s << "' remove_ws=" << remove_ws;
        }
    }
}

// --- byte-level BPE by hand ---
// Byte-level strings: ' ' is "Ġ" (U+0120), '\n' is "Ċ" (U+010A).
std::string tiny_tokenizer_json(const std::string& pre_tokenizer, const json& merges) {
    json j;
    j["version"] = "1.0";
    j["added_tokens"] = json::array({{{"id", 9}, {"content", "<|endoftext|>"}, {"special", true}}});
    j["normalizer"] = nullptr;
    j["pre_tokenizer"] = json::parse(pre_tokenizer);
    j["post_processor"] = nullptr;
    j["decoder"] = {{"type", "ByteLevel"}};
    j["model"] = {{"type", "BPE"},
                  {"vocab", {{"h", 0}, {"e", 1}, {"l", 2}, {"o", 3}, {"Ġ", 4}, {"1", 5}, {"he", 6}, {"ll", 7},
                             {"hell", 8}, {"<|endoftext|>", 9}, {"oĠ", 10}, {"Ġ1", 11}}},
                  {"merges", merges}};
    return j.dump();
}
const char* kGpt2Pre = R"({"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true})";

// Sequences nested deeper than the reader allows are refused with the file named (40,000 deep crashed the process
// with a stack overflow, nothing on stderr); a few levels are read as the flat list they stand for.
TEST(TokenizerByteBpe, DeeplyNestedSequencesAreRefusedNotACrash) {
    const std::string dir = t::temp_dir("tokdeep");
    const json merges = json::array({"h e", "l l", "he ll", "o Ġ", "Ġ 1"});
    // Built as text: nlohmann::json would itself recurse once per level to copy or dump such a document.
    auto nested = [&](int depth) {
        std::string pre;
        for (int i = 0; i < depth; ++i) pre += R"({"type":"Sequence","pretokenizers":[)";
        pre += kGpt2Pre;
        for (int i = 0; i < depth; ++i) pre += "]}";
        std::string text = tiny_tokenizer_json(R"({"type":"SENTINEL"})", merges);
        const std::string sentinel = R"({"type":"SENTINEL"})";
        return text.replace(text.find(sentinel), sentinel.size(), pre);
    };
    write_file(dir + "/three.json", nested(3));
    EXPECT_EQ(cushion::load_tokenizer_json(dir + "/three.json")->encode("hello hello", false),
              (std::vector<int32_t>{8, 3, 4, 8, 3}));
    for (int depth : {65, 40000}) {
        const std::string path = dir + "/deep" + std::to_string(depth) + ".json";
        write_file(path, nested(depth));
        const std::string e = t::error_of([&] { cushion::load_tokenizer_json(path); });
        EXPECT_NE(e.find("JSON nested more than 128 levels deep"), std::string::npos) << e;
        EXPECT_NE(e.find(path), std::string::npos) << e;
    }
}

TEST(TokenizerByteBpe, HandMadeVocabulary) {
    const std::string dir = t::temp_dir("tokbb");
    // "o Ġ" and "Ġ 1" would cross pre-token boundaries for some split patterns.
    const json merges = json::array({"h e", "l l", "he ll", "o Ġ", "Ġ 1"});
    write_file(dir + "/gpt2.json", tiny_tokenizer_json(kGpt2Pre, merges));
    auto tok = cushion::load_tokenizer_json(dir + "/gpt2.json");
    EXPECT_EQ(tok->kind(), "byte-bpe");
    EXPECT_EQ(tok->vocab_size(), 12);
    EXPECT_EQ(tok->bos_id(), 9);  // <|endoftext|> doubles as bos and eos, as in GPT-2
    EXPECT_EQ(tok->eos_id(), 9);
    EXPECT_TRUE(tok->is_special(9));
    EXPECT_FALSE(tok->is_special(8));
    EXPECT_EQ(tok->encode("hello", false), (std::vector<int32_t>{8, 3}));
    // "hello hello": pre-tokens "hello", " hello"; "o Ġ" must not merge across them.
    EXPECT_EQ(tok->encode("hello hello", false), (std::vector<int32_t>{8, 3, 4, 8, 3}));
    // GPT-2 split keeps " 1" together, so "Ġ 1" merges.
    EXPECT_EQ(tok->encode("o 1", false), (std::vector<int32_t>{3, 11}));
    EXPECT_EQ(tok->encode("<|endoftext|>hello<|endoftext|>", true), (std::vector<int32_t>{9, 9, 8, 3, 9}));
    EXPECT_EQ(tok->decode({9, 8, 3, 4, 8, 3}), "hello hello");
    EXPECT_EQ(tok->decode_token(-1, 10), "o ");
    EXPECT_EQ(tok->piece(4), "Ġ");
    // Bytes missing from this toy vocabulary (no <unk>) are dropped, not a crash.
    EXPECT_EQ(tok->encode("hex", false), (std::vector<int32_t>{6}));
    EXPECT_TRUE(tok->encode("", false).empty());

    // Merges as [a, b] pairs give the same.
    json pairs = json::array();
    for (const auto& m : merges) {
        const std::string s = m;
        pairs.push_back({s.substr(0, s.find(' ')), s.substr(s.find(' ') + 1)});
    }
    write_file(dir + "/pairs.json", tiny_tokenizer_json(kGpt2Pre, pairs));
    EXPECT_EQ(cushion::load_tokenizer_json(dir + "/pairs.json")->encode("hello hello o 1", false),
              tok->encode("hello hello o 1", false));

    // Llama 3 split: " 1" is " " + "1" (numbers take no leading space), so "Ġ 1" does not merge.
    const std::string llama3_pre =
        json({{"type", "Sequence"},
              {"pretokenizers",
               {{{"type", "Split"},
                 {"pattern",
                  {{"Regex", R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"}}},
                 {"behavior", "Isolated"},
                 {"invert", false}},
                {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}})
            .dump();
    write_file(dir + "/llama3.json", tiny_tokenizer_json(llama3_pre, merges));
    auto l3 = cushion::load_tokenizer_json(dir + "/llama3.json");
    EXPECT_EQ(l3->encode("o 1", false), (std::vector<int32_t>{3, 4, 5}));
    EXPECT_EQ(l3->encode("hello hello", false), (std::vector<int32_t>{8, 3, 4, 8, 3}));

    // The GGUF path: tokens by id plus "a b" merges.
    std::vector<std::string> tokens = {"h", "e", "l", "o", "Ġ", "1", "he", "ll", "hell", "<|endoftext|>", "oĠ", "Ġ1"};
    std::vector<std::string> mstr = {"h e", "l l", "he ll", "o Ġ", "Ġ 1"};
    auto g = cushion::make_byte_bpe_tokenizer(tokens, mstr, "gpt2", 9, 9);
    EXPECT_EQ(g->encode("<|endoftext|>hello hello o 1", false), tok->encode("<|endoftext|>hello hello o 1", false));
    EXPECT_TRUE(g->is_special(9));
    auto gl = cushion::make_byte_bpe_tokenizer(tokens, mstr, "llama-bpe", 9, 9);
    EXPECT_EQ(gl->encode("o 1", false), (std::vector<int32_t>{3, 4, 5}));
    std::vector<int32_t> types(tokens.size(), 1);
    types[9] = 3;
    auto gt = cushion::make_byte_bpe_tokenizer(tokens, mstr, "qwen2", -1, 9, types);
    EXPECT_EQ(gt->bos_id(), -1);
    EXPECT_EQ(gt->encode("<|endoftext|>hello", true), (std::vector<int32_t>{9, 8, 3}));
    EXPECT_THROW(cushion::make_byte_bpe_tokenizer(tokens, mstr, "bloom", 9, 9), Error);
    EXPECT_THROW(cushion::make_byte_bpe_tokenizer(tokens, {"nospace"}, "gpt2", 9, 9), Error);
    EXPECT_THROW(cushion::make_byte_bpe_tokenizer(tokens, mstr, "gpt2", 99, 9), Error);
    EXPECT_THROW(cushion::make_byte_bpe_tokenizer(tokens, mstr, "gpt2", 9, 9, {1, 2}), Error);
}

TEST(TokenizerByteBpe, JsonErrors) {
    const std::string dir = t::temp_dir("tokjson");
    auto fails = [&](const std::string& name, const std::string& content, std::vector<std::string> words) {
        write_file(dir + "/" + name, content);
        words.push_back(name);
        expect_error_mentions([&] { cushion::load_tokenizer_json(dir + "/" + name); }, words);
    };
    fails("wordpiece.json", R"({"model":{"type":"WordPiece","vocab":{"a":0}}})", {"WordPiece"});
    fails("unigram.json", R"({"model":{"type":"Unigram","vocab":[["a",0.0]]}})", {"Unigram"});
    fails("broken.json", R"({"model":{"type":"BPE", )", {"JSON"});
    fails("nomodel.json", R"({"version":"1.0"})", {"model"});
    fails("badid.json", R"({"model":{"type":"BPE","vocab":{"a":-4},"merges":[]},"pre_tokenizer":{"type":"ByteLevel"}})", {"-4"});
    fails("badmerge.json", R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[7]},"pre_tokenizer":{"type":"ByteLevel"}})", {"merge 0"});
    fails("regex.json", R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"pre_tokenizer":{"type":"Split","pattern":{"Regex":"\\d+"},"behavior":"Isolated","invert":false}})", {"regex"});
    fails("bert.json", R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"pre_tokenizer":{"type":"BertPreTokenizer"}})", {"BertPreTokenizer"});
    fails("nopre.json", R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[]}})", {"not supported"});
    fails("typo.json", R"({"model":{"type":"BPE","vocab":{"a":"zero"},"merges":[]},"pre_tokenizer":{"type":"ByteLevel"}})", {"zero"});
    expect_error_mentions([&] { cushion::load_tokenizer_json(dir + "/absent.json"); }, {"absent.json"});
}

// A SentencePiece-style tokenizer.json (as HF converts Llama 2's): tok512's pieces, merges in score order.
TEST(TokenizerByteBpe, MetaspaceJsonRoutesToScoreBpe) {
    GgufVocab v = read_gguf_vocab(t::stories_gguf());
    json vocab = json::object();
    std::map<std::string, int32_t> normal;
    for (size_t i = 0; i < v.tokens.size(); ++i) {
        vocab[v.tokens[i]] = i;
        if (v.types[i] == 1) normal[v.tokens[i]] = static_cast<int32_t>(i);
    }
    // Every (a, b) with a+b a normal piece, ordered by the merged piece's score (then its id).
    std::vector<std::tuple<float, int32_t, std::string, std::string>> ms;
    for (const auto& [p, id] : normal)
        for (size_t cut = 1; cut < p.size(); ++cut)
            if (normal.count(p.substr(0, cut)) && normal.count(p.substr(cut)))
                ms.emplace_back(-v.scores[id], id, p.substr(0, cut), p.substr(cut));
    std::sort(ms.begin(), ms.end());
    json merges = json::array();
    for (const auto& m : ms) merges.push_back(std::get<2>(m) + " " + std::get<3>(m));
    json j = {{"version", "1.0"},
              {"added_tokens",
               {{{"id", 0}, {"content", "<unk>"}, {"special", true}},
                {{"id", 1}, {"content", "<s>"}, {"special", true}},
                {{"id", 2}, {"content", "</s>"}, {"special", true}}}},
              {"normalizer",
               {{"type", "Sequence"},
                {"normalizers",
                 {{{"type", "Prepend"}, {"prepend", "▁"}},
                  {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "▁"}}}}}},
              {"pre_tokenizer", nullptr},
              {"decoder", {{"type", "Sequence"}, {"decoders", {{{"type", "ByteFallback"}}}}}},
              {"model",
               {{"type", "BPE"}, {"unk_token", "<unk>"}, {"byte_fallback", true}, {"vocab", vocab}, {"merges", merges}}}};
    const std::string dir = t::temp_dir("tokmeta");
    write_file(dir + "/spm.json", j.dump());
    auto tok = cushion::load_tokenizer_json(dir + "/spm.json");
    auto bin = cushion::load_llama2c_tokenizer(t::stories_tok_bin(), 512);
    EXPECT_EQ(tok->kind(), "spm-bpe");
    EXPECT_EQ(tok->bos_id(), 1);
    EXPECT_EQ(tok->eos_id(), 2);
    auto texts = text_lines();
    texts.insert(texts.end(), kEdgeCases.begin(), kEdgeCases.end());
    for (const auto& s : texts) {
        // tokenizers matches added tokens (<unk>, <s>, </s>) in the text; llama2.c does not.
        if (s.find("<s>") != std::string::npos || s.find("</s>") != std::string::npos ||
            s.find("<unk>") != std::string::npos)
            continue;
        EXPECT_EQ(tok->encode(s, true), bin->encode(s, true)) << s;
        if (s.find("▁") == std::string::npos) {
            EXPECT_EQ(tok->decode(tok->encode(s, true)), s) << s;
        }
    }
    // Added tokens split the text first; with the legacy Prepend normalizer every segment gets its "▁".
    std::vector<int32_t> want = {1};
    for (int32_t id : bin->encode("a", false)) want.push_back(id);
    want.push_back(0);
    for (int32_t id : bin->encode("b", false)) want.push_back(id);
    want.push_back(2);
    EXPECT_EQ(tok->encode("a<unk>b</s>", true), want);
    EXPECT_EQ(tok->encode("<s>", false), std::vector<int32_t>{1});
}

// Arbitrary bytes (invalid UTF-8 included) never crash and come back unchanged.
TEST(TokenizerByteBpe, RandomBytesRoundTrip) {
    // GPT-2's bytes_to_unicode, written out independently of the engine.
    std::vector<std::string> tokens(256);
    std::vector<int> cps;
    int extra = 256;
    for (int b = 0; b < 256; ++b) {
        const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        const int cp = printable ? b : extra++;
        std::string u;
        if (cp < 0x80) u += static_cast<char>(cp);
        else {
            u += static_cast<char>(0xC0 | (cp >> 6));
            u += static_cast<char>(0x80 | (cp & 0x3F));
        }
        tokens[b] = u;
    }
    const std::string sp = tokens[' '], a = tokens['a'], nl = tokens['\n'];
    tokens.push_back(sp + a);
    tokens.push_back(a + a);
    tokens.push_back(nl + nl);
    tokens.push_back("<|endoftext|>");
    const std::vector<std::string> merges = {sp + " " + a, a + " " + a, nl + " " + nl};
    std::mt19937 rng(7);
    for (const char* pre : {"gpt2", "llama3", "qwen2"}) {
        auto tok = cushion::make_byte_bpe_tokenizer(tokens, merges, pre, 259, 259);
        for (int k = 0; k < 300; ++k) {
            std::string s(rng() % 40, '\0');
            for (auto& c : s) c = static_cast<char>("a \n\t'1\xC3\xA9\xE6\x97\xA5\xFF\x80"[rng() % 13] ^ (rng() % 7 == 0 ? rng() : 0));
            const auto ids = tok->encode(s, false);
            for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < tok->vocab_size());
            EXPECT_EQ(tok->decode(ids), s) << pre;
        }
        EXPECT_EQ(tok->encode(" aa\n\n", false), (std::vector<int32_t>{256, 'a', 258}))
            << pre;  // "Ġa", "a", "ĊĊ"
    }
    auto spm = cushion::load_llama2c_tokenizer(t::stories_tok_bin(), 512);
    for (int k = 0; k < 300; ++k) {
        std::string s(rng() % 40, '\0');
        for (auto& c : s) c = static_cast<char>(rng());
        if (s.find("▁") != std::string::npos) continue;
        EXPECT_EQ(spm->decode(spm->encode(s, true)), s);
    }
}

// An NFC normalizer (Qwen2's tokenizer.json) is applied; ill-formed UTF-8 bytes are "other" characters for the split.
TEST(TokenizerByteBpe, NfcAndIllFormedUtf8) {
    std::vector<std::string> byte_char(256);
    int extra = 256;
    for (int b = 0; b < 256; ++b) {
        const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        const int cp = printable ? b : extra++;
        std::string u;
        if (cp < 0x80) u += static_cast<char>(cp);
        else {
            u += static_cast<char>(0xC0 | (cp >> 6));
            u += static_cast<char>(0x80 | (cp & 0x3F));
        }
        byte_char[b] = u;
    }
    json vocab = json::object();
    for (int b = 0; b < 256; ++b) vocab[byte_char[b]] = b;
    vocab[byte_char[0xC3] + byte_char[0xA9]] = 256;  // "é"
    vocab[byte_char['a'] + byte_char[0xC1]] = 257;   // would only apply if "a\xC1\x81" were one pre-token
    const json merges = json::array({json::array({byte_char[0xC3], byte_char[0xA9]}),
                                     json::array({byte_char['a'], byte_char[0xC1]})});
    const std::string dir = t::temp_dir("toknfc");
    for (bool with_nfc : {true, false}) {
        json j = {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}},
                  {"pre_tokenizer", json::parse(kGpt2Pre)},
                  {"decoder", {{"type", "ByteLevel"}}}};
        j["normalizer"] = with_nfc ? json({{"type", "NFC"}}) : json();
        write_file(dir + "/t.json", j.dump());
        auto tok = cushion::load_tokenizer_json(dir + "/t.json");
        using V = std::vector<int32_t>;
        EXPECT_EQ(tok->encode("\xC3\xA9", false), V{256});
        if (with_nfc) {
            EXPECT_EQ(tok->encode("e\xCC\x81", false), V{256});                      // e + U+0301 -> é
            EXPECT_EQ(tok->encode("\xE1\x84\x80\xE1\x85\xA1", false), (V{0xEA, 0xB0, 0x80}));  // jamo -> 가
            EXPECT_EQ(tok->encode("\xE2\x84\xAB", false), (V{0xC3, 0x85}));          // U+212B ANGSTROM -> Å
            // ḋ + dot below: reordered and recomposed as ḍ + dot above (U+1E0D U+0307).
            EXPECT_EQ(tok->encode("\xE1\xB8\x8B\xCC\xA3", false), (V{0xE1, 0xB8, 0x8D, 0xCC, 0x87}));
            EXPECT_EQ(tok->encode("\xFF" "e\xCC\x81", false), (V{0xFF, 256}));  // an ill-formed byte passes through
        } else {
            EXPECT_EQ(tok->encode("e\xCC\x81", false), (V{'e', 0xCC, 0x81}));
        }
        // Overlong "A" (C1 81) is two ill-formed bytes, not a letter: "a" stays a pre-token of its own.
        EXPECT_EQ(tok->encode("a\xC1\x81", false), (V{'a', 0xC1, 0x81}));
        EXPECT_EQ(tok->decode(tok->encode("a\xC1\x81\xED\xA0\x80", false)), "a\xC1\x81\xED\xA0\x80");
    }
}

// tokenizer.model replaces ill-formed UTF-8 bytes by U+FFFD as libsentencepiece does; tokenizer.bin keeps the byte.
TEST_F(TokenizerScoreBpe, IllFormedUtf8) {
    EXPECT_EQ(model_->encode("ok\xFF", true), model_->encode("ok\xEF\xBF\xBD", true));
    EXPECT_EQ(model_->encode("\xE2\x82 x", false), model_->encode("\xEF\xBF\xBD\xEF\xBF\xBD x", false));
    EXPECT_EQ(bin_->encode("ok\xFF", false).back(), 0xFF + 3);  // <0xFF>
    EXPECT_EQ(bin_->decode(bin_->encode("ok\xFF\xC1\x81", true)), "ok\xFF\xC1\x81");
}

}  // namespace
