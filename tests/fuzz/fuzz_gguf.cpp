// GGUF: the whole reader (header, metadata, tokenizer, tensor infos, data of every block type), and the block
// decoders of core/formats/gguf_blocks on raw blocks.
#include <cstring>
#include <vector>

#include "formats/gguf_blocks.h"
#include "formats/model_loader.h"
#include "fuzz_common.h"
#include "tokenizer/tokenizer.h"

namespace {

void run_gguf(const uint8_t* d, size_t n) {
    const std::string path = fuzz::write_input("model.gguf", d, n);
    fuzz::expect_only_errors("gguf", [&] {
        auto m = cushion::load_gguf(path, {});
        if (m->tokenizer) fuzz::exercise_tokenizer(*m->tokenizer);
    });
}

void seeds_gguf(const std::string& dir) {
    // The real file; 1-layer variants with F16/Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 tensors are written beside it by
    // tests/fuzz/make_gguf_seeds.py (gguf-py).
    const std::string g = fuzz::read_file(fuzz::resource("models/stories260K/stories260K.gguf"));
    fuzz::seed(dir, "stories260K.gguf", g);
    // Counts in the header set absurd: tensor count (offset 8) and metadata count (offset 16).
    for (size_t at : {size_t(8), size_t(16)}) {
        std::string b = g;
        const uint64_t big = uint64_t(1) << 40;
        std::memcpy(&b[at], &big, 8);
        fuzz::seed(dir, "count-at-" + std::to_string(at) + ".gguf", b.substr(0, 4096), false);
    }
    fuzz::seed(dir, "header-only.gguf", g.substr(0, 24), false);
}

// Block decoders: byte 0 picks the type, byte 1 how the element count is off from the data's (0: exact), the
// rest are the blocks.
const uint32_t kIds[] = {0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 30, 41, 99};

void run_blocks(const uint8_t* d, size_t n) {
    if (n < 2) return;
    const uint32_t id = kIds[d[0] % (sizeof(kIds) / sizeof(kIds[0]))];
    const int off = static_cast<int8_t>(d[1]);
    std::vector<uint8_t> data(d + 2, d + n);  // exactly the bytes given, so that a read past them is reported
    const cushion::gguf::GgmlType* t = cushion::gguf::ggml_type(id);
    uint64_t elements = 0;
    if (t && t->bytes) elements = data.size() / t->bytes * t->block;
    if (off != 0) elements = off < 0 && uint64_t(-off) > elements ? 0 : elements + off;
    if (elements > (uint64_t(1) << 24)) return;
    std::vector<float> out(elements + 1);
    fuzz::expect_only_errors("gguf_blocks", [&] {
        cushion::gguf::dequantize(id, data.data(), data.size(), elements, out.data(), "fuzz tensor");
    });
    fuzz::expect_only_errors("gguf_blocks", [&] {
        (void)cushion::gguf::ggml_nbytes(t ? *t : *cushion::gguf::ggml_type(0), (uint64_t(d[1]) << 56) | n, "fuzz");
    });
}

void seeds_blocks(const std::string& dir) {
    uint32_t s = 7;
    for (size_t i = 0; i < sizeof(kIds) / sizeof(kIds[0]); ++i) {
        const cushion::gguf::GgmlType* t = cushion::gguf::ggml_type(kIds[i]);
        const size_t bytes = t && t->bytes ? 2 * t->bytes : 64;
        std::string b(2 + bytes, '\0');
        b[0] = static_cast<char>(i);
        for (size_t k = 2; k < b.size(); ++k) {
            s = s * 1664525u + 1013904223u;
            b[k] = static_cast<char>(s >> 24);
        }
        fuzz::seed(dir, std::string(t ? t->name : "unknown") + ".blocks", b, false);
    }
}

}  // namespace

CUSHION_FUZZ_TARGET(gguf, nullptr, run_gguf, seeds_gguf);
CUSHION_FUZZ_TARGET(gguf_blocks, nullptr, run_blocks, seeds_blocks);
