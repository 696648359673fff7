// A Llama-2-7B-shaped model (dim 4096, 32 layers, 32 heads, FFN 11008, vocabulary 32000; random weights) on a
// device: prefill throughput (512-token prompts, batch 1 and 8), greedy decode, and one greedy-search step on a
// subset of the vocabulary, each beside the device's measured matmul rate (the FLOP limit). The search figure is
// projected to a whole step over the vocabulary and to a whole search (--steps greedy steps), for comparison with
// the paper's 2.68 h (LLaMA2-7B, 4 x A6000). Plain timing (no Google Benchmark: the GPU machine has none).
//   usage: bench_llama7b_shape [--device cuda] [--dtype bf16] [--layers 32] [--candidates 64] [--steps 4]
//                              [--json FILE]
// The GPU check (tests/gpu/gpu_check.sh) runs it; tests/gpu/hf_prefill_bench.py measures transformers the same way.
#include <ATen/ATen.h>
#include <ATen/Context.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "base/error.h"
#include "model/generation.h"
#include "cushion/greedy_search.h"
#include "model/model.h"
#include "model/model_weights.h"
#include "tokenizer/score_bpe_tokenizer.h"
#include "tokenizer/tokenizer.h"

using namespace cushion;
using json = nlohmann::json;

namespace {

void sync(c10::Device dev) {
    if (dev.is_cuda()) at::zeros({1}, at::TensorOptions().device(dev)).cpu();  // waits for the stream
}

double timed(c10::Device dev, const std::function<void()>& f) {
    sync(dev);
    const auto t0 = std::chrono::steady_clock::now();
    f();
    sync(dev);
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::shared_ptr<Model> random_llama(int64_t layers, c10::Device dev, at::ScalarType dt) {
    auto m = std::make_shared<Model>();
    ModelConfig& c = m->config;
    c.arch = Arch::Llama;
    c.arch_name = "llama";
    c.dim = 4096;
    c.hidden_dim = 11008;
    c.n_layers = layers;
    c.n_heads = 32;
    c.n_kv_heads = 32;
    c.head_dim = 128;
    c.vocab_size = 32000;
    c.max_seq_len = 4096;
    c.norm_eps = 1e-5;
    const auto o = at::TensorOptions().device(dev).dtype(dt);
    auto w = [&](int64_t r, int64_t k) { return at::randn({r, k}, o).mul_(1.0 / std::sqrt(double(k))); };
    m->weights.tok_emb = at::randn({c.vocab_size, c.dim}, o);
    m->weights.lm_head = w(c.vocab_size, c.dim);
    m->weights.final_norm = at::ones({c.dim}, o);
    for (int64_t l = 0; l < layers; ++l) {
        LayerWeights L;
        L.attn_norm = at::ones({c.dim}, o);
        L.ffn_norm = at::ones({c.dim}, o);
        L.wq = w(c.dim, c.dim);
        L.wk = w(c.dim, c.dim);
        L.wv = w(c.dim, c.dim);
        L.wo = w(c.dim, c.dim);
        L.w_gate = w(c.hidden_dim, c.dim);
        L.w_up = w(c.hidden_dim, c.dim);
        L.w_down = w(c.dim, c.hidden_dim);
        m->weights.layers.push_back(L);
    }
    check_shapes(c, m->weights, "llama7b-shape");
    std::vector<std::string> pieces{"<unk>", "<s>", "</s>"};
    std::vector<float> scores{0, 0, 0};
    for (int i = 3; i < c.vocab_size; ++i) {
        pieces.push_back("t" + std::to_string(i));
        scores.push_back(-float(i));
    }
    m->tokenizer = make_score_bpe_tokenizer(pieces, scores, {}, 1, 2, 0);
    m->source = "random Llama-2-7B shape";
    m->format = "bench";
    m->to(dev, dt);
    return m;
}

}  // namespace

int main(int argc, char** argv) {
    std::string device = "cuda", dtype = "bf16", json_out;
    int64_t layers = 32, candidates = 64;
    int steps = 4;
    for (int i = 1; i < argc; ++i) {
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) { std::fprintf(stderr, "%s needs a value\n", argv[i]); std::exit(2); }
            return argv[++i];
        };
        if (!std::strcmp(argv[i], "--device")) device = next();
        else if (!std::strcmp(argv[i], "--dtype")) dtype = next();
        else if (!std::strcmp(argv[i], "--layers")) layers = std::stoll(next());
        else if (!std::strcmp(argv[i], "--candidates")) candidates = std::stoll(next());
        else if (!std::strcmp(argv[i], "--steps")) steps = std::stoi(next());
        else if (!std::strcmp(argv[i], "--json")) json_out = next();
        else { std::fprintf(stderr, "usage: bench_llama7b_shape [--device cuda] [--dtype bf16|fp32] [--layers N] "
                                    "[--candidates N] [--steps N] [--json FILE]\n"); return 2; }
    }
    try {
        const c10::Device dev = parse_device(device);
        const at::ScalarType dt = dtype == "fp32" ? at::kFloat : dtype == "fp16" ? at::kHalf : at::kBFloat16;
        at::manual_seed(0);
        json out = {{"device", device}, {"dtype", dtype}, {"layers", layers}};

        // The FLOP limit as measured: the best of a few 8192^3 (CPU: 1024^3) matrix products in this dtype.
        const int64_t n = dev.is_cuda() ? 8192 : 1024;
        at::Tensor a = at::randn({n, n}, at::TensorOptions().device(dev).dtype(dt)), b = at::randn_like(a);
        double best = 0;
        for (int i = 0; i < 6; ++i) best = std::max(best, 2.0 * n * n * n / timed(dev, [&] { (void)at::mm(a, b); }));
        out["matmul_tflops"] = best / 1e12;
        a = b = at::Tensor();
        std::printf("matmul %lld^3 %s: %.1f TFLOP/s\n", (long long)n, dtype.c_str(), best / 1e12);

        auto m = random_llama(layers, dev, dt);
        const ModelConfig& c = m->config;
        const double params = double(c.parameter_count());
        // Prefill: full logits for every position, as transformers' default forward computes them.
        for (int64_t batch : {1, 8}) {
            at::Tensor toks = at::randint(3, c.vocab_size, {batch, 512}, at::TensorOptions().dtype(at::kLong));
            (void)m->forward(toks);  // warm-up
            double t = 1e30;
            for (int r = 0; r < 3; ++r) t = std::min(t, timed(dev, [&] { (void)m->forward(toks); }));
            const double tokens = double(batch * 512);
            // 2 FLOP per multiply-add: every weight once per token, plus causal attention (QK^T and PV).
            const double flops = 2 * params * tokens + 2.0 * 2 * c.n_layers * c.dim * batch * 512.0 * 513 / 2;
            out["prefill_b" + std::to_string(batch)] = {{"seconds", t}, {"tokens_per_s", tokens / t},
                                                        {"flop_fraction", flops / t / best}};
            std::printf("prefill 512 tokens x batch %lld: %.4f s, %.0f tokens/s, %.1f%% of the matmul rate\n",
                        (long long)batch, t, tokens / t, 100 * flops / t / best);
        }
        // Greedy decode: 64 new tokens after a 128-token prompt.
        {
            GenerateOptions g;
            g.max_new_tokens = 64;
            g.stop_at_eos = false;
            std::vector<int32_t> prompt(128);
            for (int i = 0; i < 128; ++i) prompt[i] = 3 + i;
            (void)generate(*m, prompt, g);
            const double t = timed(dev, [&] { (void)generate(*m, prompt, g); });
            out["decode"] = {{"seconds", t}, {"tokens_per_s", 64 / t}, {"prompt", 128}, {"new_tokens", 64}};
            std::printf("decode 64 tokens after 128: %.3f s (prompt included), %.1f tokens/s\n", t, 64 / t);
        }
        // One greedy-search step over `candidates` tokens on a 512-token sample, after a one-token prefix.
        {
            std::vector<int32_t> sample(512);
            for (int i = 0; i < 512; ++i) sample[i] = 3 + (i * 7919) % (c.vocab_size - 3);
            GreedySearchOptions o;
            o.max_prefix = steps + 1;
            for (int64_t t = 0; t < candidates; ++t) o.candidates.push_back(static_cast<int32_t>(3 + t));
            GreedySearch s(m, sample, o);
            (void)s.score(StepKind::Exhaustive);  // warm-up
            GreedyStepResult r;
            const double t = timed(dev, [&] { r = s.score(StepKind::Exhaustive); });
            const double per = t / double(candidates);
            const double fl = search_flops_per_candidate(c, 1, 512);
            const double step_h = per * double(c.vocab_size) / 3600;
            out["search_step"] = {{"candidates", candidates}, {"sample_tokens", 512}, {"seconds", t},
                                  {"batch_size", r.batch_size}, {"candidates_per_s", 1 / per},
                                  {"flop_fraction", fl / per / best},
                                  {"projected_step_hours_full_vocab", step_h},
                                  {"projected_search_hours", step_h * steps}, {"steps", steps},
                                  {"paper_search_hours_4xA6000", 2.68}};
            std::printf("search step: %lld candidates in %.2f s (batch %lld): %.1f candidates/s, %.1f%% of the matmul "
                        "rate; a full-vocabulary step %.2f h, %d steps %.2f h (paper: 2.68 h on 4 x A6000)\n",
                        (long long)candidates, t, (long long)r.batch_size, 1 / per, 100 * fl / per / best, step_h,
                        steps, step_h * steps);
        }
        if (!json_out.empty()) std::ofstream(json_out) << out.dump(2) << "\n";
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_llama7b_shape: %s\n", e.what());
        return 1;
    }
    return 0;
}
