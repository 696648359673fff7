// What a command runs on: a model file or directory, or a package written by `cushion export`.
#pragma once
#include <memory>
#include <string>

#include "formats/model_loader.h"

namespace cushion {

// Dispatches on what `path` is: a package exported by `cushion export` (a directory with quantization.json:
// its weights dequantized from the integer codes, see quantized_package.h), else load_model_file (Hugging Face
// directory, GGUF, llama2.c). Result is on the CPU in float32. Throws Error naming file, offset, tensor or field.
std::shared_ptr<Model> load_model(const std::string& path, const LoadOptions& opts = {});

}  // namespace cushion
