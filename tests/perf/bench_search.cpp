// The greedy prefix search on stories260K: one exhaustive step (all 512 vocabulary entries as candidates,
// a 509-token calibration sample: 509 = the 512-token context less the longest prefix, 3) timed and
// compared with its FLOP count at this machine's measured fp32 matmul rate; the pruned step's speed-up
// and how often it picks the exhaustive step's token; the same for the fast step (BM_FastAgreement) and a diagnosis
// of its screen (BM_ScreenDiagnostic).
// Run: build/bin/bench_search  (numbers go to tests/perf/RESULTS.md).
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <benchmark/benchmark.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <functional>

#include "cushion/candidate_screen.h"
#include "cushion/greedy_search.h"
#include "package/open_target.h"
#include "model/perplexity.h"
#include "quant/quant_loss.h"
#include "base/resources.h"
#include "base/threads.h"

using namespace cushion;

namespace {

constexpr int kMaxPrefix = 3;

double g_peak_gflops = 0;     // measured by BM_MatmulFp32
double g_exhaustive_s = 0;    // one exhaustive step at the default budget

std::shared_ptr<Model> stories() {
    static auto m = load_model(default_model_path());
    return m;
}

std::vector<std::vector<int32_t>> calib_docs(const Model& m) {
    return tokenize_documents(m, read_documents(sample_text_path("tinystories-calib.txt")), 1 << 20);
}

// The n-token sample starting `offset` tokens into the concatenated calibration text.
std::vector<int32_t> sample_at(const Model& m, int64_t offset, int64_t n) {
    auto all = make_search_sample(calib_docs(m), m.tokenizer->bos_id(), offset + n);
    return std::vector<int32_t>(all.begin() + offset, all.end());
}

GreedySearchOptions all_tokens(const Model& m) {
    GreedySearchOptions o;
    o.max_prefix = kMaxPrefix;
    for (int32_t t = 0; t < m.config.vocab_size; ++t) o.candidates.push_back(t);
    return o;
}

double seconds(const std::function<void()>& f) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void BM_MatmulFp32(benchmark::State& st) {
    const int64_t n = st.range(0);
    at::Tensor a = at::randn({n, n}), b = at::randn({n, n});
    for (auto _ : st) benchmark::DoNotOptimize(at::mm(a, b));
    st.counters["GFLOP/s"] = benchmark::Counter(2.0 * n * n * n * st.iterations() / 1e9, benchmark::Counter::kIsRate);
    // The peak the ratios below use: the best of a few timed products.
    double best = 0;
    for (int i = 0; i < 5; ++i) best = std::max(best, 2.0 * n * n * n / 1e9 / seconds([&] { (void)at::mm(a, b); }));
    g_peak_gflops = best;
}
BENCHMARK(BM_MatmulFp32)->Arg(1024)->Unit(benchmark::kMillisecond)->UseRealTime();

// One exhaustive step: 512 candidates x 509 tokens; arg = memory budget in MiB (sets the batch size;
// 32 = the CPU default, one candidate per batch here).
void BM_GreedyStepExhaustive(benchmark::State& st) {
    auto m = stories();
    GreedySearchOptions o = all_tokens(*m);
    o.memory_budget = st.range(0) << 20;
    const int64_t n = default_sample_tokens(m->config, kMaxPrefix);
    GreedySearch s(m, sample_at(*m, 0, n), o);
    double secs = 0;
    int64_t batch = 0;
    for (auto _ : st) {
        auto r = s.score(StepKind::Exhaustive);
        secs = r.seconds;
        batch = r.batch_size;
    }
    const double flops = search_flops_per_candidate(m->config, 1, n) * s.candidates().size();
    st.counters["candidates"] = s.candidates().size();
    st.counters["sample_tokens"] = n;
    st.counters["batch"] = batch;
    st.counters["cand/s"] = s.candidates().size() / secs;
    st.counters["GFLOP"] = flops / 1e9;
    st.counters["GFLOP/s"] = flops / 1e9 / secs;
    if (g_peak_gflops > 0) st.counters["of_peak_%"] = 100 * flops / 1e9 / secs / g_peak_gflops;
    if (st.range(0) == 32) g_exhaustive_s = secs;
}
BENCHMARK(BM_GreedyStepExhaustive)->Arg(32)->Arg(256)->Arg(1024)->Iterations(1)->Unit(benchmark::kSecond)->UseRealTime();

// The exhaustive step at the default budget with args[0] intra-op threads (GreedySearchOptions::threads; the
// automatic choice for this narrow model is 1): re-measures the thread setting with each libtorch.
void BM_GreedyStepThreads(benchmark::State& st) {
    auto m = stories();
    GreedySearchOptions o = all_tokens(*m);
    o.threads = static_cast<int>(st.range(0));
    const int64_t n = default_sample_tokens(m->config, kMaxPrefix);
    GreedySearch s(m, sample_at(*m, 0, n), o);
    double secs = 0;
    for (auto _ : st) secs = s.score(StepKind::Exhaustive).seconds;
    st.counters["threads"] = o.threads;
    st.counters["cand/s"] = s.candidates().size() / secs;
}
BENCHMARK(BM_GreedyStepThreads)->Arg(1)->Arg(2)->Iterations(1)->Unit(benchmark::kSecond)->UseRealTime();

// Pruned step: score all on a window of args[0] tokens, re-score the best args[1] on the whole sample.
void BM_GreedyStepPruned(benchmark::State& st) {
    auto m = stories();
    GreedySearchOptions o = all_tokens(*m);
    o.prune_window = st.range(0);
    o.prune_keep = static_cast<int>(st.range(1));
    const int64_t n = default_sample_tokens(m->config, kMaxPrefix);
    GreedySearch s(m, sample_at(*m, 0, n), o);
    double secs = 0;
    for (auto _ : st) secs = s.score(StepKind::Pruned).seconds;
    st.counters["evaluated"] = s.candidates().size() + o.prune_keep;
    if (g_exhaustive_s > 0) st.counters["speedup"] = g_exhaustive_s / secs;
}
BENCHMARK(BM_GreedyStepPruned)->Args({64, 16})->Args({32, 16})->Args({128, 16})->Iterations(1)->Unit(benchmark::kSecond)->UseRealTime();

// Agreement of the pruned step with the exhaustive one over 12 problems: stories260K with the start
// prefix <bos> and with <bos> + the exhaustive step's choice, on calibration samples at six offsets.
// (The planted-outlier model gives the very same problems: with <bos> in the cushion its ordinary tokens
// see exactly the original model.) args: window, keep. Also the pruned choice's L_q excess over the
// exhaustive minimum.
void BM_PrunedAgreement(benchmark::State& st) {
    auto m = stories();
    const int64_t n = default_sample_tokens(m->config, kMaxPrefix);
    int agree = 0, total = 0, in_shortlist = 0;
    double t_ex = 0, t_pr = 0, excess = 0;
    for (auto _ : st) {
        for (int64_t off : {0, 350, 700, 1050, 1400, 1750}) {
            GreedySearchOptions o = all_tokens(*m);
            o.prune_window = st.range(0);
            o.prune_keep = static_cast<int>(st.range(1));
            GreedySearch s(m, sample_at(*m, off, n), o);
            for (int depth = 0; depth < 2; ++depth) {
                auto ex = s.score(StepKind::Exhaustive);
                auto pr = s.score(StepKind::Pruned);
                t_ex += ex.seconds;
                t_pr += pr.seconds;
                ++total;
                agree += ex.best_token == pr.best_token;
                excess += pr.best_loss / ex.best_loss - 1;
                for (auto t : pr.shortlist) in_shortlist += t == ex.best_token;
                std::fprintf(stderr, "offset %lld depth %d: exhaustive %d (%.6g), pruned %d (%.6g)\n", (long long)off,
                             depth, ex.best_token, ex.best_loss, pr.best_token, pr.best_loss);
                if (depth == 0) s.override_step(ex.best_token);
            }
        }
    }
    st.counters["problems"] = total;
    st.counters["agree_%"] = 100.0 * agree / total;
    st.counters["best_in_shortlist_%"] = 100.0 * in_shortlist / total;
    st.counters["mean_Lq_excess_%"] = 100.0 * excess / total;
    st.counters["speedup"] = t_ex / t_pr;
}
BENCHMARK(BM_PrunedAgreement)->Args({64, 16})->Args({128, 64})->Iterations(1)->Unit(benchmark::kSecond)->UseRealTime();

// Agreement of the fast step (the candidate screen of cushion/candidate_screen.h, then the best K re-scored exactly)
// with the exhaustive step: calibration samples at args[0] offsets 150 tokens apart, each from <bos> and from
// <bos> + the exhaustive choice. Per problem one exhaustive step gives every candidate's exact L_q; the screen runs
// with an exact head of 0, 1, 2 and 4 sample tokens, and the fast step's choice for K = 16 and 64 is the best
// exact L_q among the screen's first K (what the fast step's re-scoring finds, to float rounding). Counters per
// head h and K: agree_h<h>_k<K> (% of problems with the exhaustive choice), excess (mean and max % of L_q over
// the exhaustive best), and the screen's time against the exhaustive step's.
void BM_FastAgreement(benchmark::State& st) {
    auto m = stories();
    const int64_t n = default_sample_tokens(m->config, kMaxPrefix);
    const std::vector<int64_t> heads{0, 4};
    const std::vector<int> keeps{16, 64};
    std::map<std::string, double> agree, excess, worst;
    std::map<int64_t, double> t_screen;
    double t_ex = 0;
    int total = 0;
    for (auto _ : st) {
        for (int64_t i = 0; i < st.range(0); ++i) {
            const int64_t off = 150 * i;
            GreedySearch s(m, sample_at(*m, off, n), all_tokens(*m));
            for (int depth = 0; depth < 2; ++depth) {
                auto ex = s.score(StepKind::Exhaustive);
                t_ex += ex.seconds;
                ++total;
                auto cl = ex.candidate_loss.accessor<double, 1>();
                std::string line;
                for (int64_t h : heads) {
                    const auto t0 = std::chrono::steady_clock::now();
                    CandidateScreen screen(*m, s.prefix_kv(), s.sample(), s.options().loss, h);
                    std::vector<double> mass;
                    const std::vector<double> est = screen.estimate(s.candidates(), 256, {}, 0, 1, "screen", &mass);
                    t_screen[h] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
                    std::vector<size_t> order(est.size()), by_mass(est.size());
                    std::iota(order.begin(), order.end(), 0);
                    std::iota(by_mass.begin(), by_mass.end(), 0);
                    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return est[a] < est[b]; });
                    std::stable_sort(by_mass.begin(), by_mass.end(), [&](size_t a, size_t b) { return mass[a] > mass[b]; });
                    int rank = 0, mrank = 0;
                    for (size_t j = 0; j < order.size(); ++j) {
                        if (s.candidates()[order[j]] == ex.best_token) rank = j;
                        if (s.candidates()[by_mass[j]] == ex.best_token) mrank = j;
                    }
                    line += " head " + std::to_string(h) + ": rank " + std::to_string(rank) + " mass rank " + std::to_string(mrank);
                    for (int k : keeps) {
                        double best = INFINITY;
                        int32_t tok = -1;
                        for (int j = 0; j < k && j < (int)order.size(); ++j) {
                            const int32_t t = s.candidates()[order[j]];
                            if (cl[t] < best || (cl[t] == best && t < tok)) best = cl[t], tok = t;
                        }
                        const std::string key = "h" + std::to_string(h) + "_k" + std::to_string(k);
                        agree[key] += tok == ex.best_token;
                        const double e = best / ex.best_loss - 1;
                        excess[key] += e;
                        worst[key] = std::max(worst[key], e);
                    }
                }
                std::fprintf(stderr, "offset %lld depth %d: exhaustive %d (L_q %.6g, x%.4f, %.1f s);%s\n", (long long)off, depth,
                             ex.best_token, ex.best_loss, ex.best_loss / ex.loss_before, ex.seconds, line.c_str());
                if (depth == 0) s.override_step(ex.best_token);
            }
        }
    }
    st.counters["problems"] = total;
    for (auto& [key, v] : agree) {
        st.counters["agree_%_" + key] = 100.0 * v / total;
        st.counters["excess_%_" + key] = 100.0 * excess[key] / total;
        st.counters["max_excess_%_" + key] = 100.0 * worst[key];
    }
    for (auto& [h, t] : t_screen) st.counters["screen_speedup_h" + std::to_string(h)] = t_ex / t;
}
// Diagnostic: on a short sample (args[0] tokens) from <bos>, the exhaustive step against the screen with an exact
// head of 0, 4 and the whole sample (where the screen is the range surrogate of the exact activations): the rank
// of the exhaustive choice in the screen's order and the rank correlation of estimate and L_q.
void BM_ScreenDiagnostic(benchmark::State& st) {
    auto m = stories();
    const int64_t n = st.range(0);
    for (auto _ : st) {
        for (int64_t off : {0, 150, 300}) {
            GreedySearch s(m, sample_at(*m, off, n), all_tokens(*m));
            auto ex = s.score(StepKind::Exhaustive);
            auto cl = ex.candidate_loss.accessor<double, 1>();
            const auto& cand = s.candidates();
            std::vector<double> exact;
            for (auto t : cand) exact.push_back(cl[t]);
            auto ranks = [](const std::vector<double>& v) {
                std::vector<size_t> o(v.size());
                std::iota(o.begin(), o.end(), 0);
                std::stable_sort(o.begin(), o.end(), [&](size_t a, size_t b) { return v[a] < v[b]; });
                std::vector<double> r(v.size());
                for (size_t j = 0; j < o.size(); ++j) r[o[j]] = j;
                return r;
            };
            const auto re = ranks(exact);
            std::string line;
            for (int64_t h : {int64_t(0), int64_t(4), n}) {
                CandidateScreen screen(*m, s.prefix_kv(), s.sample(), s.options().loss, h);
                const auto est = screen.estimate(cand, 256);
                const auto rs = ranks(est);
                double mx = 0, my = 0, sxy = 0, sxx = 0, syy = 0;
                for (size_t j = 0; j < re.size(); ++j) mx += re[j], my += rs[j];
                mx /= re.size(), my /= re.size();
                for (size_t j = 0; j < re.size(); ++j)
                    sxy += (re[j] - mx) * (rs[j] - my), sxx += (re[j] - mx) * (re[j] - mx), syy += (rs[j] - my) * (rs[j] - my);
                int rank = 0;
                for (size_t j = 0; j < cand.size(); ++j)
                    if (cand[j] == ex.best_token) rank = rs[j];
                char buf[160];
                std::snprintf(buf, sizeof buf, " head %lld: best's rank %d, spearman %.3f, est(best) %+.4g vs exact %+.4g;",
                              (long long)h, rank, sxy / std::sqrt(sxx * syy), est[std::find(cand.begin(), cand.end(), ex.best_token) - cand.begin()],
                              ex.best_loss - ex.loss_before);
                line += buf;
            }
            std::fprintf(stderr, "n %lld offset %lld: exhaustive %d x%.4f;%s\n", (long long)n, (long long)off, ex.best_token,
                         ex.best_loss / ex.loss_before, line.c_str());
        }
    }
}
BENCHMARK(BM_ScreenDiagnostic)->Arg(64)->Iterations(1)->Unit(benchmark::kSecond)->UseRealTime();

BENCHMARK(BM_FastAgreement)->Arg(6)->Arg(12)->Iterations(1)->Unit(benchmark::kSecond)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
    cushion::relaunch_with_passive_openmp(argv);
    cushion::use_all_cores();
    ::benchmark::Initialize(&argc, argv);
    if (::benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    ::benchmark::RunSpecifiedBenchmarks();
    ::benchmark::Shutdown();
    return 0;
}
namespace {
// Where one candidate batch's time goes: forward alone, forward + L_q (arg: batch rows).
void BM_CandidateBatchParts(benchmark::State& st) {
    at::NoGradGuard ng;
    auto m = stories();
    const int64_t b = st.range(0), n = 509;
    auto smp = sample_at(*m, 0, n);
    at::Tensor s = at::tensor(std::vector<int64_t>(smp.begin(), smp.end()), at::kLong).unsqueeze(0).expand({b, n});
    KVCache kv;
    ForwardArgs fa;
    fa.present = &kv;
    m->forward(at::ones({b, 2}, at::kLong), fa);
    double tf = 0, tq = 0;
    for (auto _ : st) {
        ForwardArgs a;
        a.prefix = &kv;
        a.skip_logits = true;
        tf += seconds([&] { m->forward(s, a); });
        tq += seconds([&] { quantization_loss(*m, s, a); });
    }
    st.counters["fwd_ms"] = 1e3 * tf / st.iterations();
    st.counters["fwd+lq_ms"] = 1e3 * tq / st.iterations();
}
BENCHMARK(BM_CandidateBatchParts)->Arg(1)->Arg(8)->Iterations(3)->Unit(benchmark::kMillisecond)->UseRealTime();
}  // namespace
