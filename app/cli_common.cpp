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

namespace {
// OpenOptions from the common options (--device, --dtype, --tokenizer, --kernels, --cushion).
OpenOptions open_options(const Args& a, bool with_cushion) {
    OpenOptions o;
    o.device = parse_device(a.get("device", "cpu"));
    o.dtype = parse_dtype(a.get("dtype", "fp32"));
    o.tokenizer_path = a.get("tokenizer");
    o.kernels = a.get("kernels", "simulated");
    if (o.kernels != "simulated" && o.kernels != "int8")
        throw Error("--kernels must be simulated or int8, not '" + o.kernels + "'");
    if (with_cushion) o.cushion_path = a.get("cushion");
    return o;
}

RunTarget open_with_bar(const Args& a, bool with_cushion) {
    OpenOptions o = open_options(a, with_cushion);
    ProgressBar bar("loading", a.has("quiet"));
    o.progress = bar.fn();
    RunTarget t = open_target(model_arg(a), o);
    bar.finish();
    for (const auto& w : t.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
    for (size_t i = 0; i < t.notes.size(); ++i) std::fprintf(stderr, "%s%s\n", i ? "notice: " : "", t.notes[i].c_str());
    return t;
}
}  // namespace

std::shared_ptr<QuantizedPackage> package_from_args(const Args& a) {
    const std::string path = model_arg(a);
    if (!is_package_directory(path)) {
        (void)open_options(a, false);  // --kernels checked
        if (a.get("kernels", "simulated") != "simulated")
            throw Error("--kernels int8 runs an exported package (`cushion export`); " + path + " is not one");
        return nullptr;
    }
    return open_with_bar(a, false).pkg;
}

std::unique_ptr<Cushion> cushion_from_args(const Args& a, const Model& m) {
    if (!a.has("cushion")) return nullptr;
    auto c = std::make_unique<Cushion>(load_cushion(a.get("cushion")));
    check_cushion_fits(*c, m, a.get("cushion"));
    *c = cushion_to(*c, m.device(), m.dtype());
    return c;
}

RunTarget run_target_from_args(const Args& a) { return open_with_bar(a, true); }

void print_json(const nlohmann::json& j, int indent) {
    std::cout << j.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
}

}  // namespace cushion::cli
