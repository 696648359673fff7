// Is there a real int8 linear on this CPU that beats float32? (issue 6, "really int8")
// Llama-7B-shaped linear layers, y = x W^T with x (M, K), W (N, K): prefill M = 512 and decode M = 1,
// K = N = 4096 (q/k/v/o) and K = 4096, N = 11008 (gate/up). Compared in the same run:
//   fp32   at::linear (OpenBLAS)
//   bf16   at::linear on bfloat16 x and W
//   int8 static  (per libtorch quantized engine): x -> quantize_per_tensor(quint8, the static scale/zero)
//                -> quantized::linear (per-channel qint8 W, int32 accumulation, requantized to quint8 with
//                an output scale/zero) -> dequantize to float. "gemm only" times the quantized::linear alone.
//   int8 dynamic quantized::linear_dynamic on float x (per-tensor range of x measured per call, float out).
//   int8 cushion path   what `--kernels int8` runs (core/int8_kernels.cpp): static codes + sentinel row through
//                linear_dynamic, float output (no output requantization); includes the x -> codes step.
// Counters: GOP/s (2 M K N per call) and x_fp32 = fp32 time / this time for the same shape (> 1: faster).
// Run: build/bin/bench_int8_linear --threads=1   and   --threads=2   (numbers go to tests/perf/RESULTS.md).
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/native/quantized/PackedParams.h>
#include <benchmark/benchmark.h>

#include <stdexcept>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <cstring>
#include <map>
#include <string>
#include <tuple>
#include <vector>

namespace {

using Shape = std::tuple<int64_t, int64_t, int64_t>;  // M, K, N
std::map<Shape, double> g_fp32_seconds;                // per-iteration fp32 time of each shape, this run

const std::vector<Shape> kShapes = {{512, 4096, 4096}, {512, 4096, 11008}, {1, 4096, 4096}, {1, 4096, 11008}};

// Activations with one modest outlier channel, like a block's linear input after normalisation.
at::Tensor make_x(int64_t M, int64_t K) {
    at::manual_seed(1);
    at::Tensor x = at::randn({M, K});
    x.select(1, 7).mul_(8);
    return x;
}
at::Tensor make_w(int64_t N, int64_t K) {
    at::manual_seed(2);
    return at::randn({N, K}) * 0.02;
}

void set_counters(benchmark::State& st, const Shape& s, double seconds_per_iter) {
    const auto [M, K, N] = s;
    st.counters["GOP/s"] = benchmark::Counter(2.0 * M * K * N * st.iterations() / 1e9, benchmark::Counter::kIsRate);
    auto it = g_fp32_seconds.find(s);
    if (it != g_fp32_seconds.end() && seconds_per_iter > 0) st.counters["x_fp32"] = it->second / seconds_per_iter;
}

template <class F>
double time_loop(benchmark::State& st, F&& f) {
    double total = 0;
    for (auto _ : st) {
        auto t0 = std::chrono::steady_clock::now();
        f();
        total += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    return st.iterations() ? total / st.iterations() : 0;
}

void BM_Fp32(benchmark::State& st, Shape s) {
    at::NoGradGuard ng;
    const auto [M, K, N] = s;
    at::Tensor x = make_x(M, K), w = make_w(N, K);
    const double t = time_loop(st, [&] { benchmark::DoNotOptimize(at::linear(x, w)); });
    g_fp32_seconds[s] = t;
    set_counters(st, s, t);
}

void BM_Bf16(benchmark::State& st, Shape s) {
    at::NoGradGuard ng;
    const auto [M, K, N] = s;
    at::Tensor x = make_x(M, K).to(at::kBFloat16), w = make_w(N, K).to(at::kBFloat16);
    const double t = time_loop(st, [&] { benchmark::DoNotOptimize(at::linear(x, w)); });
    set_counters(st, s, t);
}

c10::intrusive_ptr<LinearPackedParamsBase> prepack(const at::Tensor& w) {
    // Symmetric per-output-channel int8 weights on the restricted grid [-127, 127], as the package stores them.
    at::Tensor scale = (w.abs().amax({1}) / 127.0).to(at::kDouble);
    at::Tensor qw = at::quantize_per_channel(w, scale, at::zeros({w.size(0)}, at::kLong), 0, at::kQInt8);
    static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("quantized::linear_prepack", "");
    std::vector<c10::IValue> stack{qw, c10::IValue()};
    op.callBoxed(&stack);
    return stack.at(0).toCustomClass<LinearPackedParamsBase>();
}

// Static per-tensor activation parameters from x's own range (asymmetric, 8 bits), output range from y.
struct StaticParams {
    double x_scale;
    int64_t x_zero;
    double y_scale;
    int64_t y_zero;
};
StaticParams static_params(const at::Tensor& x, const at::Tensor& w) {
    auto rng = [](const at::Tensor& t, double* s, int64_t* z) {
        const double lo = std::min(0.0, t.min().item<double>()), hi = std::max(0.0, t.max().item<double>());
        *s = (hi - lo) / 255.0;
        *z = std::llround(-lo / *s);
    };
    StaticParams p{};
    rng(x, &p.x_scale, &p.x_zero);
    rng(at::linear(x, w), &p.y_scale, &p.y_zero);
    return p;
}

void BM_Int8Static(benchmark::State& st, Shape s, at::QEngine engine, bool gemm_only) {
    at::NoGradGuard ng;
    at::globalContext().setQEngine(engine);
    const auto [M, K, N] = s;
    at::Tensor x = make_x(M, K), w = make_w(N, K);
    auto packed = prepack(w);
    const StaticParams p = static_params(x, w);
    at::Tensor qx = at::quantize_per_tensor(x, p.x_scale, p.x_zero, at::kQUInt8);
    double t = 0;
    if (gemm_only) {
        t = time_loop(st, [&] { benchmark::DoNotOptimize(packed->apply(qx, p.y_scale, p.y_zero)); });
    } else {
        t = time_loop(st, [&] {
            at::Tensor q = at::quantize_per_tensor(x, p.x_scale, p.x_zero, at::kQUInt8);
            benchmark::DoNotOptimize(packed->apply(q, p.y_scale, p.y_zero).dequantize());
        });
    }
    // Relative error of the int8 result against fp32, for the record.
    at::Tensor ref = at::linear(x, w);
    at::Tensor y = packed->apply(qx, p.y_scale, p.y_zero).dequantize();
    st.counters["rel_err"] = ((y - ref).norm() / ref.norm()).item<double>();
    set_counters(st, s, t);
}

void BM_Int8Dynamic(benchmark::State& st, Shape s, at::QEngine engine) {
    at::NoGradGuard ng;
    at::globalContext().setQEngine(engine);
    const auto [M, K, N] = s;
    at::Tensor x = make_x(M, K), w = make_w(N, K);
    auto packed = prepack(w);
    const double t = time_loop(st, [&] { benchmark::DoNotOptimize(packed->apply_dynamic(x, false)); });
    at::Tensor ref = at::linear(x, w);
    st.counters["rel_err"] = ((packed->apply_dynamic(x, false) - ref).norm() / ref.norm()).item<double>();
    set_counters(st, s, t);
}

// What `cushion eval/ppl/generate PKG --kernels int8` runs per linear (core/int8_kernels.cpp): the static grid's
// integers (q - z) as float plus one sentinel row [-z, ..., 255 - z], quantized::linear_dynamic (which then picks
// scale 1 and zero point z: the static codes exactly, float output = exact int32 sum x weight scale), x s_x.
// nan_check: as core/int8_kernels.cpp since issue 15, the input is first searched for NaN (one reduction and a
// read-back per linear), which the integer product would otherwise turn into a finite, wrong result.
void BM_Int8CushionPath(benchmark::State& st, Shape s, at::QEngine engine, bool nan_check = false) {
    at::NoGradGuard ng;
    at::globalContext().setQEngine(engine);
    const auto [M, K, N] = s;
    at::Tensor x = make_x(M, K), w = make_w(N, K);
    auto packed = prepack(w);
    const StaticParams p = static_params(x, w);
    const double z = double(p.x_zero);
    auto run = [&] {
        if (nan_check && at::isnan(x).any().item<bool>()) throw std::runtime_error("NaN");
        at::Tensor centered = at::clamp(at::round(x / p.x_scale), -z, 255.0 - z);
        at::Tensor sentinel = at::zeros({1, K});
        sentinel.index_put_({0, 0}, -z);
        sentinel.index_put_({0, K - 1}, 255.0 - z);
        at::Tensor y = packed->apply_dynamic(at::cat({centered, sentinel}, 0), false).narrow(0, 0, M);
        return y.mul_(p.x_scale);
    };
    const double t = time_loop(st, [&] { benchmark::DoNotOptimize(run()); });
    // Against fp32 on the same quantized input: only weight quantization and float rounding remain.
    at::Tensor xq = at::fake_quantize_per_tensor_affine(x, p.x_scale, p.x_zero, 0, 255);
    at::Tensor ref = at::linear(xq, w);
    st.counters["rel_err"] = ((run() - ref).norm() / ref.norm()).item<double>();
    set_counters(st, s, t);
}

std::string shape_name(const Shape& s) {
    return "M" + std::to_string(std::get<0>(s)) + "_K" + std::to_string(std::get<1>(s)) + "_N" +
           std::to_string(std::get<2>(s));
}

const char* engine_name(at::QEngine e) {
    switch (e) {
        case at::QEngine::FBGEMM: return "fbgemm";
        case at::QEngine::QNNPACK: return "qnnpack";
        case at::QEngine::ONEDNN: return "onednn";
        case at::QEngine::X86: return "x86";
        default: return "none";
    }
}

// The shape's iteration count: the 512-token products take 0.1-1 s each on this CPU; keep runs short.
int64_t iters(const Shape& s) { return std::get<0>(s) >= 512 ? 3 : 50; }

}  // namespace

int main(int argc, char** argv) {
    int threads = 1;
    std::vector<char*> args;
    for (int i = 0; i < argc; ++i) {
        if (std::strncmp(argv[i], "--threads=", 10) == 0)
            threads = std::atoi(argv[i] + 10);
        else
            args.push_back(argv[i]);
    }
    int n = static_cast<int>(args.size());
    at::set_num_threads(threads);
    std::printf("intra-op threads: %d\nquantized engines:", at::get_num_threads());
    std::vector<at::QEngine> engines;
    for (auto e : at::globalContext().supportedQEngines()) {
        std::printf(" %s", engine_name(e));
        if (e != at::QEngine::NoQEngine) engines.push_back(e);
    }
    std::printf("\n");
    for (const auto& s : kShapes) {
        const std::string sn = shape_name(s);
        const int64_t it = iters(s);
        auto reg = [&](const std::string& name, auto&& fn) {
            auto guarded = [fn](benchmark::State& st) {
                try {
                    fn(st);
                } catch (const std::exception& e) {  // an engine that refuses the case: reported, not fatal
                    st.SkipWithError(e.what());
                }
            };
            benchmark::RegisterBenchmark(name.c_str(), guarded)->Iterations(it)->Unit(benchmark::kMillisecond)->UseRealTime();
        };
        reg("fp32_linear/" + sn, [s](benchmark::State& st) { BM_Fp32(st, s); });
        reg("bf16_linear/" + sn, [s](benchmark::State& st) { BM_Bf16(st, s); });
        for (auto e : engines) {
            const std::string en = engine_name(e);
            reg("int8_static_q_gemm_dq/" + en + "/" + sn, [s, e](benchmark::State& st) { BM_Int8Static(st, s, e, false); });
            reg("int8_static_gemm_only/" + en + "/" + sn, [s, e](benchmark::State& st) { BM_Int8Static(st, s, e, true); });
            reg("int8_dynamic/" + en + "/" + sn, [s, e](benchmark::State& st) { BM_Int8Dynamic(st, s, e); });
            reg("int8_cushion_path/" + en + "/" + sn, [s, e](benchmark::State& st) { BM_Int8CushionPath(st, s, e); });
            reg("int8_cushion_path_nan_check/" + en + "/" + sn,
                [s, e](benchmark::State& st) { BM_Int8CushionPath(st, s, e, true); });
        }
    }
    benchmark::Initialize(&n, args.data());
    benchmark::RunSpecifiedBenchmarks();
    return 0;
}
