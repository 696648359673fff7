// GGML tensor types as stored in GGUF files: one table (type id -> name, block size, bytes per block, decoder)
// and one float32 decoder per supported type. The block layouts and the order of the values follow llama.cpp's
// C reference (ggml-common.h block structs, ggml-quants.c dequantize_row_*); each decoder computes every value
// with the same float operations in the same order as that reference (and as gguf-py's gguf.quants), without
// fused multiply-adds, so the results are bit for bit the reference's (tests/gguf_blocks/).
#pragma once
#include <cstdint>
#include <string>

namespace cushion {
namespace gguf {

// Decodes n_blocks consecutive blocks at `in` into n_blocks * block floats at `out`. No checks: the caller has
// validated the sizes (dequantize() does).
using BlockDecoder = void (*)(const uint8_t* in, uint64_t n_blocks, float* out);

struct GgmlType {
    uint32_t id;
    const char* name;       // "Q4_K"
    uint32_t block;         // values per block (1 for plain types)
    uint32_t bytes;         // bytes per block; 0 where the layout is not known here
    BlockDecoder decode;    // null: a type this reader does not dequantize
};

// The type with this GGML id, or nullptr for an id that is not a GGML type at all.
const GgmlType* ggml_type(uint32_t id);
// The type named `name` (e.g. "Q5_1", case-sensitive), or nullptr.
const GgmlType* ggml_type_by_name(const std::string& name);
// "F32, F16, BF16, Q4_0, ..." : the types that have a decoder, for error messages.
std::string supported_ggml_types();
// "Q4_1" for a known id, "#17 (unknown)" otherwise.
std::string ggml_type_label(uint32_t id);

// Bytes taken by n_elements of this type. Throws Error if the type cannot be decoded (naming `what` and the
// type), if n_elements is not a multiple of the block size, or if the size overflows.
uint64_t ggml_nbytes(const GgmlType& t, uint64_t n_elements, const std::string& what);

// Dequantizes n_elements values of type `id` from `data` (n_bytes available) into `out` (n_elements floats).
// Throws Error, naming `what`, on an unsupported type, an element count that is not a multiple of the block
// size, or data shorter (truncated) or longer than the element count implies. Runs in parallel over blocks.
void dequantize(uint32_t id, const uint8_t* data, uint64_t n_bytes, uint64_t n_elements, float* out,
                const std::string& what);

float fp16_to_float(uint16_t h);  // exact (subnormals, infinities, NaN payloads)
float bf16_to_float(uint16_t h);

}  // namespace gguf
}  // namespace cushion
