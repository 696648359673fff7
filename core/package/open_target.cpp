#include "package/open_target.h"

#include "package/quantized_package.h"

namespace cushion {

std::shared_ptr<Model> load_model(const std::string& path, const LoadOptions& opts) {
    if (is_package_directory(path)) {
        // An exported package: its weights (dequantized from the integer codes, SmoothQuant folded). Its
        // activation quantizer and cushion come only with load_package (as `cushion eval/generate DIR` do).
        LoadPackageOptions po;
        po.tokenizer_path = opts.tokenizer_path;
        po.progress = opts.progress;
        auto m = load_package(path, po)->model;
        m->warnings.push_back(path + " is a quantized package: loaded its weights only; its static activation "
                              "quantization and cushion apply through load_package (cushion eval / generate " + path + ")");
        return m;
    }
    return load_model_file(path, opts);
}

}  // namespace cushion
