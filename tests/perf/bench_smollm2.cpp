// SmolLM2-135M on the CPU: where the fast greedy step's time goes, and prefill / decode throughput, each as a
// fraction of the fp32 matmul rate measured in the same run (the machine is shared: absolute times move with the
// load, the fraction much less). Not a test; figures go to tests/perf/RESULTS.md.
//
//   bench_smollm2 step    [--model GGUF] [--candidates N] [--batch 256] [--full]
//       the fast step's parts: the screen's preparation (sample forward + backward + range slopes), the screen's
//       candidate passes (forward of 256 x 1 tokens after the prefix) and its estimate products, over the first N
//       candidates (default 2048; extrapolated to the whole vocabulary), and the exact re-score of 16 candidates on
//       the 512-token sample at 1 and 2 threads. --full also runs one whole fast step (s.score(Fast)).
//       --phase prep|screen|rescore stops after that part (rescore: only it; fwd: the candidate forwards only), for a profiler.
//   bench_smollm2 depth   [--model GGUF] [--candidates 8192] [--offset 0] [--depths 4,8,12,16,20]
//       how much of the screen's ranking its first L blocks decide (see run_depth).
//   bench_smollm2 prefill [--model GGUF] [--tokens 512] [--reps 3] [--threads N] [--dtypes fp32,bf16] [--batches 1,4]
//                         [--decode-prompt T] [--decode-tokens 64]
//       prefill tokens/s of T-token prompts (last-position logits only) at each batch and dtype, and decode tokens/s
//       (batch 1, --decode-tokens after a --decode-prompt-token prompt; --decode-tokens 0 skips it). Any model file
//       (stories260K's GGUF too). --threads: libtorch intra-op threads (default: all cores).
//   bench_smollm2 prefill --package DIR [--tokens 512] [--reps 3] [--threads N]
//       one forward of a T-token prompt (batch 1) of an exported package: its dequantized fp32 model, simulated
//       (the activation quantizer's hook) and `--kernels int8`, twice, alternated: the int8 kernels per forward.
// Both print the matmul rate (1024^3, 2 threads and 1 thread) at the start and at the end.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstring>
#include <functional>
#include <numeric>
#include <string>
#include <tuple>
#include <vector>

#include "base/error.h"
#include "base/resources.h"
#include "base/threads.h"
#include "cushion/candidate_screen.h"
#include "cushion/greedy_search.h"
#include "cushion/token_lists.h"
#include "model/documents.h"
#include "model/generation.h"
#include "model/perplexity.h"
#include "package/open_target.h"

using namespace cushion;

namespace {

double cpu_now() {
    timespec ts{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}
double g_cpu = 0;  // process CPU seconds spent inside seconds() since the last line()

double seconds(const std::function<void()>& f) {
    const double c0 = cpu_now();
    const auto t0 = std::chrono::steady_clock::now();
    f();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    g_cpu += cpu_now() - c0;
    return s;
}

// Best of 5 1024^3 products, GFLOP/s, at the given intra-op threads.
double matmul_rate(int threads) {
    const IntraOpThreads t(threads);
    at::Tensor a = at::randn({1024, 1024}), b = at::randn({1024, 1024});
    (void)at::mm(a, b);
    double best = 0;
    for (int i = 0; i < 5; ++i) best = std::max(best, 2.0 * 1024 * 1024 * 1024 / 1e9 / seconds([&] { (void)at::mm(a, b); }));
    return best;
}

double load_average() {
    double l = -1;
    if (FILE* f = std::fopen("/proc/loadavg", "r")) {
        if (std::fscanf(f, "%lf", &l) != 1) l = -1;
        std::fclose(f);
    }
    return l;
}

double g_rate = 0;  // 2-thread matmul GFLOP/s at the start

void print_rates(const char* when) {
    const double r2 = matmul_rate(2), r1 = matmul_rate(1);
    if (g_rate == 0) g_rate = r2;
    std::printf("matmul 1024^3 (%s): %.1f GFLOP/s on 2 threads, %.1f on 1; load average %.2f\n", when, r2, r1, load_average());
    std::fflush(stdout);
}

const char* arg(int argc, char** argv, const char* name, const char* def) {
    for (int i = 2; i + 1 < argc; ++i)
        if (std::strcmp(argv[i], name) == 0) return argv[i + 1];
    return def;
}
bool flag(int argc, char** argv, const char* name) {
    for (int i = 2; i < argc; ++i)
        if (std::strcmp(argv[i], name) == 0) return true;
    return false;
}

std::string default_smollm2() { return resource_dir() + "/../models/SmolLM2-135M-Instruct.Q4_1.gguf"; }

// One measured part: wall seconds, the process's CPU seconds spent in it (all threads; steadier than the wall time on
// a shared machine), its FLOPs and rate, and the rate as a fraction of the 2-thread matmul rate of this run's start.
void line(const char* what, double secs, double flops) {
    const double gf = flops / 1e9 / secs;
    std::printf("  %-58s %8.2f s (cpu %7.2f s) %8.1f GFLOP %7.1f GFLOP/s %5.1f%% of matmul\n", what, secs, g_cpu, flops / 1e9,
                gf, 100 * gf / g_rate);
    g_cpu = 0;
    std::fflush(stdout);
}

int run_step(int argc, char** argv) {
    auto m = load_model(arg(argc, argv, "--model", default_smollm2().c_str()));
    const int64_t N = std::atoll(arg(argc, argv, "--candidates", "2048"));
    const int64_t SB = std::atoll(arg(argc, argv, "--batch", "256"));  // candidates per screening pass
    GreedySearchOptions o;
    o.start_tokens = parse_start_tokens("bos", *m->tokenizer, "start");
    const int64_t n = default_sample_tokens(m->config, o.max_prefix);
    const auto docs = tokenize_documents(*m, read_documents(sample_text_path("tinystories-calib.txt")), int64_t(1) << 40);
    const std::vector<int32_t> sample = make_search_sample(docs, m->tokenizer->bos_id(), n);
    std::shared_ptr<const Model> mc = m;
    GreedySearch s(mc, sample, o);
    const auto& cand = s.candidates();
    const int64_t C = cand.size(), P = s.prefix().size();
    std::printf("SmolLM2 fast step: %lld candidates, sample %lld tokens, prefix %lld, intra-op threads %d\n", (long long)C,
                (long long)n, (long long)P, at::get_num_threads());
    const ModelConfig& c = m->config;
    const double f_screen = CandidateScreen::flops_per_candidate(c, P, n, 0);
    const double f_exact = search_flops_per_candidate(c, P, n);
    const double f_fwd1 = CandidateScreen::flops_per_candidate(c, P, 0, 0);  // the one-token forward alone

    const std::string phase = arg(argc, argv, "--phase", "all");  // all, prep, screen or rescore (for a profiler)
    std::unique_ptr<CandidateScreen> screen;
    if (phase == "rescore") {
        const std::vector<int32_t> keep(cand.begin(), cand.begin() + 16);
        line("re-score 16 candidates, 512 tokens, search threads (auto)", seconds([&] { (void)s.evaluate(keep); }), 16 * f_exact);
        return 0;
    }
    if (phase == "fwd") {  // the screen's candidate forwards alone, for a profiler
        at::NoGradGuard ng;
        double t = 0;
        for (int64_t i = 0; i + SB <= std::min<int64_t>(N, C); i += SB) {
            std::vector<int64_t> ids(cand.begin() + i, cand.begin() + i + SB);
            KVCache ext;
            ForwardArgs ea;
            ea.prefix = &s.prefix_kv();
            ea.present = &ext;
            ea.skip_logits = true;
            ea.stop_after_kv = c.n_layers - 1;
            t += seconds([&] { m->forward(at::tensor(ids, at::kLong).view({SB, 1}), ea); });
        }
        char b2[120];
        std::snprintf(b2, sizeof b2, "candidate forwards (%lld x 1, K/V only in the last block)", (long long)SB);
        line(b2, t, std::min<int64_t>(N, C) / SB * SB * f_fwd1);
        return 0;
    }
    const double t_prep = seconds([&] { screen = std::make_unique<CandidateScreen>(*m, s.prefix_kv(), sample, o.loss, 0); });
    line("screen preparation (sample fwd + bwd + range slopes)", t_prep, 3 * f_exact);
    if (phase == "prep") return 0;

    std::vector<int32_t> part(cand.begin(), cand.begin() + std::min<int64_t>(N, C));
    const int64_t batches = (part.size() + SB - 1) / SB;
    double t_fwd = 0;
    {
        at::NoGradGuard ng;
        for (int64_t i = 0; i < batches; ++i) {
            const int64_t b = std::min<int64_t>(SB, part.size() - i * SB);
            std::vector<int64_t> ids(part.begin() + i * SB, part.begin() + i * SB + b);
            at::Tensor t = at::tensor(ids, at::kLong).view({b, 1});
            KVCache ext;
            ForwardArgs ea;
            ea.prefix = &s.prefix_kv();
            ea.present = &ext;
            ea.skip_logits = true;
            t_fwd += seconds([&] { m->forward(t, ea); });
        }
    }
    char buf[200];
    std::snprintf(buf, sizeof buf, "screen, %zu candidates: candidate forwards (batch x 1)", part.size());
    line(buf, t_fwd, part.size() * f_fwd1);
    // The block linears alone at the candidate forward's shapes (256 rows), on random inputs: the GEMM floor.
    double t_lin = 0;
    {
        at::NoGradGuard ng;
        at::Tensor x = at::randn({SB, c.dim}), g = at::randn({SB, c.hidden_dim});
        for (int64_t i = 0; i < batches; ++i)
            for (const LayerWeights& L : m->weights.layers)
                t_lin += seconds([&] {
                    (void)at::linear(x, L.wq), (void)at::linear(x, L.wk), (void)at::linear(x, L.wv), (void)at::linear(x, L.wo);
                    (void)at::linear(x, L.w_gate), (void)at::linear(x, L.w_up), (void)at::linear(g, L.w_down);
                });
    }
    std::snprintf(buf, sizeof buf, "screen, %zu candidates: the block linears alone", part.size());
    line(buf, t_lin, part.size() * f_fwd1);
    double t_est = seconds([&] { (void)screen->estimate(part, SB); });
    const double scale = double(C) / double(part.size());
    std::snprintf(buf, sizeof buf, "screen, %zu candidates: estimate() (forwards + products)", part.size());
    line(buf, t_est, part.size() * f_screen);
    line("  products and the rest (estimate - forwards)", t_est - t_fwd, part.size() * (f_screen - f_fwd1));
    std::snprintf(buf, sizeof buf, "screen, all %lld candidates (extrapolated)", (long long)C);
    line(buf, t_est * scale, C * f_screen);
    if (phase == "screen") return 0;

    const std::vector<int32_t> keep(cand.begin(), cand.begin() + 16);
    const double t_re1 = seconds([&] { (void)s.evaluate(keep); });
    line("re-score 16 candidates, 512 tokens, search threads (auto)", t_re1, 16 * f_exact);
    {
        GreedySearchOptions o2 = o;
        o2.threads = -1;
        GreedySearch s2(mc, sample, o2);
        const double t_re2 = seconds([&] { (void)s2.evaluate(keep); });
        line("re-score 16 candidates, 512 tokens, all threads", t_re2, 16 * f_exact);
    }
    const double total = t_prep + t_est * scale + t_re1;
    line("the fast step, estimated from the parts", total, 3 * f_exact + C * f_screen + 16 * f_exact);
    if (flag(argc, argv, "--full")) {
        auto r = s.score(StepKind::Fast);
        line("the fast step, measured (score(Fast))", r.seconds, 3 * f_exact + C * f_screen + 16 * f_exact);
        std::printf("  best %d, L_q %.6f (x%.4f)\n", r.best_token, r.best_loss, r.best_loss / r.loss_before);
    }
    return 0;
}

// How much of the screen's ranking the first blocks decide: the full estimate over the first N candidates against the
// estimate of the first L blocks only (the candidates' forward that deep), for L in --depths: the rank, under the
// truncated estimate, of each of the full estimate's best 16 (what the fast step re-scores), and the time.
int run_depth(int argc, char** argv) {
    auto m = load_model(arg(argc, argv, "--model", default_smollm2().c_str()));
    const int64_t N = std::atoll(arg(argc, argv, "--candidates", "8192"));
    const int64_t offset = std::atoll(arg(argc, argv, "--offset", "0"));
    GreedySearchOptions o;
    o.start_tokens = parse_start_tokens("bos", *m->tokenizer, "start");
    const int64_t n = default_sample_tokens(m->config, o.max_prefix);
    const auto docs = tokenize_documents(*m, read_documents(sample_text_path("tinystories-calib.txt")), int64_t(1) << 40);
    const std::vector<int32_t> sample = make_search_sample(docs, m->tokenizer->bos_id(), n);
    std::shared_ptr<const Model> mc = m;
    GreedySearch s(mc, sample, o);
    const auto& cand = s.candidates();
    const int64_t first = std::min<int64_t>(offset, cand.size()), count = std::min<int64_t>(N, cand.size() - first);
    std::vector<int32_t> part(cand.begin() + first, cand.begin() + first + count);
    CandidateScreen screen(*m, s.prefix_kv(), sample, o.loss, 0);
    auto order_of = [](const std::vector<double>& e) {
        std::vector<size_t> o(e.size());
        std::iota(o.begin(), o.end(), 0);
        std::stable_sort(o.begin(), o.end(), [&](size_t a, size_t b) { return e[a] < e[b]; });
        return o;
    };
    const double t_full = seconds([] {});
    std::vector<double> full;
    const double tf = seconds([&] { full = screen.estimate(part, 256); });
    (void)t_full;
    const auto of = order_of(full);
    std::printf("depth study: candidates %lld..%lld (%lld), full estimate (%lld blocks) in %.1f s; its best 16: ",
                (long long)first, (long long)(first + count - 1), (long long)count, (long long)screen.depth(), tf);
    for (int j = 0; j < 16; ++j) std::printf("%d ", part[of[j]]);
    std::printf("\n");
    std::string depths = arg(argc, argv, "--depths", "4,8,12,16,20");
    for (size_t p = 0; p < depths.size();) {
        size_t q = depths.find(',', p);
        if (q == std::string::npos) q = depths.size();
        const int64_t L = std::atoll(depths.substr(p, q - p).c_str());
        p = q + 1;
        screen.set_depth(L);
        std::vector<double> e;
        const double t = seconds([&] { e = screen.estimate(part, 256); });
        const auto oe = order_of(e);
        std::vector<int64_t> rank(part.size());
        for (size_t j = 0; j < oe.size(); ++j) rank[oe[j]] = j;
        int64_t worst = 0;
        std::string ranks;
        for (int j = 0; j < 16; ++j) {
            worst = std::max(worst, rank[of[j]]);
            ranks += std::to_string(rank[of[j]]) + " ";
        }
        std::printf("  depth %2lld: %.1f s (%.2f of the full), ranks of the full best 16: %s(worst %lld = top %.2f%%)\n",
                    (long long)L, t, t / tf, ranks.c_str(), (long long)worst, 100.0 * (worst + 1) / part.size());
        std::fflush(stdout);
    }
    return 0;
}

std::vector<std::string> split_list(const std::string& s) {
    std::vector<std::string> out;
    size_t a = 0;
    while (a <= s.size()) {
        const size_t b = std::min(s.find(',', a), s.size());
        if (b > a) out.push_back(s.substr(a, b - a));
        a = b + 1;
    }
    return out;
}

// Best-of-`reps` wall seconds of one forward of `ids` (last-position logits), after one warm-up.
double forward_seconds(const Model& m, const at::Tensor& ids, const ForwardArgs& fa, int reps) {
    (void)m.forward(ids, fa);
    double best = 1e30;
    for (int r = 0; r < reps; ++r) best = std::min(best, seconds([&] { (void)m.forward(ids, fa); }));
    return best;
}

int run_prefill(int argc, char** argv) {
    const std::string pkg_path = arg(argc, argv, "--package", "");
    const int threads = std::atoi(arg(argc, argv, "--threads", "0"));
    const IntraOpThreads it(threads);
    RunTarget target, target_int8;
    if (!pkg_path.empty()) {
        OpenOptions o;
        target = open_target(pkg_path, o);
        o.kernels = "int8";
        target_int8 = open_target(pkg_path, o);
        for (const auto& n : target_int8.notes) std::printf("  int8 kernels: %s\n", n.c_str());
    } else {
        target.model = load_model(arg(argc, argv, "--model", default_smollm2().c_str()));
    }
    Model* m = target.model.get();
    const int64_t T = std::atoll(arg(argc, argv, "--tokens", "512"));
    const int reps = std::atoi(arg(argc, argv, "--reps", "3"));
    const auto docs = tokenize_documents(*m, read_documents(sample_text_path("tinystories-calib.txt")), int64_t(1) << 40);
    const std::vector<int32_t> sample = make_search_sample(docs, m->tokenizer->bos_id(), T);
    const ModelConfig& c = m->config;
    const double C = c.dim, Q = double(c.n_heads) * c.head_dim, KV = c.kv_dim();
    const double linear = 2 * (C * Q + 2 * C * KV + Q * C + 3 * C * c.hidden_dim);
    const double flops1 = c.n_layers * (T * linear + 4.0 * Q * T * (T + 1) / 2) + 2 * C * c.vocab_size;  // causal, last logits
    std::printf("prefill, %lld-token prompts, last-position logits (%.3f GFLOP a prompt), best of %d, %d intra-op threads\n",
                (long long)T, flops1 / 1e9, reps, at::get_num_threads());
    at::NoGradGuard ng;
    at::Tensor ids1 = at::tensor(std::vector<int64_t>(sample.begin(), sample.end()), at::kLong).view({1, T});
    if (!pkg_path.empty()) {
        // One forward of a T-token prompt, batch 1: the package's dequantized float32 model alone, the same with its
        // activation quantizer (simulated, as `--kernels simulated` runs), and with the int8 kernels.
        ForwardArgs plain;
        plain.last_logits_only = true;
        ForwardArgs sim = plain, int8 = plain;
        sim.hook = target.pkg->hook.get();
        sim.kernels = target.pkg->kernels.get();
        int8.hook = target_int8.pkg->hook.get();
        int8.kernels = target_int8.pkg->kernels.get();
        if (!int8.kernels) throw Error("the package does not run on the int8 kernels (see the notes above)");
        const Model* m8 = target_int8.model.get();
        for (int round = 0; round < 2; ++round) {  // alternated, for the shared machine
            for (const auto& [name, mm, fa] : {std::tuple<const char*, const Model*, ForwardArgs>{"fp32 (dequantized weights, no quantizer)", m, plain},
                                               {"simulated (fp32, quantizer hook)", m, sim},
                                               {"int8 kernels (quantizer hook + int8 linears)", m8, int8}}) {
                const double s = forward_seconds(*mm, ids1, fa, reps);
                char buf[160];
                std::snprintf(buf, sizeof buf, "round %d %s: %.1f ms a forward", round + 1, name, 1e3 * s);
                line(buf, s, flops1);
            }
        }
        return 0;
    }
    for (const std::string& dn : split_list(arg(argc, argv, "--dtypes", "fp32,bf16"))) {
        const at::ScalarType dt = parse_dtype(dn);
        m->to(c10::Device(c10::kCPU), dt);
        for (const std::string& bs : split_list(arg(argc, argv, "--batches", "1,4"))) {
            const int64_t B = std::atoll(bs.c_str());
            ForwardArgs fa;
            fa.last_logits_only = true;
            const double best = forward_seconds(*m, ids1.expand({B, T}).contiguous(), fa, reps);
            char buf[120];
            std::snprintf(buf, sizeof buf, "%s batch %lld: %.0f tokens/s", dtype_name(dt).c_str(), (long long)B, B * T / best);
            line(buf, best, B * flops1);
        }
        // Decode: N greedy tokens after a prompt of --decode-prompt tokens, batch 1 (generate() runs the prompt first
        // and picks the first token from its logits: the time of a 1-token generate is subtracted, leaving N - 1).
        const int64_t DP = std::atoll(arg(argc, argv, "--decode-prompt", std::to_string(T).c_str()));
        const int64_t N = std::atoll(arg(argc, argv, "--decode-tokens", "64"));
        if (N < 2) continue;
        const std::vector<int32_t> prompt(sample.begin(), sample.begin() + std::min<int64_t>(DP, T));
        GenerateOptions g;
        g.max_new_tokens = N;
        g.stop_at_eos = false;
        GenerateOptions g1 = g;
        g1.max_new_tokens = 1;
        double t_gen = 1e30, t_pf = 1e30;
        for (int r = 0; r < reps; ++r) {
            t_gen = std::min(t_gen, seconds([&] { (void)generate(*m, prompt, g); }));
            t_pf = std::min(t_pf, seconds([&] { (void)generate(*m, prompt, g1); }));
        }
        std::printf("  %s decode batch 1 after %lld tokens: %.1f tokens/s (%lld tokens in %.3f s)\n", dtype_name(dt).c_str(),
                    (long long)prompt.size(), (N - 1) / (t_gen - t_pf), (long long)(N - 1), t_gen - t_pf);
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    relaunch_with_passive_openmp(argv);
    use_all_cores();
    const std::string what = argc >= 2 ? argv[1] : "";
    if (what != "step" && what != "prefill" && what != "depth") {
        std::fprintf(stderr, "usage: bench_smollm2 step|depth|prefill [--model GGUF] [options] (see the source's header)\n");
        return 2;
    }
    try {
        print_rates("start");
        const int rc = what == "step" ? run_step(argc, argv) : what == "depth" ? run_depth(argc, argv) : run_prefill(argc, argv);
        print_rates("end");
        return rc;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_smollm2: %s\n", e.what());
        return 1;
    }
}
