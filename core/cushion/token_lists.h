// Token lists the user types, read one way by the CLI (--candidates, --start) and the studio (Search dock).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace cushion {

// "3-100,200" -> the ids in the order given (spaces around items ignored). Errors name `what` (e.g.
// "--candidates") and the item: not an id or a range, outside [0, vocab), nothing given.
std::vector<int32_t> parse_token_ranges(const std::string& text, int32_t vocab, const std::string& what);

// The vocabulary's newline token (SentencePiece "<0x0A>", "\n", GPT-2's byte-level "Ċ"); an Error when it has none.
int32_t newline_token(const Tokenizer& tk, const std::string& what);

// A cushion's start tokens: comma-separated "bos", "newline" (or "nl", "\n"), token ids, or vocabulary pieces.
// A cushion starts with <bos> when the model has one (documents run after it without their own): it is put in
// front when missing, and *note (when given) says so.
std::vector<int32_t> parse_start_tokens(const std::string& text, const Tokenizer& tk, const std::string& what,
                                        std::string* note = nullptr);

}  // namespace cushion
