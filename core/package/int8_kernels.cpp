#include "package/int8_kernels.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/native/quantized/PackedParams.h>
#include <torch/version.h>

#include <array>
#include <cmath>
#include <map>

#include "base/error.h"
#include "package/quantized_package.h"
#include "quant/quantizer.h"

namespace cushion {

namespace {

const char* engine_name(at::QEngine e) {
    switch (e) {
        case at::QEngine::ONEDNN: return "onednn";
        case at::QEngine::X86: return "x86";
        case at::QEngine::FBGEMM: return "fbgemm";
        case at::QEngine::QNNPACK: return "qnnpack";
        default: return "";
    }
}

// Best first: oneDNN (VNNI / AMX int8, no 16-bit saturation on VNNI), then x86 / FBGEMM, then QNNPACK (ARM-first;
// on this x86 machine 2x slower than float32).
std::vector<at::QEngine> engines_best_first() {
    std::vector<at::QEngine> out;
    const auto& sup = at::globalContext().supportedQEngines();
    for (at::QEngine e : {at::QEngine::ONEDNN, at::QEngine::X86, at::QEngine::FBGEMM, at::QEngine::QNNPACK})
        for (at::QEngine s : sup)
            if (s == e) out.push_back(e);
    return out;
}

Site input_site(LinearId id) {
    switch (id) {
        case LinearId::Q:
        case LinearId::K:
        case LinearId::V: return Site::AttnIn;
        case LinearId::O: return Site::OIn;
        case LinearId::Gate:
        case LinearId::Up: return Site::MlpIn;
        default: return Site::DownIn;
    }
}

// NaN has no integer code: the engine turns it into some finite product (or, on some engines, fails in its
// dynamic quantization: "In ChooseQuantizationParams, min should be less than or equal to max"), so the result
// would be silently wrong. Say which layer's input holds it. (+/-Inf is clamped to the range, as the simulated
// quantizer does.) One reduction over the input per linear, against the product's in x out multiply-adds.
void check_no_nan(int layer, LinearId id, const at::Tensor& x) {
    if (at::isnan(x).any().item<bool>())
        throw Error("int8 kernels: layer " + std::to_string(layer) + ", the input of the " + linear_name(id) +
                    " projection (" + site_name(input_site(id)) +
                    ") holds NaN: the activations stopped being finite before this layer's int8 product");
}

struct Entry {
    c10::intrusive_ptr<LinearPackedParamsBase> packed;  // null: float32 fallback
    double x_scale = 0;
    int64_t x_zero = 0;
};

class Int8Linears : public LinearKernels {
public:
    std::vector<std::array<Entry, kLinearCount>> entries;

    at::Tensor linear(int layer, LinearId id, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) const override {
        const Entry& e = entries.at(static_cast<size_t>(layer))[static_cast<int>(id)];
        if (!e.packed) return b.defined() ? at::linear(x, w, b) : at::linear(x, w);
        if (!x.device().is_cpu() || x.scalar_type() != at::kFloat)
            throw Error("int8 kernels: block " + std::to_string(layer) + " " + linear_name(id) +
                        ": input must be float32 on the CPU (the package was moved after the kernels were built)");
        check_no_nan(layer, id, x);
        return run(e, x, b);
    }

    // The exact integer product (see int8_kernels.h): codes shifted by the zero point, plus the sentinel row.
    static at::Tensor run(const Entry& e, const at::Tensor& x, const at::Tensor& b) {
        const int64_t in = x.size(-1);
        at::Tensor x2 = x.reshape({-1, in});
        const int64_t M = x2.size(0);
        // The hook already put x on the grid s * (q - z); this recovers q - z exactly (clamped as the quantizer does).
        at::Tensor centered = at::clamp(at::round(x2 / e.x_scale), -double(e.x_zero), 255.0 - double(e.x_zero));
        at::Tensor sentinel = at::zeros({1, in}, x2.options());
        sentinel.index_put_({0, 0}, -double(e.x_zero));
        sentinel.index_put_({0, in - 1}, 255.0 - double(e.x_zero));
        at::Tensor y = e.packed->apply_dynamic(at::cat({centered, sentinel}, 0), /*reduce_range=*/false).narrow(0, 0, M);
        y.mul_(e.x_scale);
        if (b.defined()) y.add_(b);
        std::vector<int64_t> shape = x.sizes().vec();
        shape.back() = y.size(1);
        return y.reshape(shape);
    }
};

// The at::_int_mm path (CUDA, and the CPU when asked): int8 (M, K) x int8 (K, N) -> int32. Activation codes are
// shifted to int8 (a = q_x - 128) and the shift folded back per output channel:
//     sum_k (q_x - z_x) q_w[c, k] = sum_k a_k q_w[c, k] + (128 - z_x) * sum_k q_w[c, k]
// _int_mm's shape rules (CUDA: M > 16, K and N multiples of 8) are met by zero padding, which adds nothing.
struct MmEntry {
    at::Tensor w;         // int8 (N_pad, K_pad), zero padded; handed to _int_mm transposed (column-major K x N)
    at::Tensor col_fix;   // float32 (N): (128 - z_x) * sum_k q_w[c, k]
    at::Tensor out_scale; // float32 (N): s_x * s_w[c]
    double x_scale = 0;
    int64_t x_zero = 0, k = 0, n = 0;
    bool on() const { return w.defined(); }
};

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

MmEntry make_mm_entry(const QuantizedWeight& qw, double x_scale, int64_t x_zero, c10::Device dev) {
    MmEntry e;
    e.x_scale = x_scale;
    e.x_zero = x_zero;
    e.n = qw.q.size(0);
    e.k = qw.q.size(1);
    at::Tensor q = qw.q.to(at::kChar);
    e.w = at::constant_pad_nd(q, {0, round_up(e.k, 8) - e.k, 0, round_up(e.n, 8) - e.n}, 0).contiguous().to(dev);
    e.col_fix = (q.to(at::kFloat).sum(1) * float(128 - x_zero)).to(dev);
    e.out_scale = (qw.scale.reshape({-1}).to(at::kDouble) * x_scale).to(at::kFloat).to(dev);
    return e;
}

at::Tensor run_mm(const MmEntry& e, const at::Tensor& x, const at::Tensor& b) {
    at::Tensor x2 = x.reshape({-1, e.k}).to(at::kFloat);
    const int64_t M = x2.size(0);
    // The hook already put x on the grid s * (q - z): recover q - z exactly, then shift to int8.
    at::Tensor a = at::clamp(at::round(x2 / e.x_scale), -double(e.x_zero), 255.0 - double(e.x_zero))
                       .add_(double(e.x_zero - 128))
                       .to(at::kChar);
    const int64_t M_pad = std::max<int64_t>(round_up(M, 8), 24);  // CUDA: more than 16 rows
    a = at::constant_pad_nd(a, {0, e.w.size(1) - e.k, 0, M_pad - M}, 0);
    at::Tensor acc = at::_int_mm(a, e.w.t()).narrow(0, 0, M).narrow(1, 0, e.n);
    at::Tensor y = (acc.to(at::kFloat) + e.col_fix) * e.out_scale;
    if (b.defined()) y.add_(b.to(at::kFloat));
    std::vector<int64_t> shape = x.sizes().vec();
    shape.back() = e.n;
    return y.reshape(shape).to(x.scalar_type());
}

class MmLinears : public LinearKernels {
public:
    c10::Device device{c10::kCPU};
    std::vector<std::array<MmEntry, kLinearCount>> entries;

    at::Tensor linear(int layer, LinearId id, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) const override {
        const MmEntry& e = entries.at(static_cast<size_t>(layer))[static_cast<int>(id)];
        if (!e.on()) return b.defined() ? at::linear(x, w, b) : at::linear(x, w);
        if (x.device() != device)
            throw Error("int8 kernels: block " + std::to_string(layer) + " " + linear_name(id) + ": input on " +
                        x.device().str() + ", kernels built for " + device.str() +
                        " (the package was moved after the kernels were built)");
        if (device.is_cpu()) check_no_nan(layer, id, x);  // on CUDA it would wait for the GPU at every linear
        return run_mm(e, x, b);
    }
};

c10::intrusive_ptr<LinearPackedParamsBase> prepack(const QuantizedWeight& qw) {
    at::Tensor scale = qw.scale.reshape({-1}).to(at::kDouble).contiguous();
    at::Tensor zero = at::zeros({qw.q.size(0)}, at::kLong);
    at::Tensor qweight = at::_make_per_channel_quantized_tensor(qw.q.contiguous(), scale, zero, 0);
    static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("quantized::linear_prepack", "");
    std::vector<c10::IValue> stack{qweight, c10::IValue()};
    op.callBoxed(&stack);
    return stack.at(0).toCustomClass<LinearPackedParamsBase>();
}

// Checks the first integer linear of `k` against the exact product (double) on extreme codes (0 and 255
// alternating: the worst case for engines that sum u8 x s8 pairs in 16 bits) and random ones.
void self_check(const LinearKernels& k, const QuantizedPackage& pkg, int layer, int i, double x_scale, int64_t x_zero,
                const std::string& engine, const std::string& where) {
    const QuantizedWeight& qw = pkg.weight_codes[layer][i];
    const int64_t in = qw.q.size(1);
    at::Tensor codes = (at::arange(in, at::kLong).remainder(2) * 255).to(at::kFloat).unsqueeze(0);
    codes = at::cat({codes, 255 - codes, at::randint(0, 256, {22, in}).to(at::kFloat)}, 0);
    at::Tensor x = ((codes - double(x_zero)) * x_scale).to(pkg.model->device());
    at::Tensor ref = at::linear((codes - double(x_zero)).to(at::kDouble), qw.dequantize().to(at::kDouble)) * x_scale;
    at::Tensor got = k.linear(layer, static_cast<LinearId>(i), x.to(at::kFloat), at::Tensor(), at::Tensor()).cpu().to(at::kDouble);
    const double err = ((got - ref).abs().max() / (ref.abs().max() + 1e-30)).item<double>();
    if (!(err < 1e-5))
        throw Error(where + "the " + engine + " int8 product disagrees with the exact result (max relative error " +
                    std::to_string(err) + "); this device's int8 path is not exact, use --kernels simulated");
}

// Why linear (l, i) cannot take an integer kernel ("" = it can); sets the site's static scale and zero point.
// needs_sentinel: the quantized-engine path adds a sentinel row with two values (see int8_kernels.h).
std::string integer_refusal(const QuantizedPackage& pkg, int l, int i, bool needs_sentinel, double* x_scale,
                            int64_t* x_zero) {
    const QuantizedWeight& qw = pkg.weight_codes.at(static_cast<size_t>(l))[i];
    const Site site = input_site(static_cast<LinearId>(i));
    if (needs_sentinel && qw.q.size(1) < 2) return "fewer than 2 inputs (no room for the sentinel row's two values)";
    if (qw.group_size != qw.q.size(1)) return "group-wise weight scales (the kernel takes one scale per output channel)";
    if (!pkg.config.site_on(site)) return std::string("input site ") + site_name(site) + " not quantized";
    const SiteRange& r = pkg.ranges->at(l, site);
    const ActQuantParams p = act_params(r.min, r.max, 8, at::zeros({}, at::kFloat));
    *x_scale = p.scale.item<double>();
    *x_zero = p.zero.item<int64_t>();
    if (*x_zero < 0 || *x_zero > 255) return "static range excludes 0 (zero point outside [0, 255])";
    return "";
}

Int8KernelInfo use_int_mm_kernels(QuantizedPackage& pkg, const std::string& where) {
    Int8KernelInfo info;
    info.engine = "int_mm";
    const c10::Device dev = pkg.model->device();
    auto kernels = std::make_shared<MmLinears>();
    kernels->device = dev;
    const int n_layers = static_cast<int>(pkg.model->config.n_layers);
    kernels->entries.resize(static_cast<size_t>(n_layers));
    std::map<std::string, int> fallback_why;
    int first_l = -1, first_i = -1;
    for (int l = 0; l < n_layers; ++l)
        for (int i = 0; i < kLinearCount; ++i) {
            const QuantizedWeight& qw = pkg.weight_codes.at(static_cast<size_t>(l))[i];
            if (!qw.q.defined()) continue;
            double s = 0;
            int64_t z = 0;
            const std::string why = integer_refusal(pkg, l, i, /*needs_sentinel=*/false, &s, &z);
            if (!why.empty()) {
                ++info.fallback_linears;
                ++fallback_why[why];
                continue;
            }
            kernels->entries[l][i] = make_mm_entry(qw, s, z, dev);
            ++info.int8_linears;
            if (first_l < 0) first_l = l, first_i = i;
        }
    for (const auto& [why, n] : fallback_why)
        info.notes.push_back(std::to_string(n) + " linear(s) stay on the float product: " + why);
    if (info.int8_linears == 0) throw Error(where + "no block linear can use the int8 kernel" +
                                            (info.notes.empty() ? std::string() : " (" + info.notes.front() + ")"));
    try {
        const MmEntry& e = kernels->entries[first_l][first_i];
        self_check(*kernels, pkg, first_l, first_i, e.x_scale, e.x_zero, "at::_int_mm", where);
    } catch (const Error&) {
        throw;
    } catch (const std::exception& ex) {
        throw Error(where + "at::_int_mm failed on " + dev.str() + ": " + ex.what() + "; use --kernels simulated");
    }
    pkg.kernels = kernels;
    return info;
}

}  // namespace

std::vector<std::string> int8_engines_available() {
    std::vector<std::string> out;
    for (at::QEngine e : engines_best_first()) out.push_back(engine_name(e));
    return out;
}

Int8KernelInfo use_int8_kernels(QuantizedPackage& pkg, Int8Path path) {
    const QuantConfig& cfg = pkg.config;
    const std::string where = pkg.dir + ": --kernels int8: ";
    const c10::Device dev = pkg.model->device();
    if (!dev.is_cpu() && !dev.is_cuda())
        throw Error(where + "no integer kernels on " + dev.str() + "; use --kernels simulated");
    const bool use_mm = dev.is_cuda() || path == Int8Path::IntMm;
    if (!use_mm && pkg.model->dtype() != at::kFloat)
        throw Error(where + "needs --dtype fp32 on the CPU (the integer products dequantize to float32)");
    if (!cfg.weights_on() || cfg.wbits != 8 || pkg.weight_codes.empty())
        throw Error(where + "needs 8-bit weights; this package has " +
                    (cfg.weights_on() ? std::to_string(cfg.wbits) + "-bit" : std::string("full-precision")) +
                    " weights (no int4 kernel here); use --kernels simulated");
    if (!cfg.acts_on() || cfg.abits != 8 || cfg.act != ActGranularity::PerTensorStatic || !pkg.ranges)
        throw Error(where + "needs 8-bit per-tensor-static activations; this package has " + cfg.describe() +
                    "; use --kernels simulated");
    if (use_mm) return use_int_mm_kernels(pkg, where);
    const auto engines = engines_best_first();
    if (engines.empty())
        throw Error(where + "this libtorch has no quantized engine (supportedQEngines is empty); use --kernels simulated");

    Int8KernelInfo info;
    const at::QEngine engine = engines.front();
    info.engine = engine_name(engine);
    const at::QEngine previous = at::globalContext().qEngine();
    at::globalContext().setQEngine(engine);
    auto kernels = std::make_shared<Int8Linears>();
    const int n_layers = static_cast<int>(pkg.model->config.n_layers);
    kernels->entries.resize(static_cast<size_t>(n_layers));
    std::map<std::string, int> fallback_why;
    int first_l = -1, first_i = -1;
    try {
        for (int l = 0; l < n_layers; ++l)
            for (int i = 0; i < kLinearCount; ++i) {
                const QuantizedWeight& qw = pkg.weight_codes.at(static_cast<size_t>(l))[i];
                if (!qw.q.defined()) continue;  // the architecture lacks it (OPT's gate)
                Entry e;
                const std::string why = integer_refusal(pkg, l, i, /*needs_sentinel=*/true, &e.x_scale, &e.x_zero);
                if (why.empty()) {
                    e.packed = prepack(qw);
                    ++info.int8_linears;
                    if (first_l < 0) first_l = l, first_i = i;
                } else {
                    ++info.fallback_linears;
                    ++fallback_why[why];
                }
                kernels->entries[l][i] = e;
            }
    } catch (const Error&) {
        at::globalContext().setQEngine(previous);
        throw;
    } catch (const std::exception& ex) {
        at::globalContext().setQEngine(previous);
        throw Error(where + "the " + info.engine + " engine refused to pack the weights: " + ex.what());
    }
    at::globalContext().setQEngine(previous);
    for (const auto& [why, n] : fallback_why)
        info.notes.push_back(std::to_string(n) + " linear(s) stay on the float32 product: " + why);
    if (info.int8_linears == 0) throw Error(where + "no block linear can use the int8 kernel" +
                                            (info.notes.empty() ? std::string() : " (" + info.notes.front() + ")"));
    const Entry& e = kernels->entries[first_l][first_i];
    self_check(*kernels, pkg, first_l, first_i, e.x_scale, e.x_zero, info.engine + " engine's", where);
    pkg.kernels = kernels;
    return info;
}

}  // namespace cushion
