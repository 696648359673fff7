// Quantizer primitives: the exact arithmetic every quantized path (simulated model, calibration,
// quantization loss, export) shares. See resources/docs/method.md, "Quantization loss" and "Evaluation".
//
// Activations: asymmetric min-max, b bits (4, 6, 8 or 16), from a range [min, max] of the data itself
// (the range is NOT widened to include 0; positive-only or negative-only data get a zero point outside
// [0, 2^b-1], which the formula handles):
//     s = (max - min) / (2^b - 1),  z = round(-min / s),
//     q = clamp(round(A / s + (z - 2^(b-1))), -2^(b-1), 2^(b-1) - 1) + 2^(b-1),  Q(A) = s * (q - z),
// i.e. clamp(round(A / s) + z, 0, 2^b - 1) in exact arithmetic, computed as compressed-tensors computes it (the zero
// point, shifted to the signed range, added in float before rounding), so that an exported checkpoint loaded by
// transformers + compressed-tensors quantizes bit for bit as the engine. (vLLM's int8 kernel rounds x / s first and
// adds the zero point after; the two differ only where x / s is within float rounding of a half-integer.)
// Weights: symmetric, per output channel (a row of the (out, in) matrix) or per group of `group`
// consecutive input columns of a row, b bits (4 or 8), restricted range (-2^(b-1) is never used, so the
// grid is symmetric around 0):
//     s = max|w| / (2^(b-1) - 1),  q = clamp(round(w / s), -(2^(b-1)-1), 2^(b-1)-1),  Q(w) = s * q.
//
// Rounding: at::round, i.e. round half to EVEN (2.5 -> 2, 3.5 -> 4, -2.5 -> -2), as torch.round and
// IEEE nearbyint. The minimum maps to code 0 (min/s + z is within 1/2 of 0, and a tie at -2^(b-1) - 1/2 rounds to
// the even -2^(b-1)) and the maximum to code 2^b-1.
//
// Arithmetic: scales, zero points and codes are computed in float32 (float64 inputs stay float64);
// fake-quantized results are cast back to the input dtype. Inputs must be finite (NaN/Inf propagate).
//
// Degenerate ranges: when max == min (a constant tensor or row), or (max - min) / (2^b - 1) underflows
// to 0, the scale would be 0. Then s = |min| (s = 1 if min == 0) and z = round(-min / s) = -sign(min):
// the constant min is a grid point (code 0) and Q returns it EXACTLY; other values in such a
// "degenerate" range (at most a few denormals away) map to min, error <= max - min.
// Likewise a weight row/group of zeros (or one whose scale underflows) gets s = 1 and codes 0.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace cushion {

// ---------------------------------------------------------------- activations (asymmetric)

// 2^b - 1. Throws Error unless bits is 4, 6, 8 or 16 (bits = 0, "disabled", is handled by callers).
int64_t act_qmax(int bits);
bool act_bits_supported(int bits);

// Scale and zero point, broadcastable against the tensor they quantize (e.g. () per tensor, (B,1,1)
// per sequence, (B,T,1) per token). Both float32 (float64 if the range was float64); zero holds
// integers (it may lie outside [0, 2^b-1] when the range excludes 0).
struct ActQuantParams {
    at::Tensor scale;
    at::Tensor zero;
    int bits = 8;
};

// The parameters for the range [min, max] (tensors of any broadcastable shape, min <= max).
ActQuantParams act_params(const at::Tensor& min, const at::Tensor& max, int bits);
// Scalar range convenience (0-dim float32 tensors on `like`'s device; float64 if `like` is float64).
ActQuantParams act_params(double min, double max, int bits, const at::Tensor& like);

// Q(A) with given parameters; same shape and dtype as x.
at::Tensor fake_quant_act(const at::Tensor& x, const ActQuantParams& p);

// Integer codes q in [0, 2^b-1] (the formula above) as int32 (any bits up to 16), and back.
struct QuantizedActivation {
    at::Tensor q;      // int32 codes in [0, 2^b - 1], shape of x
    at::Tensor scale;  // float32 (float64 for float64 x), broadcastable against q
    at::Tensor zero;   // int64, broadcastable against q
    int bits = 8;
    at::Tensor dequantize() const;  // s * (q - z) in scale's dtype; equals fake_quant_act's values
};
QuantizedActivation quantize_act(const at::Tensor& x, const ActQuantParams& p);

// Min-max over the whole tensor (one scale/zero) and per token (one per last-dimension row).
ActQuantParams act_params_per_tensor(const at::Tensor& x, int bits);
ActQuantParams act_params_per_token(const at::Tensor& x, int bits);
at::Tensor fake_quant_act_per_tensor(const at::Tensor& x, int bits);
at::Tensor fake_quant_act_per_token(const at::Tensor& x, int bits);

// For (B, T, C) activations with a (B, T) bool mask of real tokens (undefined = all real): min and max
// over each row's real tokens, shaped (B, 1, 1), float32 (float64 for float64 x), no gradient. A row
// without real tokens gets min = max = 0 (a harmless degenerate range).
void row_minmax(const at::Tensor& x, const at::Tensor& valid, at::Tensor* min, at::Tensor* max);

// ---------------------------------------------------------------- weights (symmetric)

// 2^(b-1) - 1. Throws Error unless bits is 4 or 8.
int64_t weight_qmax(int bits);
bool weight_bits_supported(int bits);

// The number of input columns sharing one scale for a weight with `in` columns: `group` when
// 0 < group < in and group divides in; otherwise `in` (per output channel). group = 0 asks for
// per-channel; a negative group throws Error.
int64_t effective_group(int64_t in, int64_t group);

struct QuantizedWeight {
    at::Tensor q;        // int8 codes in [-(2^(b-1)-1), 2^(b-1)-1], shape (out, in)
    at::Tensor scale;    // float32 (out, in / group_size)
    int bits = 8;
    int64_t group_size = 0;  // columns per scale (== in for per-channel)
    at::Tensor dequantize() const;  // float32 (out, in)
};

// w: (out, in). group as in effective_group (0 = per-channel).
QuantizedWeight quantize_weight(const at::Tensor& w, int bits, int64_t group);
// Q(w), same shape/dtype/device as w.
at::Tensor fake_quant_weight(const at::Tensor& w, int bits, int64_t group);

}  // namespace cushion
