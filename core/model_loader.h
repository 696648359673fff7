// Loads a model from a llama2.c checkpoint (.bin), a GGUF file, or a Hugging Face directory.
#pragma once
#include <memory>
#include <string>

#include "model.h"
#include "progress.h"

namespace cushion {

struct LoadOptions {
    std::string tokenizer_path;  // overrides the tokenizer found next to the model
    ProgressFn progress;
};

// Dispatches on what `path` is: a directory (Hugging Face), *.gguf / GGUF magic, else llama2.c.
// Result is on the CPU in float32. Throws Error naming file, offset, tensor or field.
std::shared_ptr<Model> load_model(const std::string& path, const LoadOptions& opts = {});

std::shared_ptr<Model> load_llama2c(const std::string& path, const LoadOptions& opts);
std::shared_ptr<Model> load_gguf(const std::string& path, const LoadOptions& opts);
std::shared_ptr<Model> load_hf_directory(const std::string& dir, const LoadOptions& opts);

// Writes `model` as a Hugging Face directory (config.json, model.safetensors, tokenizer files copied
// from the source when available), atomically. Used by tests and by `plant-outliers`.
void save_hf_directory(const Model& model, const std::string& dir);

}  // namespace cushion
