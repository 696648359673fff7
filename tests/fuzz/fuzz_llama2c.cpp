// llama2.c readers: the checkpoint (.bin: legacy header and version 1) and its tokenizer (tokenizer.bin).
#include <cstring>

#include "formats/model_loader.h"
#include "fuzz_common.h"
#include "tokenizer/tokenizer.h"

namespace {

void run_bin(const uint8_t* d, size_t n) {
    const std::string path = fuzz::write_input("model.bin", d, n);
    fuzz::expect_only_errors("llama2c_bin", [&] {
        cushion::LoadOptions o;
        o.tokenizer_path = fuzz::resource("models/stories260K/tok512.bin");
        auto m = cushion::load_llama2c(path, o);
        (void)m->config.kv_dim();
    });
}

// A llama2.c checkpoint with random weights: dim 8, 1 layer, 2 heads, vocab 512 (tok512.bin), 8 positions.
std::string tiny_llama2c(bool version1, bool shared) {
    const int32_t dim = 8, hidden = 16, layers = 1, heads = 2, kv = 2, vocab = 512, seq = 8;
    const int64_t kvd = dim / heads * kv;
    int64_t floats = int64_t(vocab) * dim + layers * (2 * dim + dim * dim * 2 + 2 * kvd * dim + 3 * dim * hidden) + dim;
    if (!version1) floats += int64_t(seq) * (dim / heads);
    if (!shared) floats += int64_t(vocab) * dim;
    std::string out;
    auto put32 = [&](int32_t v) { out.append(reinterpret_cast<const char*>(&v), 4); };
    if (version1) {
        put32(0x616b3432);
        put32(1);
    }
    for (int32_t v : {dim, hidden, layers, heads, kv, version1 || shared ? vocab : -vocab, seq}) put32(v);
    if (version1) {
        out.push_back(shared ? 1 : 0);
        out.resize(256, '\0');
    }
    uint32_t s = 12345;
    for (int64_t i = 0; i < floats; ++i) {
        s = s * 1664525u + 1013904223u;
        const float f = (static_cast<int32_t>(s >> 8) % 2001 - 1000) / 4000.0f;
        out.append(reinterpret_cast<const char*>(&f), 4);
    }
    return out;
}

void seeds_bin(const std::string& dir) {
    fuzz::seed(dir, "stories260K.bin", fuzz::read_file(fuzz::resource("models/stories260K/stories260K.bin")));
    fuzz::seed(dir, "tiny-legacy.bin", tiny_llama2c(false, true));
    fuzz::seed(dir, "tiny-legacy-unshared.bin", tiny_llama2c(false, false));
    fuzz::seed(dir, "tiny-v1.bin", tiny_llama2c(true, true));
    fuzz::seed(dir, "tiny-v1-unshared.bin", tiny_llama2c(true, false), false);
    // Headers with absurd sizes (the file is refused before anything is allocated).
    std::string h = tiny_llama2c(false, true);
    for (int32_t v : {0x7fffffff, -1, 0}) {
        std::string b = h;
        std::memcpy(&b[0], &v, 4);
        fuzz::seed(dir, "dim" + std::to_string(v) + ".bin", b, false);
        b = h;
        std::memcpy(&b[8], &v, 4);
        fuzz::seed(dir, "layers" + std::to_string(v) + ".bin", b, false);
    }
}

void run_tok(const uint8_t* d, size_t n) {
    // The first two bytes choose the vocabulary size the checkpoint would claim (1..65536); the rest is the file.
    if (n < 2) return;
    const int32_t vocab = 1 + (d[0] | (d[1] << 8));
    const std::string path = fuzz::write_input("tokenizer.bin", d + 2, n - 2);
    fuzz::expect_only_errors("llama2c_tokenizer", [&] {
        auto t = cushion::load_llama2c_tokenizer(path, vocab);
        fuzz::exercise_tokenizer(*t);
    });
}

void seeds_tok(const std::string& dir) {
    const std::string tok = fuzz::read_file(fuzz::resource("models/stories260K/tok512.bin"));
    const std::string v512("\xFF\x01", 2), v10("\x09\x00", 2);
    fuzz::seed(dir, "tok512.bin", v512 + tok);
    fuzz::seed(dir, "tok512-as-10.bin", v10 + tok, false);
}

}  // namespace

CUSHION_FUZZ_TARGET(llama2c_bin, nullptr, run_bin, seeds_bin);
CUSHION_FUZZ_TARGET(llama2c_tokenizer, nullptr, run_tok, seeds_tok);
