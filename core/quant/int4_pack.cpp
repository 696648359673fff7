#include "quant/int4_pack.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <string>

#include "base/error.h"

namespace cushion {

at::Tensor pack_int4(const at::Tensor& q) {
    if (q.dim() == 0) throw Error("pack_int4: needs at least one dimension");
    if (q.is_floating_point() || q.is_complex() || q.scalar_type() == at::kBool)
        throw Error("pack_int4: needs an integer tensor");
    at::NoGradGuard ng;
    at::Tensor v = q.to(at::kShort);
    if (v.numel() > 0 && (v.min().item<int64_t>() < -8 || v.max().item<int64_t>() > 7))
        throw Error("pack_int4: values must lie in [-8, 7] (got " + std::to_string(v.min().item<int64_t>()) + " .. " +
                    std::to_string(v.max().item<int64_t>()) + ")");
    const int64_t n = v.size(-1);
    if (n % 2) {
        std::vector<int64_t> pad_shape(v.sizes().begin(), v.sizes().end());
        pad_shape.back() = 1;
        v = at::cat({v, at::zeros(pad_shape, v.options())}, -1);
    }
    std::vector<int64_t> shape(v.sizes().begin(), v.sizes().end());
    shape.back() = v.size(-1) / 2;
    shape.push_back(2);
    at::Tensor pairs = v.reshape(shape);
    at::Tensor lo = pairs.select(-1, 0).bitwise_and(0xF);  // two's complement nibble
    at::Tensor hi = pairs.select(-1, 1).bitwise_and(0xF);
    return (lo + hi * 16).to(at::kByte).contiguous();
}

at::Tensor unpack_int4(const at::Tensor& packed, int64_t n) {
    if (packed.dim() == 0 || packed.scalar_type() != at::kByte) throw Error("unpack_int4: needs a uint8 tensor with a dimension");
    const int64_t m = packed.size(-1);
    if (n < 0 || (n + 1) / 2 != m)
        throw Error("unpack_int4: " + std::to_string(m) + " packed bytes cannot hold " + std::to_string(n) + " values");
    at::NoGradGuard ng;
    at::Tensor b = packed.to(at::kShort);
    at::Tensor lo = b.bitwise_and(0xF);
    at::Tensor hi = b.div(16, "floor");
    if (n % 2 && m > 0 && hi.select(-1, m - 1).ne(0).any().item<bool>())
        throw Error("unpack_int4: the padding nibble of an odd-length row is not zero (corrupt data)");
    at::Tensor both = at::stack({lo, hi}, -1);  // (..., m, 2)
    std::vector<int64_t> shape(packed.sizes().begin(), packed.sizes().end());
    shape.back() = 2 * m;
    at::Tensor v = both.reshape(shape);
    v = at::where(v >= 8, v - 16, v);  // sign-extend
    return v.narrow(-1, 0, n).to(at::kChar).contiguous();
}

}  // namespace cushion
