// Documents (core/model/documents.h): fitting after a prefix, batching and padding, the one rule every loop uses.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "model/documents.h"
#include "package/open_target.h"
#include "test_support.h"

using namespace cushion;
using namespace cushion::test;

namespace {
std::vector<std::vector<int32_t>> docs_of_lengths(const std::vector<int>& lengths) {
    std::vector<std::vector<int32_t>> d;
    for (int n : lengths) d.emplace_back(n, 7);
    return d;
}
}  // namespace

TEST(Documents, FitAfterAPrefixFillsTheContextExactly) {
    auto m = load_model(stories_bin());
    const int64_t ctx = m->config.max_seq_len;
    EXPECT_EQ(max_document_tokens(*m, 0), ctx);
    // The prefix replaces the document's <bos>: prefix + text tokens = the context.
    EXPECT_EQ(max_document_tokens(*m, 1), ctx);
    EXPECT_EQ(max_document_tokens(*m, 5), ctx - 4);
    std::string long_line;
    for (int i = 0; i < 400; ++i) long_line += "Once upon a time there was a dog. ";
    const auto t = tokenize_documents(*m, {long_line, "Hi"}, max_document_tokens(*m, 5));
    ASSERT_EQ(t.size(), 2u);
    EXPECT_EQ(static_cast<int64_t>(t[0].size()) - 1 + 5, ctx);  // text tokens after the prefix fill the context
    EXPECT_EQ(t[0][0], m->tokenizer->bos_id());
    EXPECT_LT(t[1].size(), 5u);
}

TEST(Documents, ReadTokenizedDocumentsTakesTheFirstN) {
    auto m = load_model(stories_bin());
    const auto all = read_tokenized_documents(*m, calib_text());
    const auto some = read_tokenized_documents(*m, calib_text(), 0, 3);
    ASSERT_GT(all.size(), 3u);
    ASSERT_EQ(some.size(), 3u);
    for (size_t i = 0; i < 3; ++i) EXPECT_EQ(some[i], all[i]);
}

TEST(Documents, BatchesRespectTheBudgetAndCoverEveryDocumentOnce) {
    const auto docs = docs_of_lengths({3, 10, 1, 7, 7, 2, 30, 5, 5, 5});
    for (auto order : {BatchOrder::AsGiven, BatchOrder::LongestFirst}) {
        std::vector<size_t> seen;
        std::vector<std::vector<size_t>> batches;
        for_each_batch(docs, 20, order, [&](const std::vector<size_t>& b) {
            ASSERT_FALSE(b.empty());
            size_t longest = 0;
            for (size_t i : b) longest = std::max(longest, docs[i].size());
            // Within the budget, or a single document longer than it.
            EXPECT_TRUE(longest * b.size() <= 20 || b.size() == 1) << longest << " x " << b.size();
            seen.insert(seen.end(), b.begin(), b.end());
            batches.push_back(b);
        });
        std::vector<size_t> sorted = seen;
        std::sort(sorted.begin(), sorted.end());
        for (size_t i = 0; i < docs.size(); ++i) ASSERT_EQ(sorted[i], i);
        if (order == BatchOrder::AsGiven) {
            for (size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i], i);
            // 3,10 | 1,7 (7 x 3 = 21 > 20) | 7,2 | 30 | 5,5,5
            ASSERT_EQ(batches.size(), 5u);
            EXPECT_EQ(batches[3], std::vector<size_t>{6});
        } else {
            for (size_t i = 1; i < seen.size(); ++i) EXPECT_GE(docs[seen[i - 1]].size(), docs[seen[i]].size());
            EXPECT_EQ(batches[0], std::vector<size_t>{6});  // 30 alone
        }
    }
}

TEST(Documents, PadBatchMarksTheValidTokens) {
    at::Tensor tokens, valid;
    pad_batch({{5, 6, 7}, {8}}, &tokens, &valid);
    ASSERT_EQ(tokens.sizes(), (at::IntArrayRef{2, 3}));
    EXPECT_EQ(tokens[0][2].item<int64_t>(), 7);
    EXPECT_EQ(tokens[1][0].item<int64_t>(), 8);
    EXPECT_EQ(valid.sum().item<int64_t>(), 4);
    EXPECT_FALSE(valid[1][1].item<bool>());
}
