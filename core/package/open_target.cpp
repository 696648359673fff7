#include "package/open_target.h"

#include "base/error.h"
#include "package/int8_kernels.h"

namespace cushion {

std::shared_ptr<Model> load_model(const std::string& path, const LoadOptions& opts) {
    if (is_package_directory(path)) {
        // An exported package: its weights (dequantized from the integer codes, SmoothQuant folded). Its
        // activation quantizer and cushion come only with load_package / open_target (as `cushion eval/generate DIR`).
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

RunTarget open_target(const std::string& path, const OpenOptions& o) {
    if (o.kernels != "simulated" && o.kernels != "int8")
        throw Error("kernels must be simulated or int8, not '" + o.kernels + "'");
    RunTarget t;
    const ProgressFn loading = [&](double f, const std::string& what) { return !o.progress || o.progress(0.9 * f, what); };
    if (is_package_directory(path)) {
        LoadPackageOptions lo;
        lo.tokenizer_path = o.tokenizer_path;
        lo.progress = loading;
        t.pkg = load_package(path, lo);
        t.model = t.pkg->model;
        t.warnings = t.model->warnings;
        if (o.device != t.model->device() || o.dtype != t.model->dtype()) {
            report_progress(o.progress, 0.92, "moving to " + o.device.str());
            t.pkg->to(o.device, o.dtype);
        }
        if (o.kernels == "int8") {
            const Int8KernelInfo k = use_int8_kernels(*t.pkg);
            t.notes.push_back("int8 kernels (" + k.engine + "): " + std::to_string(k.int8_linears) +
                              " block linears as integer products (int32 sums), " + std::to_string(k.fallback_linears) +
                              " on float");
            t.notes.insert(t.notes.end(), k.notes.begin(), k.notes.end());
        }
    } else {
        if (o.kernels == "int8")
            throw Error("--kernels int8 runs an exported package (`cushion export`); " + path + " is not one");
        LoadOptions lo;
        lo.tokenizer_path = o.tokenizer_path;
        lo.progress = loading;
        t.model = load_model_file(path, lo);
        t.warnings = t.model->warnings;
        if (o.device != t.model->device() || o.dtype != t.model->dtype()) {
            report_progress(o.progress, 0.92, "moving to " + o.device.str());
            t.model->to(o.device, o.dtype);
        }
    }
    if (!o.cushion_path.empty()) {
        t.cushion = std::make_unique<Cushion>(load_cushion(o.cushion_path));
        check_cushion_fits(*t.cushion, *t.model, o.cushion_path);
        *t.cushion = cushion_to(*t.cushion, t.model->device(), t.model->dtype());
    } else if (t.pkg) {
        t.cushion = std::make_unique<Cushion>(t.pkg->cushion);
    }
    report_progress(o.progress, 1.0, "loaded");
    return t;
}

}  // namespace cushion
