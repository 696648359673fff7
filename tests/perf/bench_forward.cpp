// Forward throughput on stories260K (512-token sequences, batch 32) as a fraction of this machine's
// measured fp32 matmul rate. Run: build/bin/bench_forward  (numbers go to tests/perf/RESULTS.md).
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <benchmark/benchmark.h>

#include "model/perplexity.h"
#include "package/open_target.h"
#include "base/resources.h"
#include "base/threads.h"

using namespace cushion;

namespace {

// The FLOPs of one forward pass over B x T tokens: 2 per multiply-add in every linear layer, the
// attention products (full T x T, as computed), and the LM head.
double forward_flops(const ModelConfig& c, int64_t B, int64_t T) {
    const double tokens = double(B) * T;
    const double C = c.dim, H = c.hidden_dim, Q = c.n_heads * c.head_dim, KV = c.kv_dim();
    const double per_token_linear = 2 * (C * Q + 2 * C * KV + Q * C + (c.arch == Arch::Llama ? 3 : 2) * C * H);
    const double attn = 2.0 * 2.0 * T * Q;  // QK^T and PV per token
    return tokens * (c.n_layers * (per_token_linear + attn) + 2 * C * c.vocab_size);
}

void BM_MatmulFp32(benchmark::State& st) {
    const int64_t n = st.range(0);
    at::Tensor a = at::randn({n, n}), b = at::randn({n, n});
    for (auto _ : st) benchmark::DoNotOptimize(at::mm(a, b));
    st.counters["GFLOP/s"] = benchmark::Counter(2.0 * n * n * n * st.iterations() / 1e9, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_MatmulFp32)->Arg(1024)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_ForwardStories(benchmark::State& st) {
    at::NoGradGuard ng;
    static auto m = load_model(default_model_path());
    const int64_t B = st.range(0), T = st.range(1);
    at::Tensor tokens = at::randint(3, m->config.vocab_size, {B, T}, at::kLong);
    for (auto _ : st) benchmark::DoNotOptimize(m->forward(tokens));
    const double flops = forward_flops(m->config, B, T);
    st.counters["GFLOP/s"] = benchmark::Counter(flops * st.iterations() / 1e9, benchmark::Counter::kIsRate);
    st.counters["tokens/s"] = benchmark::Counter(double(B * T) * st.iterations(), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_ForwardStories)->Args({32, 512})->Unit(benchmark::kMillisecond)->UseRealTime();

// perplexity() on the first 64 calibration documents: the forward passes plus what perplexity adds around them
// (log-softmax, the NLL sum, and since issue 15 the finiteness check of each batch's sum).
void BM_PerplexityStories(benchmark::State& st) {
    at::NoGradGuard ng;
    static auto m = load_model(default_model_path());
    static const auto docs = read_tokenized_documents(*m, resource_dir() + "/text/tinystories-calib.txt", 0, 64);
    int64_t tokens = 0;
    for (auto _ : st) tokens += perplexity(*m, docs).tokens;
    st.counters["tokens/s"] = benchmark::Counter(double(tokens), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_PerplexityStories)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
    cushion::relaunch_with_passive_openmp(argv);
    cushion::use_all_cores();
    benchmark::Initialize(&argc, argv);
    benchmark::RunSpecifiedBenchmarks();
    return 0;
}
