// Test helper for tests/gguf_blocks/check_gguf_blocks.py (checked against gguf-py):
//   dequant_blocks TYPE N_ELEMENTS IN OUT   decodes N_ELEMENTS values of GGML type TYPE (e.g. Q4_K) from the raw
//                                           blocks in file IN with the loader's decoders; writes float32 to OUT
//   dequant_blocks --model FILE             loads a model; prints its source tensor types (Model::source_types)
// Errors (unsupported type, truncated data, a count that is not a multiple of the block size) go to stderr with
// exit code 2.
#include <cstdint>
#include <cstdio>
#include <exception>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "base/error.h"
#include "formats/gguf_blocks.h"
#include "package/open_target.h"

int main(int argc, char** argv) {
    using namespace cushion;
    try {
        if (argc == 3 && std::string(argv[1]) == "--model") {
            auto m = load_model(argv[2]);
            std::printf("%s\n", m->source_types.c_str());
            return 0;
        }
        if (argc != 5) {
            std::fprintf(stderr, "usage: dequant_blocks TYPE N_ELEMENTS IN OUT | dequant_blocks --model FILE\n");
            return 2;
        }
        const gguf::GgmlType* t = gguf::ggml_type_by_name(argv[1]);
        if (!t) throw Error(std::string("unknown GGML type name ") + argv[1]);
        const uint64_t n = std::stoull(argv[2]);
        std::ifstream in(argv[3], std::ios::binary);
        if (!in) throw Error(std::string("cannot read ") + argv[3]);
        const std::vector<char> raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        std::vector<float> out(n);
        gguf::dequantize(t->id, reinterpret_cast<const uint8_t*>(raw.data()), raw.size(), n, out.data(),
                         std::string(argv[3]) + ": tensor 'blocks'");
        std::ofstream o(argv[4], std::ios::binary);
        o.write(reinterpret_cast<const char*>(out.data()), static_cast<std::streamsize>(out.size() * sizeof(float)));
        if (!o) throw Error(std::string("cannot write ") + argv[4]);
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "dequant_blocks: %s\n", e.what());
        return 2;
    }
}
