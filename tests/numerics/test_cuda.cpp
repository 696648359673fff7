// CPU vs CUDA agreement (label `cuda`; skipped where no GPU is present).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "generation.h"
#include "model_loader.h"
#include "perplexity.h"
#include "test_support.h"
#include "tiny_models.h"

using namespace cushion;
using namespace cushion::test;

#define NEED_CUDA() \
    if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device in this build/machine"

TEST(CudaAgreement, TinyModelsLogitsMatchCpu) {
    NEED_CUDA();
    for (bool opt : {false, true}) {
        TinySpec s;
        s.opt = opt;
        if (opt) s.kv_heads = s.heads;
        auto [m, n] = make_tiny(s);
        at::Tensor toks = at::tensor(std::vector<int64_t>{1, 5, 3, 7, 7, 4, 9, 10}, at::kLong).unsqueeze(0);
        at::Tensor cpu = m->forward(toks);
        m->to(c10::Device(c10::kCUDA), at::kFloat);
        at::Tensor gpu = m->forward(toks).cpu();
        EXPECT_LT((cpu - gpu).abs().max().item<double>(), 1e-4) << "opt=" << opt;
    }
}

TEST(CudaAgreement, StoriesGreedyAndPerplexityMatchCpu) {
    NEED_CUDA();
    auto m = load_model(stories_bin());
    auto docs = tokenize_documents(*m, read_documents(eval_text()), m->config.max_seq_len);
    const double cpu_ppl = perplexity(*m, docs).ppl;
    GenerateOptions o;
    o.max_new_tokens = 100;
    o.stop_at_eos = false;
    auto cpu_gen = generate(*m, {1}, o);
    m->to(c10::Device(c10::kCUDA), at::kFloat);
    EXPECT_NEAR(perplexity(*m, docs).ppl, cpu_ppl, 1e-4 * cpu_ppl);
    EXPECT_EQ(generate(*m, {1}, o), cpu_gen);
    m->to(c10::Device(c10::kCUDA), at::kHalf);
    EXPECT_NEAR(perplexity(*m, docs).ppl, cpu_ppl, 0.02 * cpu_ppl);
}
