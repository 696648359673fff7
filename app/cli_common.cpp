#include "cli_common.h"

#include <iostream>
#include <nlohmann/json.hpp>

#include <cstdio>

#include "cli_progress.h"
#include "base/error.h"
#include "package/int8_kernels.h"
#include "package/open_target.h"
#include "base/resources.h"

namespace cushion::cli {

const std::set<std::string>& common_flags() {
    static const std::set<std::string> f{"json", "quiet", "help"};
    return f;
}
const std::set<std::string>& common_values() {
    static const std::set<std::string> v{"device", "dtype", "tokenizer"};
    return v;
}
std::set<std::string> with(std::set<std::string> a, const std::set<std::string>& b) {
    a.insert(b.begin(), b.end());
    return a;
}

const char* kCommonHelp =
    "  MODEL               a llama2.c .bin, a .gguf file or a Hugging Face directory\n"
    "                      (config.json + *.safetensors + tokenizer); default: the embedded stories260K;\n"
    "                      eval, generate and ppl also take a package made by `cushion export`\n"
    "  --device DEV        cpu (default), cuda or cuda:N\n"
    "  --dtype T           fp32 (default), fp16 or bf16\n"
    "  --tokenizer FILE    use this tokenizer (tokenizer.model, tokenizer.json or llama2.c tokenizer.bin)\n"
    "  --json              machine-readable output on stdout\n"
    "  --quiet             no progress bars\n"
    "  --help              this text\n";

Args parse_command(int argc, char** argv, const std::set<std::string>& flags, const std::set<std::string>& values) {
    return Args(argc, argv, 2, with(flags, common_flags()), with(values, common_values()));
}

std::string pad_columns(const std::string& s, size_t width) {
    size_t cols = 0;
    for (unsigned char ch : s) cols += (ch & 0xC0) != 0x80;  // count lead bytes only
    return cols >= width ? s : s + std::string(width - cols, ' ');
}

bool print_help_if_asked(const Args& a, const char* help) {
    if (!a.has("help")) return false;
    std::printf("%s\nCommon options:\n%s", help, kCommonHelp);
    return true;
}

std::string model_arg(const Args& a) {
    if (!a.positional().empty()) return a.positional()[0];
    return default_model_path();
}

std::shared_ptr<Model> load_model_from_args(const Args& a) {
    const c10::Device dev = parse_device(a.get("device", "cpu"));
    const at::ScalarType dt = parse_dtype(a.get("dtype", "fp32"));
    LoadOptions lo;
    lo.tokenizer_path = a.get("tokenizer");
    ProgressBar bar("loading", a.has("quiet"));
    lo.progress = bar.fn();
    auto m = load_model(model_arg(a), lo);
    bar.finish();
    for (const auto& w : m->warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
    m->to(dev, dt);
    return m;
}

std::shared_ptr<QuantizedPackage> package_from_args(const Args& a) {
    const std::string path = model_arg(a);
    const std::string kernels = a.get("kernels", "simulated");
    if (kernels != "simulated" && kernels != "int8")
        throw Error("--kernels must be simulated or int8, not '" + kernels + "'");
    if (!is_package_directory(path)) {
        if (kernels != "simulated")
            throw Error("--kernels int8 runs an exported package (`cushion export`); " + path + " is not one");
        return nullptr;
    }
    const c10::Device dev = parse_device(a.get("device", "cpu"));
    const at::ScalarType dt = parse_dtype(a.get("dtype", "fp32"));
    LoadPackageOptions lo;
    lo.tokenizer_path = a.get("tokenizer");
    ProgressBar bar("loading package", a.has("quiet"));
    lo.progress = bar.fn();
    auto p = load_package(path, lo);
    bar.finish();
    for (const auto& w : p->model->warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
    p->to(dev, dt);
    if (kernels == "int8") {
        const Int8KernelInfo k = use_int8_kernels(*p);
        std::fprintf(stderr, "int8 kernels (%s): %d block linears as integer products (int32 sums), %d on float\n",
                     k.engine.c_str(), k.int8_linears, k.fallback_linears);
        for (const auto& n : k.notes) std::fprintf(stderr, "notice: %s\n", n.c_str());
    }
    return p;
}

std::unique_ptr<Cushion> cushion_from_args(const Args& a, const Model& m) {
    if (!a.has("cushion")) return nullptr;
    auto c = std::make_unique<Cushion>(load_cushion(a.get("cushion")));
    check_cushion_fits(*c, m, a.get("cushion"));
    *c = cushion_to(*c, m.device(), m.dtype());
    return c;
}

RunTarget run_target_from_args(const Args& a) {
    RunTarget t;
    t.pkg = package_from_args(a);
    t.model = t.pkg ? t.pkg->model : load_model_from_args(a);
    t.cushion = cushion_from_args(a, *t.model);
    if (t.pkg && !t.cushion) t.cushion = std::make_unique<Cushion>(t.pkg->cushion);
    return t;
}

void print_json(const nlohmann::json& j, int indent) {
    std::cout << j.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
}

}  // namespace cushion::cli
