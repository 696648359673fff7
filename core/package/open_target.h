// What a command runs on: a model file or directory, or a package written by `cushion export`, plus a cushion.
// One rule for the CLI (generate, ppl, verify, ...) and the studio (File > Open).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "base/progress.h"
#include "cushion/cushion.h"
#include "formats/model_loader.h"
#include "package/quantized_package.h"

namespace cushion {

// Dispatches on what `path` is: a package exported by `cushion export` (a directory with quantization.json:
// its weights dequantized from the integer codes, see quantized_package.h), else load_model_file (Hugging Face
// directory, GGUF, llama2.c). Result is on the CPU in float32. Throws Error naming file, offset, tensor or field.
std::shared_ptr<Model> load_model(const std::string& path, const LoadOptions& opts = {});

struct OpenOptions {
    c10::Device device = c10::Device(c10::kCPU);
    at::ScalarType dtype = at::kFloat;
    std::string tokenizer_path;       // overrides the tokenizer found with the model or package
    std::string cushion_path;         // a cushion file, in place of a package's own cushion; "" = none / the package's
    std::string kernels = "simulated";  // "int8": a package runs on the integer kernels (int8_kernels.h)
    ProgressFn progress;
};

// A model, or a package (its model, activation quantizer, kernels and cushion), with the cushion to run after.
struct RunTarget {
    std::shared_ptr<QuantizedPackage> pkg;  // null for a plain model
    std::shared_ptr<Model> model;
    std::unique_ptr<Cushion> cushion;       // on the model's device and dtype; null: none
    std::vector<std::string> warnings;      // the loader's warnings
    std::vector<std::string> notes;         // what the int8 kernels did, when asked for
    // Sets the options' hook, kernels, prefix and prefix_last_logits (GenerateOptions, PerplexityOptions).
    template <class Options>
    void apply(Options* o) const {
        if (pkg) {
            o->hook = pkg->hook.get();
            o->kernels = pkg->kernels.get();
        }
        if (cushion) {
            o->prefix = &cushion->kv;
            o->prefix_last_logits = cushion->last_logits;
        }
    }
};

// Opens `path` as a package (hashes checked) or a model, on o.device in o.dtype, with o.cushion_path's cushion
// (checked against the model) or else a package's own. --kernels int8 on a plain model, or a package that cannot
// use them, is an Error saying why.
RunTarget open_target(const std::string& path, const OpenOptions& o = {});

}  // namespace cushion
