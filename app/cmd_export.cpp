// `cushion export | verify`, and `cushion eval PACKAGE_DIR`: the quantized model with its cushion as a package.
#include <ATen/ATen.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "cli_common.h"
#include "cli_progress.h"
#include "cushion/cushion.h"
#include "base/device_memory.h"
#include "package/open_target.h"
#include "model/perplexity.h"
#include "package/quantized_package.h"

namespace cushion::cli {

using json = nlohmann::json;

const char* kExportHelp =
    "usage: cushion export [MODEL] --cushion FILE --calib FILE --out DIR [--text FILE] [quantization options]\n"
    "       cushion export MODEL|PACKAGE --format compressed-tensors --out DIR [...]\n"
    "Writes the quantized model with its cushion as a self-contained package directory:\n"
    "  model.safetensors    int8 weight codes (4-bit: two per byte) + float32 scales, SmoothQuant folded into\n"
    "                       weights and norms, the static activation scale / zero point (and min / max) of every\n"
    "                       quantized site, and the full-precision tensors (embeddings, norms, LM head)\n"
    "  cushion.safetensors  the prefix ids and per-layer K/V cache\n"
    "  config.json + tokenizer files of the source model\n"
    "  quantization.json    scheme, bits, granularities, sites, calibration sha256, perplexities at export (FP,\n"
    "                       quantized without / with the cushion), tool version, model fingerprint, file hashes\n"
    "Written atomically (temporary directory beside DIR, renamed at the end): Ctrl-C or a full disk leaves nothing.\n"
    "Static activation ranges are collected on --calib with the cushion in place, as `cushion eval --cushion` does,\n"
    "so `cushion eval DIR --text FILE` reproduces eval's 'with cushion' figure.\n"
    "  --cushion FILE         the cushion (from `cushion calibrate`), made for MODEL\n"
    "  --calib FILE           text for the activation ranges (static, SmoothQuant), one document per line\n"
    "  --out DIR              the package directory\n"
    "  --text FILE            text to measure perplexity on at export (default: the --calib text)\n"
    "  --wbits N              weight bits: 0, 4 or 8 (default 8)\n"
    "  --group G              weight group size (default 128) or 'per-channel'\n"
    "  --abits N              activation bits: 0, 4, 6, 8 or 16 (default 8)\n"
    "  --act A                per-tensor-static (default), per-tensor-dynamic or per-token\n"
    "  --smoothquant ALPHA    SmoothQuant migration strength, e.g. 0.8 (default off)\n"
    "  --kv-bits N            KV-cache quantization of new tokens: 0 (default), 4 or 8\n"
    "  --force                replace DIR if it exists\n"
    "  --batch-tokens N       padded tokens per forward batch (default 8192)\n"
    "  --format F             package (default) or compressed-tensors: the layout of the compressed-tensors library\n"
    "                         (llm-compressor's; loads in transformers, serves in vLLM): config.json with its\n"
    "                         quantization_config, model.safetensors (W8A8: int8 weights + static per-tensor\n"
    "                         input_scale / input_zero_point, format int-quantized; --abits 0: W8A16 or W4A16,\n"
    "                         pack-quantized), tokenizer files, and the cushion: cushion_prefix.json (the token ids a\n"
    "                         server prepends), cushion_kv.safetensors (the tuned K/V), CUSHION.md (what a server\n"
    "                         must do). MODEL may be a package made by export: it is converted as it is; otherwise\n"
    "                         the package is made first (in a temporary directory) and converted. Per-tensor-static\n"
    "                         8-bit activations or none, all four sites, no --kv-bits.\n"
    "The package runs with `cushion eval DIR`, `cushion generate DIR` and `cushion ppl DIR`. By default the\n"
    "matrix products are float32 on the dequantized integer grid (simulated integer arithmetic, same numbers);\n"
    "`--kernels int8` runs W8A8 per-tensor-static packages with real int8 products: on the CPU\nthrough libtorch's quantized engine (oneDNN), on CUDA through at::_int_mm (int8 x int8 -> int32).\n";

const char* kVerifyHelp =
    "usage: cushion verify DIR [--text FILE] [--source MODEL] [--hashes-only]\n"
    "Checks an exported package: the sha256 of every file against quantization.json, that its parts belong to\n"
    "one model (and to --source when given), that it loads, and re-measures the quantized-with-cushion\n"
    "perplexity on the export's text (or --text, which must be the same text) against the recorded figure\n"
    "(1e-4 relative). Exit status 0 when everything holds, 1 otherwise.\n"
    "  --text FILE            the text the package's perplexity was measured on\n"
    "  --source MODEL         the model the package should have been exported from\n"
    "  --hashes-only          skip the re-measurement\n"
    "  --batch-tokens N       padded tokens per forward batch (default 8192)\n";

int export_compressed_tensors(const Args& a, const std::string& package_dir, bool package_is_temporary);

int cmd_export(int argc, char** argv) {
    Args a = parse_command(argc, argv, {"force"},
                   {"cushion", "calib", "out", "text", "wbits", "group", "abits", "act", "smoothquant", "kv-bits",
                    "batch-tokens", "format"});
    if (print_help_if_asked(a, kExportHelp)) return 0;
    const std::string format = a.get("format", "package");
    if (format != "package" && format != "compressed-tensors")
        throw Error("--format: package or compressed-tensors, not '" + format + "'");
    const bool ct = format == "compressed-tensors";
    if (ct && is_package_directory(model_arg(a))) {
        for (const char* k : {"cushion", "calib", "text", "wbits", "group", "abits", "act", "smoothquant", "kv-bits"})
            if (a.has(k))
                throw Error(model_arg(a) + " is a package: it is converted with its own quantization and cushion; drop --" + k);
        if (std::filesystem::exists(a.require("out")) && !a.has("force"))
            throw Error(a.require("out") + " exists; pass --force to replace it");
        return export_compressed_tensors(a, model_arg(a), false);
    }
    if (a.get("dtype", "fp32") != "fp32" && a.get("dtype", "fp32") != "float32")
        throw Error("export computes in fp32 (the package stores float32 scales); drop --dtype");
    if (is_package_directory(model_arg(a))) throw Error(model_arg(a) + " is already a package; export from the original model");
    ExportOptions eo;
    eo.config = quant_config_from_args(a);
    if (ct && std::filesystem::exists(a.require("out")) && !a.has("force"))
        throw Error(a.require("out") + " exists; pass --force to replace it");
    // compressed-tensors: the package is written into a temporary directory beside --out, converted, removed
    const std::string out = ct ? a.require("out") + ".cushion-package-" + std::to_string(::getpid()) : a.require("out");
    struct RemoveAfter {
        std::string dir;
        ~RemoveAfter() {
            std::error_code ec;
            if (!dir.empty()) std::filesystem::remove_all(dir, ec);
        }
    } remove_after{ct ? out : std::string()};
    const std::string cushion_file = a.require("cushion");
    eo.calib_file = a.require("calib");
    eo.eval_file = a.get("text", eo.calib_file);
    eo.overwrite = a.has("force") || ct;
    eo.max_batch_tokens = a.get_int("batch-tokens", 8192, 1, 1 << 24);
    eo.tokenizer_path = a.get("tokenizer");
    if (std::filesystem::exists(out) && !eo.overwrite) throw Error(out + " exists; pass --force to replace it");
    const auto calib_lines = read_documents(eo.calib_file);
    const auto eval_lines = read_documents(eo.eval_file);
    auto m = load_model_from_args(a);
    Cushion cush = load_cushion(cushion_file);
    check_cushion_fits(cush, *m, cushion_file);
    // As `cushion eval` with a cushion: documents must fit after it.
    const int64_t max_len = max_document_tokens(*m, cush.length());
    eo.calib_docs = tokenize_documents(*m, calib_lines, max_len);
    eo.eval_docs = tokenize_documents(*m, eval_lines, max_len);
    ProgressBar bar("export", a.has("quiet"));
    eo.progress = bar.fn();
    ExportReport r;
    try {
        r = write_package(*m, cush, out, eo);
    } catch (const Cancelled&) {
        throw;
    } catch (const Error& e) {
        if (!ct) throw;
        // The intermediate package failed (a full disk, a read-only folder): name the directory the user asked for.
        throw Error(a.require("out") + ": not written (" +
                    (std::filesystem::exists(a.require("out")) ? "the existing directory is unchanged"
                                                               : "nothing was left behind") +
                    "): the package it is converted from: " + e.what());
    }
    bar.finish();
    if (ct) return export_compressed_tensors(a, out, true);
    if (a.has("json")) {
        json j = json::parse(r.info_json);
        j["out"] = r.dir;
        j["bytes"] = r.bytes;
        j["fp32_weight_bytes"] = r.fp32_weight_bytes;
        j["package_weight_bytes"] = r.package_weight_bytes;
        print_json(j, 2);
        return 0;
    }
    std::printf("exported %s: %s, cushion '%s' (%lld tokens)\n", r.dir.c_str(), eo.config.describe().c_str(),
                cush.prefix_text.c_str(), (long long)cush.length());
    std::printf("weights %s (float32 would be %s); package %s in all\n", format_bytes((int64_t)r.package_weight_bytes).c_str(),
                format_bytes((int64_t)r.fp32_weight_bytes).c_str(), format_bytes((int64_t)r.bytes).c_str());
    std::printf("perplexity on %s (%lld predicted tokens):\n", eo.eval_file.c_str(), (long long)r.eval_tokens);
    std::printf("  full precision            %12.4f   with cushion %12.4f\n", r.ppl_fp, r.ppl_fp_cushion);
    std::printf("  quantized                 %12.4f   with cushion %12.4f   <- the package\n", r.ppl_quant,
                r.ppl_quant_cushion);
    for (const auto& n : r.notes) std::printf("note: %s\n", n.c_str());
    return 0;
}

int eval_package(const Args& a) {
    for (const char* k : {"calib", "wbits", "group", "abits", "act", "smoothquant", "kv-bits", "cushion", "sweep"})
        if (a.has(k))
            throw Error(model_arg(a) + " is an exported package: it carries its own quantization and cushion; drop --" + k);
    const auto lines = read_documents(a.require("text"));
    auto pkg = package_from_args(a);
    const auto docs = tokenize_documents(*pkg->model, lines, pkg->max_doc_tokens());
    PerplexityOptions po;
    po.max_batch_tokens = a.get_int("batch-tokens", 8192, 1, 1 << 24);
    ProgressBar bar("eval", a.has("quiet"));
    po.progress = bar.fn();
    auto r = pkg->perplexity(docs, po);
    bar.finish();
    const json info = json::parse(pkg->info_json);
    const json recorded = info.contains("perplexity") ? info["perplexity"] : json(nullptr);
    if (a.has("json")) {
        json j = {{"package", pkg->dir}, {"setting", pkg->config.describe()}, {"ppl_cushion", r.ppl},
                  {"kernels", pkg->kernels ? "int8" : "simulated"},
                  {"tokens", r.tokens}, {"docs", r.docs},
                  {"cushion", {{"prefix", pkg->cushion.prefix_text}, {"length", pkg->cushion.length()}}},
                  {"recorded_at_export", recorded}};
        print_json(j, 2);
        return 0;
    }
    std::printf("package %s: %s (exported by cushion %s)\n", pkg->dir.c_str(), pkg->config.describe().c_str(),
                info.value("tool_version", std::string("?")).c_str());
    std::printf("cushion: %lld tokens: %s\n", (long long)pkg->cushion.length(), pkg->cushion.prefix_text.c_str());
    std::printf("perplexity on %s (%lld documents, %lld predicted tokens), with its cushion: %.4f\n",
                a.get("text").c_str(), (long long)r.docs, (long long)r.tokens, r.ppl);
    if (recorded.is_object())
        std::printf("recorded at export on %s: FP %.4f, quantized %.4f, quantized with cushion %.4f\n",
                    recorded.value("text_file", json("?")).is_string() ? recorded["text_file"].get<std::string>().c_str() : "?",
                    recorded.value("fp", 0.0), recorded.value("quantized", 0.0), recorded.value("quantized_cushion", 0.0));
    return 0;
}

int cmd_verify(int argc, char** argv) {
    Args a = parse_command(argc, argv, {"hashes-only"}, {"text", "source", "batch-tokens"});
    if (print_help_if_asked(a, kVerifyHelp)) return 0;
    if (a.positional().size() != 1) throw Error("verify needs the package directory (see --help)");
    const std::string dir = a.positional()[0];
    if (!is_package_directory(dir)) throw Error(dir + ": not an exported package (no quantization.json)");
    VerifyOptions vo;
    vo.text_file = a.get("text");
    vo.remeasure = !a.has("hashes-only");
    vo.max_batch_tokens = a.get_int("batch-tokens", 8192, 1, 1 << 24);
    std::shared_ptr<Model> src;
    if (a.has("source")) {
        LoadOptions lo;
        src = load_model(a.get("source"), lo);
        vo.source = src.get();
    }
    ProgressBar bar("verify", a.has("quiet"));
    vo.progress = bar.fn();
    VerifyReport r = verify_package(dir, vo);
    bar.finish();
    if (a.has("json")) {
        json files = json::object();
        for (auto& [f, ok] : r.files) files[f] = ok;
        json j = {{"ok", r.ok}, {"problems", r.problems}, {"files", files}, {"remeasured", r.remeasured}};
        if (r.remeasured) j["perplexity"] = {{"text", r.text_file}, {"recorded", r.ppl_recorded}, {"measured", r.ppl_measured}};
        print_json(j, 2);
        return r.ok ? 0 : 1;
    }
    for (auto& [f, ok] : r.files) std::printf("%-28s %s\n", f.c_str(), ok ? "sha256 ok" : "SHA256 MISMATCH");
    if (r.remeasured)
        std::printf("perplexity on %s: recorded %.6f, measured %.6f\n", r.text_file.c_str(), r.ppl_recorded, r.ppl_measured);
    else if (r.ok && !a.has("hashes-only"))
        std::printf("perplexity not re-measured: the export's text is not available (pass --text FILE)\n");
    for (auto& p : r.problems) std::printf("problem: %s\n", p.c_str());
    std::printf("%s\n", r.ok ? "package OK" : "package FAILED verification");
    return r.ok ? 0 : 1;
}

}  // namespace cushion::cli
