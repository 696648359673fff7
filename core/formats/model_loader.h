// Loads a model from a llama2.c checkpoint (.bin), a GGUF file, or a Hugging Face directory.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "model/model.h"
#include "base/progress.h"

namespace cushion {

struct LoadOptions {
    std::string tokenizer_path;  // overrides the tokenizer found next to the model
    ProgressFn progress;
};

// Dispatches on what `path` is: a directory (Hugging Face), *.gguf / GGUF magic, else llama2.c. (An exported
// package is a layer above: package/open_target.h's load_model opens those too.)
// Result is on the CPU in float32, its fingerprint computed. Throws Error naming file, offset, tensor or field.
std::shared_ptr<Model> load_model_file(const std::string& path, const LoadOptions& opts = {});

std::shared_ptr<Model> load_llama2c(const std::string& path, const LoadOptions& opts);
std::shared_ptr<Model> load_gguf(const std::string& path, const LoadOptions& opts);
std::shared_ptr<Model> load_hf_directory(const std::string& dir, const LoadOptions& opts);

// Writes `model` as a Hugging Face directory (config.json, model.safetensors, tokenizer files copied
// from the source when available), atomically. Used by tests and by `plant-outliers`.
void save_hf_directory(const Model& model, const std::string& dir);

// Pieces of save_hf_directory, shared with the package exporter (quantized_package.h):
std::string hf_config_json(const Model& model);  // the config.json text for model's architecture
// Tokenizer files to copy into a directory for `model`: (source path, name in the directory), found from
// model.source (empty when none is found).
std::vector<std::pair<std::string, std::string>> hf_tokenizer_files(const Model& model);
// Parses a Hugging Face config.json (throws Error naming the file and field); appends warnings.
ModelConfig read_hf_config(const std::string& config_path, std::vector<std::string>* warnings = nullptr);

}  // namespace cushion
