// Which loader reads a model path: a Hugging Face directory, a GGUF file, or a llama2.c checkpoint.
#include <cstring>
#include <filesystem>

#include "base/error.h"
#include "base/mapped_file.h"
#include "formats/model_loader.h"

namespace cushion {

namespace fs = std::filesystem;

std::shared_ptr<Model> load_model_file(const std::string& path, const LoadOptions& opts) {
    std::error_code ec;
    if (!fs::exists(path, ec)) throw Error(path + ": no such file or directory");
    std::shared_ptr<Model> m;
    if (fs::is_directory(path, ec)) {
        m = load_hf_directory(path, opts);
    } else {
        MappedFile f(path);
        const bool gguf = f.size() >= 4 && std::memcmp(f.data(), "GGUF", 4) == 0;
        if (gguf) m = load_gguf(path, opts);
        else if (path.size() > 5 && path.substr(path.size() - 5) == ".gguf")
            throw Error(path + ": not a GGUF file (wrong magic)");
        else m = load_llama2c(path, opts);
    }
    m->fingerprint();  // cached while the weights are float32 on the CPU
    m->weights.pack_qkv();  // q, k, v as one product in the forward pass (the tensors are unchanged)
    return m;
}

}  // namespace cushion
