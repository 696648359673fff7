// Score-merge BPE over a SentencePiece-style vocabulary: llama2.c run.c's encode() and llama.cpp's SPM
// tokenizer. The text gets the dummy-prefix space, ' ' becomes "▁" (U+2581), the text is split into
// UTF-8 codepoints, and the adjacent pair whose concatenation is a vocabulary piece with the highest
// score is merged until no pair merges (ties: the leftmost pair). Codepoints that are not pieces fall
// back to byte tokens "<0xXX>" (SentencePiece byte_fallback), or to <unk> where there are none.
//
// Whitespace is kept as written (llama2.c, llama.cpp). A SentencePiece tokenizer.model carries normalizer
// options: tok512.model has remove_extra_whitespaces = true (drop leading and trailing spaces, collapse
// runs of spaces), which load_sentencepiece_tokenizer passes in through detail::ScoreBpeOptions; the
// llama2.c tokenizer.bin and the GGUF vocabulary do not carry it, and llama2.c / llama.cpp do not apply it.
// User-defined pieces (type 4) are matched verbatim and never merged, as SentencePiece does.
//
// Pieces are stored in SentencePiece form ("▁the", "<s>"): llama2.c's tokenizer.bin writes them with
// real spaces and BOS/EOS as "\n<s>\n" / "\n</s>\n"; load_llama2c_tokenizer converts them.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <queue>
#include <string_view>
#include <unordered_map>

#include "base/error.h"
#include "base/file_checks.h"
#include "tokenizer/score_bpe_tokenizer.h"
#include "tokenizer/tokenizer.h"

namespace cushion {
namespace {

constexpr int32_t kTypeNormal = 1, kTypeUnknown = 2, kTypeControl = 3, kTypeUserDefined = 4, kTypeByte = 6;
const std::string kSpaceMark = "\xE2\x96\x81";  // "▁" U+2581

// "<0x0A>" -> 0x0A. Returns false for anything else.
bool parse_byte_piece(const std::string& p, uint8_t* out) {
    if (p.size() != 6 || p[0] != '<' || p[1] != '0' || p[2] != 'x' || p[5] != '>') return false;
    auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        return -1;
    };
    int hi = hex(p[3]), lo = hex(p[4]);
    if (hi < 0 || lo < 0) return false;
    *out = static_cast<uint8_t>(hi * 16 + lo);
    return true;
}

// Length of the well-formed UTF-8 sequence starting at s[i]; 1 for a byte that is not part of one (it then falls
// back to its byte token, <unk> without byte tokens).
size_t utf8_len_at(const std::string& s, size_t i) {
    const size_t n = detail::utf8_sequence_length(s.data() + i, s.size() - i);
    return n ? n : 1;
}

// Every ill-formed byte replaced by U+FFFD, as libsentencepiece's normalizer does.
std::string replace_ill_formed(const std::string& s) {
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size();) {
        const size_t n = detail::utf8_sequence_length(s.data() + i, s.size() - i);
        if (n == 0) {
            out += "\xEF\xBF\xBD";
            ++i;
        } else {
            out.append(s, i, n);
            i += n;
        }
    }
    return out;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
    size_t pos = 0;
    while ((pos = s.find(from, pos)) != std::string::npos) {
        s.replace(pos, from.size(), to);
        pos += to.size();
    }
    return s;
}

class ScoreBpeTokenizer final : public Tokenizer {
public:
    ScoreBpeTokenizer(std::vector<std::string> pieces, std::vector<float> scores, std::vector<int32_t> types,
                      int32_t bos, int32_t eos, int32_t unk, detail::ScoreBpeOptions options)
        : pieces_(std::move(pieces)), scores_(std::move(scores)), types_(std::move(types)), opt_(std::move(options)) {
        const size_t n = pieces_.size();
        if (n == 0) throw Error("score BPE tokenizer: the vocabulary is empty");
        if (n > static_cast<size_t>(std::numeric_limits<int32_t>::max()))
            throw Error("score BPE tokenizer: vocabulary too large (" + std::to_string(n) + " pieces)");
        if (scores_.size() != n)
            throw Error("score BPE tokenizer: " + std::to_string(n) + " pieces but " +
                        std::to_string(scores_.size()) + " scores");
        if (!types_.empty() && types_.size() != n)
            throw Error("score BPE tokenizer: " + std::to_string(n) + " pieces but " +
                        std::to_string(types_.size()) + " token types");
        auto check_id = [n](int32_t id, const char* what) {
            if (id >= static_cast<int32_t>(n))
                throw Error(std::string("score BPE tokenizer: ") + what + " id " + std::to_string(id) +
                            " is outside the vocabulary of " + std::to_string(n));
            return id < 0 ? -1 : id;
        };
        bos_ = check_id(bos, "bos");
        eos_ = check_id(eos, "eos");
        unk_ = check_id(unk, "unk");
        if (types_.empty()) {
            types_.resize(n, kTypeNormal);
            for (size_t i = 0; i < n; ++i) {
                uint8_t b;
                const std::string& p = pieces_[i];
                if (parse_byte_piece(p, &b)) types_[i] = kTypeByte;
                else if (p == "<unk>") types_[i] = kTypeUnknown;
                else if (p == "<s>" || p == "</s>") types_[i] = kTypeControl;
            }
            if (bos_ >= 0) types_[bos_] = kTypeControl;
            if (eos_ >= 0) types_[eos_] = kTypeControl;
            if (unk_ >= 0) types_[unk_] = kTypeUnknown;
        }
        for (size_t i = 0; i < n; ++i) {
            if (std::isnan(scores_[i])) scores_[i] = -std::numeric_limits<float>::infinity();
            const int32_t t = types_[i];
            uint8_t b;
            if (t == kTypeByte && parse_byte_piece(pieces_[i], &b)) {
                if (byte_ids_[b] < 0) byte_ids_[b] = static_cast<int32_t>(i);
            } else if (t == kTypeNormal || t == kTypeUserDefined || t == 0) {
                // Only ordinary pieces take part in merges (SentencePiece's pieces_ map); the first of
                // duplicate pieces wins.
                lookup_.emplace(std::string_view(pieces_[i]), static_cast<int32_t>(i));  // pieces_ never changes
            }
            if (t == kTypeUserDefined && !pieces_[i].empty())
                user_defined_[static_cast<uint8_t>(pieces_[i][0])].push_back(static_cast<int32_t>(i));
        }
        for (int32_t id : opt_.added_tokens) {
            if (id < 0 || id >= static_cast<int32_t>(n))
                throw Error("score BPE tokenizer: added token id " + std::to_string(id) + " is outside the vocabulary");
            if (!pieces_[id].empty()) added_[static_cast<uint8_t>(pieces_[id][0])].push_back(id);
        }
        for (auto* table : {&user_defined_, &added_})
            for (auto& v : *table)  // longest first
                std::stable_sort(v.begin(), v.end(),
                                 [this](int32_t a, int32_t b) { return pieces_[a].size() > pieces_[b].size(); });
    }

    ScoreBpeTokenizer(const ScoreBpeTokenizer&) = delete;  // lookup_ holds views into pieces_
    ScoreBpeTokenizer& operator=(const ScoreBpeTokenizer&) = delete;

    // SentencePiece's normalizer (normalizer.cc) with the identity rule: the dummy prefix, ' ' -> "▁" and,
    // with remove_extra_whitespaces, leading ' ' dropped, runs of ' ' collapsed and trailing "▁" dropped
    // (that last step also drops a "▁" that was in the text, as libsentencepiece does).
    std::string normalize(const std::string& raw, bool dummy_prefix) const {
        const std::string replaced = opt_.replace_invalid_utf8 ? replace_ill_formed(raw) : std::string();
        const std::string& text = opt_.replace_invalid_utf8 ? replaced : raw;
        const std::string space = opt_.escape_whitespaces ? kSpaceMark : std::string(" ");
        size_t i = 0;
        if (opt_.remove_extra_whitespaces)
            while (i < text.size() && text[i] == ' ') ++i;
        if (i == text.size()) return {};
        std::string out;
        out.reserve(text.size() * 2);
        if (dummy_prefix) out += space;
        bool prev_space = opt_.remove_extra_whitespaces;
        for (; i < text.size(); ++i) {
            const char ch = text[i];
            if (ch == ' ') {
                if (!prev_space) out += space;
                prev_space = opt_.remove_extra_whitespaces;
            } else {
                out += ch;
                prev_space = false;
            }
        }
        if (opt_.remove_extra_whitespaces)
            while (out.size() >= space.size() && out.compare(out.size() - space.size(), space.size(), space) == 0)
                out.resize(out.size() - space.size());
        return out;
    }

    std::vector<int32_t> encode(const std::string& text, bool add_bos) const override {
        std::vector<int32_t> ids;
        if (add_bos && bos_ >= 0) ids.push_back(bos_);
        if (opt_.added_tokens.empty()) {
            encode_segment(text, true, ids);
            return ids;
        }
        size_t seg = 0;
        for (size_t i = 0; i < text.size();) {
            int32_t hit = -1;
            for (int32_t id : added_[static_cast<uint8_t>(text[i])]) {
                if (text.compare(i, pieces_[id].size(), pieces_[id]) == 0) {
                    hit = id;
                    break;
                }
            }
            if (hit < 0) {
                ++i;
                continue;
            }
            encode_segment(text.substr(seg, i - seg), seg == 0, ids);
            ids.push_back(hit);
            i += pieces_[hit].size();
            seg = i;
        }
        encode_segment(text.substr(seg), seg == 0, ids);
        return ids;
    }

    // One segment of text (all of it, or the text between added tokens); at_start: it begins the text.
    void encode_segment(const std::string& text, bool at_start, std::vector<int32_t>& ids) const {
        if (text.empty()) return;
        bool prefix = opt_.add_dummy_prefix && (at_start || !opt_.prefix_first_only);
        if (prefix && opt_.prefix_unless_space && (text[0] == ' ' || text.compare(0, kSpaceMark.size(), kSpaceMark) == 0))
            prefix = false;
        const std::string norm = normalize(text, prefix);
        if (norm.empty()) return;

        struct Sym {
            size_t start, len;
            int prev, next;
            bool freeze;     // a user-defined piece: never merged
            int32_t frozen;  // its id
        };
        std::vector<Sym> syms;
        syms.reserve(norm.size());
        for (size_t i = 0; i < norm.size();) {
            size_t len = 0;
            int32_t frozen = -1;
            for (int32_t id : user_defined_[static_cast<uint8_t>(norm[i])]) {
                if (norm.compare(i, pieces_[id].size(), pieces_[id]) == 0) {
                    len = pieces_[id].size();
                    frozen = id;
                    break;
                }
            }
            if (frozen < 0) len = utf8_len_at(norm, i);
            int idx = static_cast<int>(syms.size());
            syms.push_back({i, len, idx - 1, idx + 1, frozen >= 0, frozen});
            i += len;
        }
        syms.back().next = -1;

        struct Cand {
            float score;
            int left, right;
            size_t size;
        };
        auto worse = [](const Cand& a, const Cand& b) {  // max-heap: high score first, then leftmost
            return a.score < b.score || (a.score == b.score && a.left > b.left);
        };
        std::priority_queue<Cand, std::vector<Cand>, decltype(worse)> agenda(worse);
        auto try_add = [&](int l, int r) {
            if (l < 0 || r < 0 || syms[l].freeze || syms[r].freeze) return;
            const size_t size = syms[l].len + syms[r].len;
            auto it = lookup_.find(std::string_view(norm).substr(syms[l].start, size));
            if (it == lookup_.end()) return;
            agenda.push({scores_[it->second], l, r, size});
        };
        for (size_t i = 1; i < syms.size(); ++i) try_add(static_cast<int>(i) - 1, static_cast<int>(i));

        while (!agenda.empty()) {
            Cand c = agenda.top();
            agenda.pop();
            Sym& l = syms[c.left];
            Sym& r = syms[c.right];
            // Stale: one side was merged away or grew since this candidate was queued.
            if (l.len == 0 || r.len == 0 || l.len + r.len != c.size) continue;
            l.len += r.len;
            r.len = 0;
            l.next = r.next;
            if (r.next >= 0) syms[r.next].prev = c.left;
            try_add(l.prev, c.left);
            try_add(c.left, l.next);
        }

        for (int i = 0; i >= 0; i = syms[i].next) {
            const Sym& s = syms[i];
            if (s.freeze) {
                ids.push_back(s.frozen);
                continue;
            }
            auto it = lookup_.find(std::string_view(norm).substr(s.start, s.len));
            if (it != lookup_.end()) {
                ids.push_back(it->second);
                continue;
            }
            // Byte fallback: only single codepoints can be missing (merges only make known pieces).
            for (size_t k = 0; k < s.len; ++k) {
                int32_t b = byte_ids_[static_cast<uint8_t>(norm[s.start + k])];
                if (b >= 0) ids.push_back(b);
                else if (unk_ >= 0) {
                    ids.push_back(unk_);
                    break;  // one <unk> for the whole codepoint, as SentencePiece does
                }
            }
        }
    }

    std::string decode_token(int32_t prev, int32_t id) const override {
        if (id < 0 || id >= vocab_size()) return {};
        const int32_t t = types_[id];
        if (t == kTypeControl) return {};
        if (t == kTypeUnknown) return opt_.unk_surface;
        uint8_t b;
        if (t == kTypeByte && parse_byte_piece(pieces_[id], &b)) return std::string(1, static_cast<char>(b));
        std::string s = replace_all(pieces_[id], kSpaceMark, " ");
        // llama2.c: after <bos> the leading space (the dummy prefix) is dropped; also at the very start.
        if ((prev < 0 || (bos_ >= 0 && prev == bos_)) && !s.empty() && s[0] == ' ') s.erase(0, 1);
        return s;
    }

    std::string piece(int32_t id) const override {
        return id >= 0 && id < vocab_size() ? pieces_[id] : std::string();
    }
    int32_t vocab_size() const override { return static_cast<int32_t>(pieces_.size()); }
    int32_t bos_id() const override { return bos_; }
    int32_t eos_id() const override { return eos_; }
    bool is_special(int32_t id) const override {
        return id >= 0 && id < vocab_size() && (types_[id] == kTypeControl || types_[id] == kTypeUnknown);
    }
    std::string kind() const override { return opt_.kind; }

private:
    std::vector<std::string> pieces_;
    std::vector<float> scores_;
    std::vector<int32_t> types_;
    detail::ScoreBpeOptions opt_;
    int32_t bos_ = -1, eos_ = -1, unk_ = -1;
    std::unordered_map<std::string_view, int32_t> lookup_;  // views into pieces_
    std::vector<int32_t> user_defined_[256];
    std::vector<int32_t> added_[256];  // opt_.added_tokens by first byte
    int32_t byte_ids_[256] = {
#define CUSHION_M1_16 -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1
        CUSHION_M1_16, CUSHION_M1_16, CUSHION_M1_16, CUSHION_M1_16, CUSHION_M1_16, CUSHION_M1_16,
        CUSHION_M1_16, CUSHION_M1_16, CUSHION_M1_16, CUSHION_M1_16, CUSHION_M1_16, CUSHION_M1_16,
        CUSHION_M1_16, CUSHION_M1_16, CUSHION_M1_16, CUSHION_M1_16,
#undef CUSHION_M1_16
    };
};

}  // namespace

std::unique_ptr<Tokenizer> make_score_bpe_tokenizer(std::vector<std::string> pieces, std::vector<float> scores,
                                                    std::vector<int32_t> types, int32_t bos, int32_t eos,
                                                    int32_t unk) {
    return std::make_unique<ScoreBpeTokenizer>(std::move(pieces), std::move(scores), std::move(types), bos, eos,
                                               unk, detail::ScoreBpeOptions());
}

namespace detail {
std::unique_ptr<Tokenizer> make_score_bpe_tokenizer(std::vector<std::string> pieces, std::vector<float> scores,
                                                    std::vector<int32_t> types, int32_t bos, int32_t eos,
                                                    int32_t unk, const ScoreBpeOptions& options) {
    return std::make_unique<ScoreBpeTokenizer>(std::move(pieces), std::move(scores), std::move(types), bos, eos,
                                               unk, options);
}
}  // namespace detail

std::unique_ptr<Tokenizer> load_llama2c_tokenizer(const std::string& path, int32_t vocab_size) {
    require_regular_file(path, "tokenizer.bin");  // a named pipe would block the read, a device never end
    std::ifstream f(path, std::ios::binary);
    if (!f) throw Error("llama2.c tokenizer '" + path + "': cannot open the file");
    const std::string data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (f.bad()) throw Error("llama2.c tokenizer '" + path + "': read error");
    const std::string where = "llama2.c tokenizer '" + path + "'";
    if (vocab_size <= 0) throw Error(where + ": vocab_size " + std::to_string(vocab_size) + " must be positive");
    if (data.size() < 4)
        throw Error(where + ": truncated: " + std::to_string(data.size()) + " bytes, no max_token_length header");

    auto read_i32 = [&](size_t off) {
        int32_t v;
        std::memcpy(&v, data.data() + off, 4);
        return v;
    };
    const int32_t max_len = read_i32(0);
    constexpr int32_t kMaxPiece = 1 << 16;  // no real vocabulary piece is anywhere near this long
    if (max_len <= 0 || max_len > kMaxPiece)
        throw Error(where + ": max_token_length " + std::to_string(max_len) + " is not in 1.." +
                    std::to_string(kMaxPiece));

    std::vector<std::string> pieces;
    std::vector<float> scores;
    pieces.reserve(vocab_size);
    scores.reserve(vocab_size);
    size_t off = 4;
    for (int32_t i = 0; i < vocab_size; ++i) {
        const std::string tok = where + ": token " + std::to_string(i) + " at offset " + std::to_string(off);
        if (data.size() - off < 8)
            throw Error(tok + ": truncated (file has " + std::to_string(data.size()) + " bytes, vocab_size " +
                        std::to_string(vocab_size) + ")");
        float score;
        std::memcpy(&score, data.data() + off, 4);
        const int32_t len = read_i32(off + 4);
        off += 8;
        if (len < 0 || len > max_len)
            throw Error(tok + ": piece length " + std::to_string(len) + " is not in 0..max_token_length (" +
                        std::to_string(max_len) + ")");
        if (data.size() - off < static_cast<size_t>(len))
            throw Error(tok + ": truncated: piece of " + std::to_string(len) + " bytes runs past the end of the file");
        if (!std::isfinite(score)) score = -std::numeric_limits<float>::infinity();
        std::string p = data.substr(off, len);
        off += len;
        if (p == "\n<s>\n") p = "<s>";
        else if (p == "\n</s>\n") p = "</s>";
        else p = replace_all(std::move(p), " ", kSpaceMark);
        pieces.push_back(std::move(p));
        scores.push_back(score);
    }
    const int32_t bos = vocab_size > 1 ? 1 : -1, eos = vocab_size > 2 ? 2 : -1;
    return make_score_bpe_tokenizer(std::move(pieces), std::move(scores), {}, bos, eos, 0);
}

}  // namespace cushion
