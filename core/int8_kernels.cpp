#include "int8_kernels.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/native/quantized/PackedParams.h>
#include <torch/version.h>

#include <array>
#include <cmath>
#include <map>

#include "error.h"
#include "quantized_package.h"
#include "quantizer.h"

// at::_int_mm exists from libtorch 2.1 (CUDA). The CUDA path below is a design sketch: it has never been built or
// run (no GPU and no libtorch 2.x were available), so it stays off unless CUSHION_EXPERIMENTAL_INT_MM is defined.
#if defined(CUSHION_EXPERIMENTAL_INT_MM) && (TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1))
#define CUSHION_HAVE_INT_MM 1
#else
#define CUSHION_HAVE_INT_MM 0
#endif

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

c10::intrusive_ptr<LinearPackedParamsBase> prepack(const QuantizedWeight& qw) {
    at::Tensor scale = qw.scale.reshape({-1}).to(at::kDouble).contiguous();
    at::Tensor zero = at::zeros({qw.q.size(0)}, at::kLong);
    at::Tensor qweight = at::_make_per_channel_quantized_tensor(qw.q.contiguous(), scale, zero, 0);
    static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("quantized::linear_prepack", "");
    std::vector<c10::IValue> stack{qweight, c10::IValue()};
    op.callBoxed(&stack);
    return stack.at(0).toCustomClass<LinearPackedParamsBase>();
}

}  // namespace

std::vector<std::string> int8_engines_available() {
    std::vector<std::string> out;
    for (at::QEngine e : engines_best_first()) out.push_back(engine_name(e));
    return out;
}

Int8KernelInfo use_int8_kernels(QuantizedPackage& pkg) {
    const QuantConfig& cfg = pkg.config;
    const std::string where = pkg.dir + ": --kernels int8: ";
    if (pkg.model->device().is_cuda()) {
#if CUSHION_HAVE_INT_MM
        // Design (untested): per linear, A = (q_x - 128) as int8 (M, K) [M padded to > 16], B = q_w^T int8 (K, N),
        // acc = at::_int_mm(A, B) (int32), y = (acc + (128 - z_x) * q_w.sum(1)) * (s_x * s_w) + b, in the model
        // dtype. Not written out: it could not be run here.
        throw Error(where + "the CUDA int8 path (at::_int_mm) is designed but not implemented yet; use --kernels simulated");
#else
        throw Error(where + "no integer kernels on CUDA in this build (they need libtorch >= 2.1's at::_int_mm and are "
                            "not implemented yet); use --kernels simulated");
#endif
    }
    if (pkg.model->dtype() != at::kFloat)
        throw Error(where + "needs --dtype fp32 (the integer products dequantize to float32)");
    if (!cfg.weights_on() || cfg.wbits != 8 || pkg.weight_codes.empty())
        throw Error(where + "needs 8-bit weights; this package has " +
                    (cfg.weights_on() ? std::to_string(cfg.wbits) + "-bit" : std::string("full-precision")) +
                    " weights (no int4 kernel here); use --kernels simulated");
    if (!cfg.acts_on() || cfg.abits != 8 || cfg.act != ActGranularity::PerTensorStatic || !pkg.ranges)
        throw Error(where + "needs 8-bit per-tensor-static activations; this package has " + cfg.describe() +
                    "; use --kernels simulated");
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
    const at::Tensor like = at::zeros({}, at::kFloat);
    try {
        for (int l = 0; l < n_layers; ++l)
            for (int i = 0; i < kLinearCount; ++i) {
                const LinearId id = static_cast<LinearId>(i);
                const QuantizedWeight& qw = pkg.weight_codes.at(static_cast<size_t>(l))[i];
                if (!qw.q.defined()) continue;  // the architecture lacks it (OPT's gate)
                const Site site = input_site(id);
                std::string why;
                Entry e;
                if (qw.q.size(1) < 2) {
                    why = "fewer than 2 inputs (no room for the sentinel row's two values)";
                } else if (qw.group_size != qw.q.size(1)) {
                    why = "group-wise weight scales (the kernel takes one scale per output channel)";
                } else if (!cfg.site_on(site)) {
                    why = std::string("input site ") + site_name(site) + " not quantized";
                } else {
                    const SiteRange& r = pkg.ranges->at(l, site);
                    const ActQuantParams p = act_params(r.min, r.max, 8, like);
                    e.x_scale = p.scale.item<double>();
                    e.x_zero = p.zero.item<int64_t>();
                    if (e.x_zero < 0 || e.x_zero > 255)
                        why = "static range excludes 0 (zero point outside [0, 255])";
                    else
                        e.packed = prepack(qw);
                }
                if (e.packed) {
                    ++info.int8_linears;
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

    // Self-check on the first int8 linear: extreme codes (0 and 255 alternating, the worst case for engines that
    // sum u8 x s8 pairs in 16 bits) against the float32 product on the same values.
    for (int l = 0; l < n_layers; ++l)
        for (int i = 0; i < kLinearCount; ++i) {
            const Entry& e = kernels->entries[l][i];
            if (!e.packed) continue;
            const QuantizedWeight& qw = pkg.weight_codes[l][i];
            const int64_t in = qw.q.size(1);
            at::Tensor codes = (at::arange(in, at::kLong).remainder(2) * 255).to(at::kFloat).unsqueeze(0);
            codes = at::cat({codes, 255 - codes, at::randint(0, 256, {6, in}).to(at::kFloat)}, 0);
            at::Tensor x = (codes - double(e.x_zero)) * e.x_scale;
            at::Tensor ref = at::linear((codes - double(e.x_zero)).to(at::kDouble), qw.dequantize().to(at::kDouble)) * e.x_scale;
            at::Tensor got = Int8Linears::run(e, x, at::Tensor()).to(at::kDouble);
            const double err = ((got - ref).abs().max() / (ref.abs().max() + 1e-30)).item<double>();
            if (!(err < 1e-5))
                throw Error(where + "the " + info.engine + " engine's int8 product disagrees with the exact result (max "
                            "relative error " + std::to_string(err) + "); this CPU's int8 path is not exact, use --kernels simulated");
            l = n_layers;
            break;
        }
    pkg.kernels = kernels;
    return info;
}

}  // namespace cushion
