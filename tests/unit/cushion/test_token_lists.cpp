// Token lists typed by the user (core/cushion/token_lists.h), one reading for the CLI and the studio.
#include <gtest/gtest.h>

#include "cushion/token_lists.h"
#include "package/open_target.h"
#include "test_support.h"

using namespace cushion;
using namespace cushion::test;

TEST(TokenLists, RangesAndIds) {
    EXPECT_EQ(parse_token_ranges("3-5,200", 512, "--candidates"), (std::vector<int32_t>{3, 4, 5, 200}));
    EXPECT_EQ(parse_token_ranges(" 7 , 1 - 2 ,", 512, "candidates"), (std::vector<int32_t>{7, 1, 2}));
    EXPECT_NE(error_of([] { parse_token_ranges("3-x", 512, "--candidates"); })
                  .find("--candidates: '3-x' is not a token id or a range like 3-100"),
              std::string::npos);
    EXPECT_NE(error_of([] { parse_token_ranges("2x", 512, "c"); }).find("'2x' is not a token id"), std::string::npos);
    EXPECT_NE(error_of([] { parse_token_ranges("500-512", 512, "c"); }).find("outside the vocabulary [0, 512)"),
              std::string::npos);
    EXPECT_NE(error_of([] { parse_token_ranges("9-3", 512, "c"); }).find("outside the vocabulary"), std::string::npos);
    EXPECT_NE(error_of([] { parse_token_ranges(" , ", 512, "c"); }).find("c: no token ids given"), std::string::npos);
    EXPECT_NE(error_of([] { parse_token_ranges("99999999999999999999", 512, "c"); }).find("is not a token id"),
              std::string::npos);
}

TEST(TokenLists, StartTokensBeginWithBos) {
    auto m = load_model(stories_bin());
    const Tokenizer& tk = *m->tokenizer;
    const int32_t bos = tk.bos_id(), nl = newline_token(tk, "start");
    EXPECT_EQ(tk.piece(nl), "<0x0A>");
    EXPECT_EQ(parse_start_tokens("bos", tk, "--start"), (std::vector<int32_t>{bos}));
    std::string note;
    EXPECT_EQ(parse_start_tokens("newline", tk, "--start", &note), (std::vector<int32_t>{bos, nl}));
    EXPECT_NE(note.find("starts with <bos>"), std::string::npos);
    EXPECT_EQ(parse_start_tokens("bos,\\n,5", tk, "--start"), (std::vector<int32_t>{bos, nl, 5}));
    const std::string piece = tk.piece(300);
    EXPECT_EQ(parse_start_tokens(piece, tk, "--start"), (std::vector<int32_t>{bos, 300}));
    EXPECT_NE(error_of([&] { parse_start_tokens("9999", tk, "--start"); }).find("--start: token id 9999 is out of range"),
              std::string::npos);
    EXPECT_NE(error_of([&] { parse_start_tokens("no-such-piece", tk, "--start"); }).find("is not bos, newline"),
              std::string::npos);
}
