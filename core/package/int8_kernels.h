// Real integer matrix products for an exported W8A8 per-tensor-static package (`--kernels int8`).
//
// CPU (libtorch 1.13+, measured in tests/perf/RESULTS.md): every block linear whose weights are int8 per output
// channel and whose input site has a static 8-bit range runs as uint8 x int8 -> int32 in libtorch's quantized
// engine (oneDNN preferred: AVX-512 VNNI here), then one float scale per output channel:
//     y = s_x * s_w[c] * sum_k (q_x - z_x) q_w[c, k]  + b
// with the package's own codes q_w, s_w and its calibrated s_x, z_x (q_x = clamp(round(x / s_x) + z_x, 0, 255),
// the simulated path's codes). Reached through quantized::linear_dynamic, which quantizes its float input with
// a range it measures; it is handed the integers (q_x - z_x) plus one sentinel row holding -z_x and 255 - z_x,
// so the range it measures is exactly [-z_x, 255 - z_x]: its scale is 1 and its zero point z_x, its codes are
// q_x bit for bit, and its float output is the exact int32 accumulator times s_w (the sentinel row's output is
// dropped). Differences from the simulated float32 path are float rounding only (the simulated path sums in
// float32; here the integer sum is exact).
// Linears that cannot run this way (grouped or 4-bit weights, activations not 8-bit per-tensor-static, a site
// whose zero point lies outside [0, 255] because its range excludes 0) fall back to the float32 product on the
// dequantized values, with a note saying which.
//
// CUDA (and the CPU on request: Int8Path::IntMm, which the CPU tests use so that the CUDA code is exercised on
// every machine): at::_int_mm(int8 A (M, K), int8 B (K, N)) -> int32. Activation codes are shifted to int8
// (a = q_x - 128) and the shift folded back per output channel with (128 - z_x) * sum_k q_w[c, k]; the int32 sums
// are scaled by s_x * s_w[c] in float32 and returned in the model's dtype (float32, bfloat16 or float16). Shapes
// are zero padded to _int_mm's CUDA rules (M > 16, K and N multiples of 8). Same self-check and fall-backs.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "model/model.h"

namespace cushion {

class QuantizedPackage;

struct Int8KernelInfo {
    std::string engine;                 // libtorch quantized engine used ("onednn", "x86", "fbgemm", "qnnpack")
    int int8_linears = 0;               // block linears on the integer kernel
    int fallback_linears = 0;           // block linears left on the float32 product
    std::vector<std::string> notes;     // why each group of linears fell back
};

// The quantized engines libtorch offers on this machine, by name, best first; empty = no int8 kernels.
std::vector<std::string> int8_engines_available();

// Builds the int8 kernels for `pkg` on its device and sets pkg.kernels. Throws Error with a clear message when
// integer kernels cannot run at all: no quantized engine, a device other than CPU/CUDA, a dtype other than
// float32 on the CPU engine path, weights not 8-bit, or activations not 8-bit per-tensor-static (the case this mode exists for).
// A self-check on one linear compares the kernel with the float32 product on the same codes; a mismatch
// (e.g. an engine that saturates 16-bit intermediate sums) refuses too.
enum class Int8Path {
    Auto,   // CPU: libtorch's quantized engine (oneDNN ...); CUDA: at::_int_mm
    IntMm,  // at::_int_mm on any device (on the CPU: for tests of the CUDA path's arithmetic)
};
Int8KernelInfo use_int8_kernels(QuantizedPackage& pkg, Int8Path path = Int8Path::Auto);

}  // namespace cushion
