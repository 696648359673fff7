// CPU vs CUDA agreement (label `cuda`; skipped where no GPU is present).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdio>

#include "base/cuda_info.h"
#include "cushion/cushion.h"
#include "base/device_memory.h"
#include "model/generation.h"
#include "cushion/greedy_search.h"
#include "package/int8_kernels.h"
#include "package/quantized_package.h"
#include "package/open_target.h"
#include "model/perplexity.h"
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

TEST(CudaAgreement, StoriesBf16PerplexityNearCpu) {
    NEED_CUDA();
    auto m = load_model(stories_bin());
    auto docs = tokenize_documents(*m, read_documents(eval_text()), m->config.max_seq_len);
    const double cpu_ppl = perplexity(*m, docs).ppl;
    m->to(c10::Device(c10::kCUDA), at::kBFloat16);
    const double bf16 = perplexity(*m, docs).ppl;
    std::printf("stories260K perplexity: CPU fp32 %.6f, CUDA bf16 %.6f\n", cpu_ppl, bf16);
    EXPECT_NEAR(bf16, cpu_ppl, 0.03 * cpu_ppl);
}

TEST(CudaDevice, InfoAndFreeMemoryThroughLibtorch) {
    NEED_CUDA();
    ASSERT_TRUE(cuda_compiled());
    const auto gpus = cuda_devices();
    ASSERT_FALSE(gpus.empty());
    EXPECT_FALSE(gpus[0].name.empty());
    const DeviceMemory mem = query_device_memory(c10::Device(c10::kCUDA, 0));
    ASSERT_TRUE(mem.known());
    EXPECT_EQ(mem.source, "cudaMemGetInfo");
    EXPECT_GT(mem.free_bytes, 0);
    EXPECT_LE(mem.free_bytes, mem.total_bytes);
    EXPECT_EQ(mem.total_bytes, gpus[0].total_bytes);
    std::printf("%s: %s free of %s\n", gpus[0].name.c_str(), format_bytes(mem.free_bytes).c_str(),
                format_bytes(mem.total_bytes).c_str());
}

// One exhaustive greedy step over 128 candidates on a 160-token sample: the same best token and losses on the GPU
// as on the CPU (float32; L_q differs by float rounding only).
TEST(CudaSearch, StepScoresMatchCpu) {
    NEED_CUDA();
    std::shared_ptr<Model> m = load_model(stories_bin());
    auto docs = tokenize_documents(*m, read_documents(calib_text()), int64_t(1) << 40);
    const auto sample = make_search_sample(docs, m->tokenizer->bos_id(), 160);
    GreedySearchOptions o;
    o.max_prefix = 3;
    for (int32_t t = 3; t < 131; ++t) o.candidates.push_back(t);
    GreedySearch cpu(m, sample, o);
    const GreedyStepResult a = cpu.score(StepKind::Exhaustive);
    std::shared_ptr<Model> g = load_model(stories_bin());
    g->to(c10::Device(c10::kCUDA), at::kFloat);
    GreedySearch gpu(g, sample, o);
    const GreedyStepResult b = gpu.score(StepKind::Exhaustive);
    std::printf("search step: CPU best %d (L_q %.6g, %.2f s), CUDA best %d (L_q %.6g, %.2f s, batch %lld)\n",
                a.best_token, a.best_loss, a.seconds, b.best_token, b.best_loss, b.seconds, (long long)b.batch_size);
    EXPECT_EQ(a.best_token, b.best_token);
    EXPECT_NEAR(a.best_loss, b.best_loss, 1e-3 * a.best_loss);
    const at::Tensor mask = a.candidate_loss.isfinite();
    const double rel = ((a.candidate_loss - b.candidate_loss).abs().masked_select(mask).max() /
                        a.candidate_loss.masked_select(mask).abs().max()).item<double>();
    EXPECT_LT(rel, 1e-3);
}

// --kernels int8 on CUDA: at::_int_mm products (each checked exact by use_int8_kernels' self-check), stories260K's
// W8A8 per-tensor-static package: perplexity as the CPU's simulated path (fp32), and near it in bf16.
TEST(CudaInt8, IntMmPackageMatchesCpuSimulated) {
    NEED_CUDA();
    auto m = load_model(stories_bin());
    const Cushion c = make_cushion(*m, {m->tokenizer->bos_id()});
    ExportOptions eo;
    eo.config.wbits = 8;
    eo.config.abits = 8;
    eo.config.group = 0;
    eo.config.act = ActGranularity::PerTensorStatic;
    eo.calib_docs = tokenize_documents(*m, read_documents(calib_text()), m->config.max_seq_len - c.length() + 1);
    const std::string dir = temp_dir("cuda-int8") + "/pkg";
    write_package(*m, c, dir, eo);
    auto sim = load_package(dir);
    const auto eval = tokenize_documents(*sim->model, read_documents(eval_text()), sim->max_doc_tokens());
    const double p_sim = sim->perplexity(eval).ppl;
    for (at::ScalarType dt : {at::kFloat, at::kBFloat16}) {
        auto g = load_package(dir);
        g->to(c10::Device(c10::kCUDA), dt);
        const Int8KernelInfo info = use_int8_kernels(*g);
        EXPECT_EQ(info.engine, "int_mm");
        EXPECT_EQ(info.fallback_linears, 0);
        const double p = g->perplexity(eval).ppl;
        std::printf("stories260K W8A8 static: CPU simulated %.6f, CUDA int_mm %s %.6f (%d int8 linears)\n", p_sim,
                    dt == at::kFloat ? "fp32" : "bf16", p, info.int8_linears);
        EXPECT_NEAR(p, p_sim, (dt == at::kFloat ? 3e-3 : 3e-2) * p_sim);
    }
}
