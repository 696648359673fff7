#include "tokenizer/tokenizer_files.h"

#include <filesystem>

#include "base/error.h"

namespace cushion {

namespace fs = std::filesystem;

std::unique_ptr<Tokenizer> load_tokenizer_file(const std::string& path, int32_t vocab_size) {
    const std::string ext = fs::path(path).extension().string();
    if (ext == ".model") return load_sentencepiece_tokenizer(path);
    if (ext == ".json") return load_tokenizer_json(path);
    if (ext == ".bin") return load_llama2c_tokenizer(path, vocab_size);
    throw Error(path + ": unknown kind of tokenizer file '" + fs::path(path).filename().string() +
                "': give a SentencePiece *.model, a Hugging Face tokenizer *.json or a llama2.c tokenizer *.bin");
}

std::unique_ptr<Tokenizer> load_tokenizer_in_directory(const std::string& dir, int32_t vocab_size) {
    std::error_code ec;
    for (const char* name : {"tokenizer.model", "tokenizer.json"}) {
        const fs::path p = fs::path(dir) / name;
        if (fs::exists(p, ec)) return load_tokenizer_file(p.string(), vocab_size);
    }
    return nullptr;
}

}  // namespace cushion
