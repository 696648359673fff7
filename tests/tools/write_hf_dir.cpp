// Test helper: writes any model `cushion` can load (llama2.c .bin, GGUF, HF directory) as a Hugging Face
// directory (config.json + float32 model.safetensors + tokenizer files), for checks outside this tool
// (tests/numpy_cushion_check.sh).   usage: write_hf_dir MODEL OUT_DIR
#include <cstdio>
#include <exception>

#include "package/open_target.h"

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: write_hf_dir MODEL OUT_DIR\n");
        return 2;
    }
    try {
        cushion::save_hf_directory(*cushion::load_model(argv[1]), argv[2]);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "write_hf_dir: %s\n", e.what());
        return 1;
    }
    return 0;
}
