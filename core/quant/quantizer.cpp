#include "quant/quantizer.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <limits>
#include <string>

#include "base/error.h"

namespace cushion {

namespace {

// float64 stays float64; every other floating type is computed in float32.
at::ScalarType compute_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

// The codes q in [0, 2^b - 1] (as floats) of x for scale s and zero point z, all in the compute type. The zero point
// is added before rounding, in the signed domain [-2^(b-1), 2^(b-1) - 1] (int8 for 8 bits), then shifted back:
//     q = clamp(round(x / s + (z - 2^(b-1))), -2^(b-1), 2^(b-1) - 1) + 2^(b-1)
// which is, operation for operation, compressed-tensors' quantizer (what transformers and llm-compressor run on an
// exported checkpoint: x / scale + zero_point, clamp, round half to even), so that the export loads with the
// package's numbers bit for bit. In exact arithmetic this is clamp(round(x / s) + z, 0, 2^b - 1); in float32 the two
// differ where x / s lies within a rounding error of a half-integer (x / s + z rounds to the tie).
at::Tensor act_codes(const at::Tensor& xf, const at::Tensor& s, const at::Tensor& z, int bits) {
    const double h = static_cast<double>(int64_t(1) << (bits - 1));
    return at::round((xf / s + (z - h)).clamp(-h, h - 1)) + h;
}

}  // namespace

// ---------------------------------------------------------------- activations

bool act_bits_supported(int bits) { return bits == 4 || bits == 6 || bits == 8 || bits == 16; }

int64_t act_qmax(int bits) {
    if (!act_bits_supported(bits))
        throw Error("activation quantization: " + std::to_string(bits) + " bits is not supported (use 4, 6, 8 or 16)");
    return (int64_t(1) << bits) - 1;
}

ActQuantParams act_params(const at::Tensor& min, const at::Tensor& max, int bits) {
    const double qmax = static_cast<double>(act_qmax(bits));
    at::NoGradGuard no_grad;
    const at::ScalarType ct =
        (min.scalar_type() == at::kDouble || max.scalar_type() == at::kDouble) ? at::kDouble : at::kFloat;
    at::Tensor mn = min.detach().to(ct);
    at::Tensor mx = max.detach().to(mn.device(), ct);
    at::Tensor s = (mx - mn) / qmax;
    // Degenerate (constant) range: make the constant `min` a grid point so Q returns it exactly.
    at::Tensor degenerate = at::logical_not(s > 0);
    at::Tensor constant_scale = at::where(mn != 0, mn.abs(), at::ones_like(mn));
    s = at::where(degenerate, constant_scale, s);
    ActQuantParams p;
    p.zero = at::round(-mn / s);
    p.scale = s;
    p.bits = bits;
    return p;
}

ActQuantParams act_params(double min, double max, int bits, const at::Tensor& like) {
    auto opts = like.options().dtype(compute_type(like.scalar_type()));
    return act_params(at::scalar_tensor(min, opts), at::scalar_tensor(max, opts), bits);
}

at::Tensor fake_quant_act(const at::Tensor& x, const ActQuantParams& p) {
    act_qmax(p.bits);  // checks the bit width
    const at::ScalarType ct = compute_type(x.scalar_type());
    at::Tensor xf = x.to(ct);
    at::Tensor s = p.scale.to(xf.device(), ct);
    at::Tensor z = p.zero.to(xf.device(), ct);
    at::Tensor q = act_codes(xf, s, z, p.bits);
    return ((q - z) * s).to(x.scalar_type());
}

at::Tensor QuantizedActivation::dequantize() const {
    const at::ScalarType ct = scale.scalar_type();
    return (q.to(ct) - zero.to(ct)) * scale;
}

QuantizedActivation quantize_act(const at::Tensor& x, const ActQuantParams& p) {
    act_qmax(p.bits);  // checks the bit width
    at::NoGradGuard no_grad;
    const at::ScalarType ct = compute_type(x.scalar_type());
    at::Tensor xf = x.detach().to(ct);
    at::Tensor s = p.scale.to(xf.device(), ct);
    at::Tensor z = p.zero.to(xf.device(), ct);
    QuantizedActivation r;
    r.q = act_codes(xf, s, z, p.bits).to(at::kInt);
    r.scale = s;
    r.zero = z.to(at::kLong);
    r.bits = p.bits;
    return r;
}

ActQuantParams act_params_per_tensor(const at::Tensor& x, int bits) {
    at::NoGradGuard no_grad;
    const auto opts = x.options().dtype(compute_type(x.scalar_type()));
    if (x.numel() == 0) return act_params(at::zeros({}, opts), at::zeros({}, opts), bits);
    at::Tensor xd = x.detach().to(opts.dtype());
    return act_params(xd.min(), xd.max(), bits);
}

ActQuantParams act_params_per_token(const at::Tensor& x, int bits) {
    at::NoGradGuard no_grad;
    if (x.dim() == 0) return act_params_per_tensor(x, bits);
    const auto opts = x.options().dtype(compute_type(x.scalar_type()));
    if (x.numel() == 0) {
        std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
        shape.back() = 1;
        return act_params(at::zeros(shape, opts), at::zeros(shape, opts), bits);
    }
    at::Tensor xd = x.detach().to(opts.dtype());
    return act_params(xd.amin(-1, /*keepdim=*/true), xd.amax(-1, /*keepdim=*/true), bits);
}

at::Tensor fake_quant_act_per_tensor(const at::Tensor& x, int bits) {
    return fake_quant_act(x, act_params_per_tensor(x, bits));
}

at::Tensor fake_quant_act_per_token(const at::Tensor& x, int bits) {
    return fake_quant_act(x, act_params_per_token(x, bits));
}

void row_minmax(const at::Tensor& x, const at::Tensor& valid, at::Tensor* min, at::Tensor* max) {
    if (x.dim() != 3) throw Error("row_minmax: activation must be (B, T, C)");
    at::NoGradGuard no_grad;
    const int64_t B = x.size(0);
    const auto opts = x.options().dtype(compute_type(x.scalar_type()));
    if (x.numel() == 0) {
        *min = at::zeros({B, 1, 1}, opts);
        *max = at::zeros({B, 1, 1}, opts);
        return;
    }
    at::Tensor xd = x.detach().to(opts.dtype());
    const std::vector<int64_t> dims{1, 2};
    if (!valid.defined()) {
        *min = xd.amin(dims, /*keepdim=*/true);
        *max = xd.amax(dims, /*keepdim=*/true);
        return;
    }
    if (valid.dim() != 2 || valid.size(0) != B || valid.size(1) != x.size(1))
        throw Error("row_minmax: valid mask must be (B, T) like the activation");
    at::Tensor v = valid.to(xd.device(), at::kBool).unsqueeze(-1);  // (B, T, 1)
    at::Tensor pad = at::logical_not(v);
    const double inf = std::numeric_limits<double>::infinity();
    at::Tensor mn = xd.masked_fill(pad, inf).amin(dims, true);
    at::Tensor mx = xd.masked_fill(pad, -inf).amax(dims, true);
    at::Tensor has = v.reshape({B, -1}).any(1).reshape({B, 1, 1});
    at::Tensor zero = at::zeros_like(mn);
    *min = at::where(has, mn, zero);
    *max = at::where(has, mx, zero);
}

// ---------------------------------------------------------------- weights

bool weight_bits_supported(int bits) { return bits == 4 || bits == 8; }

int64_t weight_qmax(int bits) {
    if (!weight_bits_supported(bits))
        throw Error("weight quantization: " + std::to_string(bits) + " bits is not supported (use 4 or 8)");
    return (int64_t(1) << (bits - 1)) - 1;
}

int64_t effective_group(int64_t in, int64_t group) {
    if (group < 0) throw Error("weight quantization: group size " + std::to_string(group) +
                               " is negative (use 0 for per-channel, or a positive size such as 128)");
    if (group > 0 && group < in && in % group == 0) return group;
    return in;
}

namespace {

// (out, n_groups, g) float codes and (out, n_groups, 1) scales.
void weight_codes(const at::Tensor& w, int bits, int64_t group, at::Tensor* q, at::Tensor* s, int64_t* g_out) {
    if (w.dim() != 2) throw Error("weight quantization: weight must be a 2-D (out, in) matrix");
    const double qmax = static_cast<double>(weight_qmax(bits));
    const int64_t out = w.size(0), in = w.size(1);
    const int64_t g = effective_group(in, group);
    if (w.numel() == 0) throw Error("weight quantization: empty weight");
    at::Tensor wf = w.detach().to(compute_type(w.scalar_type())).reshape({out, in / g, g});
    at::Tensor sc = wf.abs().amax(-1, /*keepdim=*/true) / qmax;
    sc = at::where(sc > 0, sc, at::ones_like(sc));  // all-zero group: any scale represents it exactly
    *q = at::round(wf / sc).clamp(-qmax, qmax);
    *s = sc;
    *g_out = g;
}

}  // namespace

QuantizedWeight quantize_weight(const at::Tensor& w, int bits, int64_t group) {
    at::NoGradGuard no_grad;
    at::Tensor q, s;
    int64_t g = 0;
    weight_codes(w, bits, group, &q, &s, &g);
    QuantizedWeight r;
    r.q = q.reshape({w.size(0), w.size(1)}).to(at::kChar);
    r.scale = s.squeeze(-1).to(at::kFloat);
    r.bits = bits;
    r.group_size = g;
    return r;
}

at::Tensor QuantizedWeight::dequantize() const {
    const int64_t out = q.size(0), in = q.size(1);
    return (q.to(at::kFloat).reshape({out, in / group_size, group_size}) * scale.unsqueeze(-1)).reshape({out, in});
}

at::Tensor fake_quant_weight(const at::Tensor& w, int bits, int64_t group) {
    at::NoGradGuard no_grad;
    at::Tensor q, s;
    int64_t g = 0;
    weight_codes(w, bits, group, &q, &s, &g);
    return (q * s).reshape({w.size(0), w.size(1)}).to(w.scalar_type());
}

}  // namespace cushion
