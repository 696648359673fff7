// GGML block types: decoders written from llama.cpp's C reference semantics (ggml-common.h, ggml-quants.c).
// Every value is computed as the reference does (same float products and sums, same order). Each product is
// exact in float32 (an fp16 factor has at most 11 significant bits, a sub-block scale at most 7, a quant at most
// 6: 24 bits at most), so only the final "- m" / "+ m" rounds, and the results are bit for bit the reference's
// whatever the compiler does; fused multiply-adds are turned off anyway, so that the code computes what it says.
#include "formats/gguf_blocks.h"

#include <ATen/Parallel.h>

#include <cstring>
#include <limits>

#include "base/error.h"

#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace cushion {
namespace gguf {

float fp16_to_float(uint16_t h) {
    const uint32_t sign = uint32_t(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else {  // subnormal: normalise
            int e = -1;
            do {
                ++e;
                mant <<= 1;
            } while ((mant & 0x400) == 0);
            bits = sign | uint32_t(127 - 15 - e) << 23 | (mant & 0x3ff) << 13;
        }
    } else if (exp == 0x1f) {
        bits = sign | 0x7f800000u | mant << 13;
    } else {
        bits = sign | (exp + 127 - 15) << 23 | mant << 13;
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

float bf16_to_float(uint16_t h) {
    const uint32_t bits = uint32_t(h) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

namespace {

constexpr int QK = 32;    // values per block of the 32-value types
constexpr int QK_K = 256; // values per K-quant super-block

inline float half_at(const uint8_t* p) {
    uint16_t h;
    std::memcpy(&h, p, 2);
    return fp16_to_float(h);
}

// ---- plain types ----

void decode_f32(const uint8_t* in, uint64_t n, float* out) { std::memcpy(out, in, n * 4); }

void decode_f16(const uint8_t* in, uint64_t n, float* out) {
    for (uint64_t i = 0; i < n; ++i) out[i] = half_at(in + 2 * i);
}

void decode_bf16(const uint8_t* in, uint64_t n, float* out) {
    for (uint64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, in + 2 * i, 2);
        out[i] = bf16_to_float(h);
    }
}

// ---- 32-value blocks. Nibble order: byte j holds value j (low nibble) and value j + 16 (high nibble). ----

// block_q4_0 { half d; uint8 qs[16]; }: y = (q - 8) * d
void decode_q4_0(const uint8_t* in, uint64_t n, float* out) {
    for (uint64_t b = 0; b < n; ++b, in += 18, out += QK) {
        const float d = half_at(in);
        const uint8_t* qs = in + 2;
        for (int j = 0; j < QK / 2; ++j) {
            const int x0 = (qs[j] & 0x0F) - 8;
            const int x1 = (qs[j] >> 4) - 8;
            out[j] = static_cast<float>(x0) * d;
            out[j + QK / 2] = static_cast<float>(x1) * d;
        }
    }
}

// block_q4_1 { half d; half m; uint8 qs[16]; }: y = q * d + m
void decode_q4_1(const uint8_t* in, uint64_t n, float* out) {
    for (uint64_t b = 0; b < n; ++b, in += 20, out += QK) {
        const float d = half_at(in);
        const float m = half_at(in + 2);
        const uint8_t* qs = in + 4;
        for (int j = 0; j < QK / 2; ++j) {
            const int x0 = qs[j] & 0x0F;
            const int x1 = qs[j] >> 4;
            out[j] = static_cast<float>(x0) * d + m;
            out[j + QK / 2] = static_cast<float>(x1) * d + m;
        }
    }
}

// The 5th bit of value j (0..31) is bit j of the little-endian uint32 qh.
inline uint32_t load_u32(const uint8_t* p) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
}

// block_q5_0 { half d; uint8 qh[4]; uint8 qs[16]; }: y = (q - 16) * d
void decode_q5_0(const uint8_t* in, uint64_t n, float* out) {
    for (uint64_t b = 0; b < n; ++b, in += 22, out += QK) {
        const float d = half_at(in);
        const uint32_t qh = load_u32(in + 2);
        const uint8_t* qs = in + 6;
        for (int j = 0; j < QK / 2; ++j) {
            const int h0 = ((qh >> j) & 1) << 4;
            const int h1 = ((qh >> (j + QK / 2)) & 1) << 4;
            const int x0 = ((qs[j] & 0x0F) | h0) - 16;
            const int x1 = ((qs[j] >> 4) | h1) - 16;
            out[j] = static_cast<float>(x0) * d;
            out[j + QK / 2] = static_cast<float>(x1) * d;
        }
    }
}

// block_q5_1 { half d; half m; uint8 qh[4]; uint8 qs[16]; }: y = q * d + m
void decode_q5_1(const uint8_t* in, uint64_t n, float* out) {
    for (uint64_t b = 0; b < n; ++b, in += 24, out += QK) {
        const float d = half_at(in);
        const float m = half_at(in + 2);
        const uint32_t qh = load_u32(in + 4);
        const uint8_t* qs = in + 8;
        for (int j = 0; j < QK / 2; ++j) {
            const int h0 = ((qh >> j) & 1) << 4;
            const int h1 = ((qh >> (j + QK / 2)) & 1) << 4;
            const int x0 = (qs[j] & 0x0F) | h0;
            const int x1 = (qs[j] >> 4) | h1;
            out[j] = static_cast<float>(x0) * d + m;
            out[j + QK / 2] = static_cast<float>(x1) * d + m;
        }
    }
}

// block_q8_0 { half d; int8 qs[32]; }: y = q * d
void decode_q8_0(const uint8_t* in, uint64_t n, float* out) {
    for (uint64_t b = 0; b < n; ++b, in += 34, out += QK) {
        const float d = half_at(in);
        const int8_t* qs = reinterpret_cast<const int8_t*>(in + 2);
        for (int j = 0; j < QK; ++j) out[j] = static_cast<float>(qs[j]) * d;
    }
}

// ---- K-quants: 256-value super-blocks ----

// block_q2_K { uint8 scales[16]; uint8 qs[64]; half d; half dmin; } (84 bytes). 16 sub-blocks of 16 values;
// scales[s] = scale (low nibble) | min (high nibble). Values 128h + 32j + 16k + l (h < 2, j < 4, k < 2, l < 16)
// are bits 2j..2j+1 of qs[32h + 16k + l], in sub-block 8h + 2j + k. y = (d * sc) * q - (dmin * mn)
void decode_q2_k(const uint8_t* in, uint64_t n, float* out) {
    for (uint64_t b = 0; b < n; ++b, in += 84) {
        const uint8_t* scales = in;
        const uint8_t* q = in + 16;
        const float d = half_at(in + 80);
        const float dmin = half_at(in + 82);
        int s = 0;
        for (int h = 0; h < QK_K / 128; ++h, q += 32) {
            for (int j = 0; j < 4; ++j) {
                const int shift = 2 * j;
                for (int k = 0; k < 2; ++k, ++s) {
                    const float dl = d * static_cast<float>(scales[s] & 0x0F);
                    const float ml = dmin * static_cast<float>(scales[s] >> 4);
                    const uint8_t* qk = q + 16 * k;
                    for (int l = 0; l < 16; ++l)
                        *out++ = dl * static_cast<float>((qk[l] >> shift) & 3) - ml;
                }
            }
        }
    }
}

// block_q3_K { uint8 hmask[32]; uint8 qs[64]; uint8 scales[12]; half d; } (110 bytes). 16 sub-blocks of 16
// values with 6-bit signed scales (stored + 32): scale s has its low 4 bits in the low (s < 8) or high (s >= 8)
// nibble of scales[s % 8], and its top 2 bits at bits 2*(s/4) of scales[8 + s % 4]. Value 128h + 32j + 16k + l
// takes its low 2 bits from bits 2j of qs[32h + 16k + l] and subtracts 4 unless bit 4h + j of hmask[16k + l] is
// set. y = (d * (scale - 32)) * q
void decode_q3_k(const uint8_t* in, uint64_t n, float* out) {
    for (uint64_t b = 0; b < n; ++b, in += 110) {
        const uint8_t* hm = in;
        const uint8_t* q = in + 32;
        const uint8_t* sc = in + 96;
        const float d_all = half_at(in + 108);
        int scale[16];
        for (int s = 0; s < 16; ++s) {
            const int lo = s < 8 ? (sc[s] & 0x0F) : (sc[s - 8] >> 4);
            const int hi = (sc[8 + s % 4] >> (2 * (s / 4))) & 3;
            scale[s] = (lo | (hi << 4)) - 32;
        }
        int s = 0;
        for (int h = 0; h < QK_K / 128; ++h, q += 32) {
            for (int j = 0; j < 4; ++j) {
                const int shift = 2 * j;
                const uint8_t m = static_cast<uint8_t>(1u << (4 * h + j));
                for (int k = 0; k < 2; ++k, ++s) {
                    const float dl = d_all * static_cast<float>(scale[s]);
                    const uint8_t* qk = q + 16 * k;
                    const uint8_t* hk = hm + 16 * k;
                    for (int l = 0; l < 16; ++l) {
                        const int v = ((qk[l] >> shift) & 3) - ((hk[l] & m) ? 0 : 4);
                        *out++ = dl * static_cast<float>(v);
                    }
                }
            }
        }
    }
}

// The 6-bit scale and min of sub-block j (0..7) of Q4_K / Q5_K (ggml's get_scale_min_k4): bytes 0..3 hold
// scales 0..3 in their low 6 bits, bytes 4..7 mins 0..3; scales/mins 4..7 have their low 4 bits in the low/high
// nibble of bytes 8..11 and their top 2 bits in the top 2 bits of bytes 0..3 / 4..7.
inline void scale_min_k4(int j, const uint8_t* q, int& sc, int& mn) {
    if (j < 4) {
        sc = q[j] & 63;
        mn = q[j + 4] & 63;
    } else {
        sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
        mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

// block_q4_K { half d; half dmin; uint8 scales[12]; uint8 qs[128]; } (144 bytes). 8 sub-blocks of 32: values
// 64i + l are the low nibbles of qs[32i + l] (sub-block 2i), values 64i + 32 + l the high nibbles (2i + 1).
// y = (d * sc) * q - (dmin * mn)
void decode_q4_k(const uint8_t* in, uint64_t n, float* out) {
    for (uint64_t b = 0; b < n; ++b, in += 144) {
        const float d = half_at(in);
        const float dmin = half_at(in + 2);
        const uint8_t* scales = in + 4;
        const uint8_t* q = in + 16;
        for (int i = 0; i < QK_K / 64; ++i, q += 32) {
            int sc, mn;
            scale_min_k4(2 * i, scales, sc, mn);
            const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(mn);
            scale_min_k4(2 * i + 1, scales, sc, mn);
            const float d2 = d * static_cast<float>(sc), m2 = dmin * static_cast<float>(mn);
            for (int l = 0; l < 32; ++l) *out++ = d1 * static_cast<float>(q[l] & 0x0F) - m1;
            for (int l = 0; l < 32; ++l) *out++ = d2 * static_cast<float>(q[l] >> 4) - m2;
        }
    }
}

// block_q5_K { half d; half dmin; uint8 scales[12]; uint8 qh[32]; uint8 qs[128]; } (176 bytes). As Q4_K, with
// the 5th bit of value 32s + l (sub-block s) at bit s of qh[l].
void decode_q5_k(const uint8_t* in, uint64_t n, float* out) {
    for (uint64_t b = 0; b < n; ++b, in += 176) {
        const float d = half_at(in);
        const float dmin = half_at(in + 2);
        const uint8_t* scales = in + 4;
        const uint8_t* qh = in + 16;
        const uint8_t* ql = in + 48;
        for (int i = 0; i < QK_K / 64; ++i, ql += 32) {
            int sc, mn;
            scale_min_k4(2 * i, scales, sc, mn);
            const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(mn);
            scale_min_k4(2 * i + 1, scales, sc, mn);
            const float d2 = d * static_cast<float>(sc), m2 = dmin * static_cast<float>(mn);
            const uint8_t u1 = static_cast<uint8_t>(1u << (2 * i)), u2 = static_cast<uint8_t>(2u << (2 * i));
            for (int l = 0; l < 32; ++l)
                *out++ = d1 * static_cast<float>((ql[l] & 0x0F) + ((qh[l] & u1) ? 16 : 0)) - m1;
            for (int l = 0; l < 32; ++l)
                *out++ = d2 * static_cast<float>((ql[l] >> 4) + ((qh[l] & u2) ? 16 : 0)) - m2;
        }
    }
}

// block_q6_K { uint8 ql[128]; uint8 qh[64]; int8 scales[16]; half d; } (210 bytes). Two halves of 128 values;
// in half h, value 32t + l (t < 4, l < 32) has its low 4 bits in the low (t even) or high (t odd) nibble of
// ql[64h + 32(t % 2) + l], its top 2 bits at bits 2t of qh[32h + l], and scale scales[8h + 2t + l / 16].
// q = 6-bit value - 32; y = (d * scale) * q
void decode_q6_k(const uint8_t* in, uint64_t n, float* out) {
    for (uint64_t b = 0; b < n; ++b, in += 210) {
        const uint8_t* ql = in;
        const uint8_t* qh = in + 128;
        const int8_t* sc = reinterpret_cast<const int8_t*>(in + 192);
        const float d = half_at(in + 208);
        for (int h = 0; h < QK_K / 128; ++h, ql += 64, qh += 32, sc += 8, out += 128) {
            for (int l = 0; l < 32; ++l) {
                const int is = l / 16;
                const int q1 = ((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                out[l] = d * static_cast<float>(sc[is + 0]) * static_cast<float>(q1);
                out[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
                out[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
                out[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
            }
        }
    }
}

// Every GGML type id gguf-py 0.19 knows, with the block geometry of those decoded here (gguf-py's GGML_QUANT_SIZES).
const GgmlType kTypes[] = {
    {0, "F32", 1, 4, decode_f32},
    {1, "F16", 1, 2, decode_f16},
    {2, "Q4_0", QK, 18, decode_q4_0},
    {3, "Q4_1", QK, 20, decode_q4_1},
    {6, "Q5_0", QK, 22, decode_q5_0},
    {7, "Q5_1", QK, 24, decode_q5_1},
    {8, "Q8_0", QK, 34, decode_q8_0},
    {9, "Q8_1", QK, 36, nullptr},
    {10, "Q2_K", QK_K, 84, decode_q2_k},
    {11, "Q3_K", QK_K, 110, decode_q3_k},
    {12, "Q4_K", QK_K, 144, decode_q4_k},
    {13, "Q5_K", QK_K, 176, decode_q5_k},
    {14, "Q6_K", QK_K, 210, decode_q6_k},
    {15, "Q8_K", QK_K, 292, nullptr},
    {16, "IQ2_XXS", QK_K, 66, nullptr},
    {17, "IQ2_XS", QK_K, 74, nullptr},
    {18, "IQ3_XXS", QK_K, 98, nullptr},
    {19, "IQ1_S", QK_K, 50, nullptr},
    {20, "IQ4_NL", QK, 18, nullptr},
    {21, "IQ3_S", QK_K, 110, nullptr},
    {22, "IQ2_S", QK_K, 82, nullptr},
    {23, "IQ4_XS", QK_K, 136, nullptr},
    {24, "I8", 1, 1, nullptr},
    {25, "I16", 1, 2, nullptr},
    {26, "I32", 1, 4, nullptr},
    {27, "I64", 1, 8, nullptr},
    {28, "F64", 1, 8, nullptr},
    {29, "IQ1_M", QK_K, 56, nullptr},
    {30, "BF16", 1, 2, decode_bf16},
    {34, "TQ1_0", QK_K, 54, nullptr},
    {35, "TQ2_0", QK_K, 66, nullptr},
    {39, "MXFP4", QK, 17, nullptr},
    {40, "NVFP4", 64, 36, nullptr},
    {41, "Q1_0", 128, 18, nullptr},
};

}  // namespace

const GgmlType* ggml_type(uint32_t id) {
    for (const GgmlType& t : kTypes)
        if (t.id == id) return &t;
    return nullptr;
}

const GgmlType* ggml_type_by_name(const std::string& name) {
    for (const GgmlType& t : kTypes)
        if (name == t.name) return &t;
    return nullptr;
}

std::string supported_ggml_types() {
    std::string s;
    for (const GgmlType& t : kTypes)
        if (t.decode) s += (s.empty() ? "" : ", ") + std::string(t.name);
    return s;
}

std::string ggml_type_label(uint32_t id) {
    const GgmlType* t = ggml_type(id);
    return t ? std::string(t->name) : "#" + std::to_string(id) + " (unknown)";
}

uint64_t ggml_nbytes(const GgmlType& t, uint64_t n_elements, const std::string& what) {
    if (!t.decode)
        throw Error("unsupported tensor type " + std::string(t.name) + " for " + what + " (supported: " +
                    supported_ggml_types() + ")");
    if (n_elements % t.block != 0)
        throw Error(what + " of type " + t.name + " has " + std::to_string(n_elements) +
                    " elements, not a multiple of its block size " + std::to_string(t.block));
    const uint64_t blocks = n_elements / t.block;
    if (blocks > std::numeric_limits<uint64_t>::max() / t.bytes)
        throw Error(what + " of type " + t.name + " is too large (" + std::to_string(n_elements) + " elements)");
    return blocks * t.bytes;
}

void dequantize(uint32_t id, const uint8_t* data, uint64_t n_bytes, uint64_t n_elements, float* out,
                const std::string& what) {
    const GgmlType* t = ggml_type(id);
    if (!t) throw Error(what + " has unknown tensor type #" + std::to_string(id));
    const uint64_t need = ggml_nbytes(*t, n_elements, what);
    if (n_bytes < need)
        throw Error(what + " of type " + t->name + ": " + std::to_string(n_elements) + " elements need " +
                    std::to_string(need) + " bytes (" + std::to_string(n_elements / t->block) + " blocks of " +
                    std::to_string(t->bytes) + "), only " + std::to_string(n_bytes) + " are there; truncated");
    if (n_bytes > need)
        throw Error(what + " of type " + t->name + ": " + std::to_string(n_elements) + " elements take " +
                    std::to_string(need) + " bytes, but " + std::to_string(n_bytes) + " were given");
    const int64_t blocks = static_cast<int64_t>(n_elements / t->block);
    const BlockDecoder decode = t->decode;
    const uint64_t bytes = t->bytes, block = t->block;
    // ~64 KiB of output per task.
    const int64_t grain = std::max<int64_t>(1, 16384 / static_cast<int64_t>(block));
    at::parallel_for(0, blocks, grain, [&](int64_t begin, int64_t end) {
        decode(data + static_cast<uint64_t>(begin) * bytes, static_cast<uint64_t>(end - begin),
               out + static_cast<uint64_t>(begin) * block);
    });
}

}  // namespace gguf
}  // namespace cushion
