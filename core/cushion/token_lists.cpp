#include "cushion/token_lists.h"

#include <stdexcept>

#include "base/error.h"

namespace cushion {

namespace {

std::string trimmed(const std::string& s) {
    const size_t a = s.find_first_not_of(" \t");
    if (a == std::string::npos) return "";
    return s.substr(a, s.find_last_not_of(" \t") - a + 1);
}

std::vector<std::string> items_of(const std::string& text) {
    std::vector<std::string> out;
    size_t i = 0;
    while (i <= text.size()) {
        size_t j = text.find(',', i);
        if (j == std::string::npos) j = text.size();
        const std::string item = trimmed(text.substr(i, j - i));
        if (!item.empty()) out.push_back(item);
        i = j + 1;
    }
    return out;
}

}  // namespace

std::vector<int32_t> parse_token_ranges(const std::string& text, int32_t vocab, const std::string& what) {
    std::vector<int32_t> out;
    for (const std::string& item : items_of(text)) {
        long lo = 0, hi = 0;
        try {
            const size_t dash = item.find('-', 1);
            size_t used = 0;
            lo = hi = std::stol(item, &used);
            if (dash != std::string::npos) {
                if (trimmed(item.substr(used, dash - used)) != "") throw std::invalid_argument(item);
                const std::string rest = item.substr(dash + 1);
                hi = std::stol(rest, &used);
                if (trimmed(rest.substr(used)) != "") throw std::invalid_argument(item);
            } else if (used != item.size()) {
                throw std::invalid_argument(item);
            }
        } catch (const std::exception&) {
            throw Error(what + ": '" + item + "' is not a token id or a range like 3-100");
        }
        if (lo < 0 || hi >= vocab || lo > hi)
            throw Error(what + ": '" + item + "' is outside the vocabulary [0, " + std::to_string(vocab) + ")");
        for (long t = lo; t <= hi; ++t) out.push_back(static_cast<int32_t>(t));
    }
    if (out.empty()) throw Error(what + ": no token ids given");
    return out;
}

int32_t newline_token(const Tokenizer& tk, const std::string& what) {
    for (int32_t t = 0; t < tk.vocab_size(); ++t) {
        const std::string p = tk.piece(t);
        if (p == "<0x0A>" || p == "\n" || p == "\xC4\x8A" /* GPT-2's byte-level "Ċ" */) return t;
    }
    throw Error(what + " newline: the vocabulary has no newline token");
}

std::vector<int32_t> parse_start_tokens(const std::string& text, const Tokenizer& tk, const std::string& what,
                                        std::string* note) {
    std::vector<int32_t> out;
    for (const std::string& item : items_of(text)) {
        if (item == "bos") {
            if (tk.bos_id() < 0) throw Error(what + " bos: the model has no <bos> token; start from 'newline'");
            out.push_back(tk.bos_id());
        } else if (item == "newline" || item == "nl" || item == "\\n") {
            out.push_back(newline_token(tk, what));
        } else if (item.find_first_not_of("0123456789") == std::string::npos) {
            long t = -1;
            try {
                t = std::stol(item);
            } catch (const std::exception&) {
            }
            if (t < 0 || t >= tk.vocab_size()) throw Error(what + ": token id " + item + " is out of range");
            out.push_back(static_cast<int32_t>(t));
        } else {
            int32_t found = -1;
            for (int32_t t = 0; t < tk.vocab_size() && found < 0; ++t)
                if (tk.piece(t) == item) found = t;
            if (found < 0) throw Error(what + ": '" + item + "' is not bos, newline, a token id or a vocabulary piece");
            out.push_back(found);
        }
    }
    if (out.empty()) throw Error(what + ": no tokens given");
    if (tk.bos_id() >= 0 && out[0] != tk.bos_id()) {
        out.insert(out.begin(), tk.bos_id());
        if (note) *note = "the cushion starts with <bos> (documents run after it without their own)";
    }
    return out;
}

}  // namespace cushion
