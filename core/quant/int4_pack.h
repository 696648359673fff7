// 4-bit packing for exported packages: two signed 4-bit codes per byte.
//
// Layout: along the last dimension, element 2i goes to the LOW nibble of byte i and element 2i+1 to the
// HIGH nibble, each as a 4-bit two's complement number (-8 .. 7; the symmetric 4-bit weight grid uses
// -7 .. 7). An odd length is padded with a zero nibble. Rows (all leading dimensions) are packed
// independently, so a (out, in) weight becomes (out, ceil(in / 2)) uint8.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace cushion {

// q: integer tensor (any integer dtype, any device) with values in [-8, 7]; at least one dimension.
// Returns uint8 (..., ceil(n / 2)) on q's device. Throws Error for a value out of range or a 0-dim input.
at::Tensor pack_int4(const at::Tensor& q);

// packed: uint8 (..., m); n: the unpacked length (2m - 1 or 2m). Returns int8 (..., n), sign-extended.
// Throws Error when n does not fit m or the padding nibble of an odd length is not zero.
at::Tensor unpack_int4(const at::Tensor& packed, int64_t n);

}  // namespace cushion
