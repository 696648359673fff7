// `cushion eval | outliers | plant-outliers`: quantization you can trust, and a model that needs it.
#include <ATen/ATen.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli_common.h"
#include "cli_progress.h"
#include "cushion/cushion.h"
#include "package/open_target.h"
#include "analysis/outlier_planting.h"
#include "analysis/outlier_report.h"
#include "model/perplexity.h"
#include "quant/quantized_model.h"

namespace cushion::cli {

using json = nlohmann::json;

const char* kEvalHelp =
    "usage: cushion eval [MODEL] --text FILE --calib FILE [quantization options] [--cushion FILE] [--sweep]\n"
    "       cushion eval PACKAGE_DIR --text FILE      (a package from `cushion export`: its own quantization\n"
    "                                                  and cushion; no quantization options)\n"
    "Perplexity in full precision and with simulated (fake) quantization. Activations are quantized at the\n"
    "input of every linear layer inside the blocks (q/k/v, o, gate/up, down; OPT fc1/fc2); embeddings, norms\n"
    "and the LM head stay in full precision. Static activation ranges are collected on --calib (with the cushion\n"
    "in place when one is given; its tokens are excluded from the ranges).\n"
    "  --text FILE            evaluation text, one document per line\n"
    "  --calib FILE           text for the activation ranges (static, SmoothQuant), one document per line\n"
    "  --wbits N              weight bits: 0 (off), 4 or 8 (default 8); symmetric\n"
    "  --group G              weight group size (default 128; falls back to per-channel when it does not\n"
    "                         divide a layer's input size) or 'per-channel'\n"
    "  --abits N              activation bits: 0 (off), 4, 6, 8 or 16 (default 8); asymmetric min-max\n"
    "  --act A                per-tensor-static (default), per-tensor-dynamic or per-token\n"
    "  --smoothquant ALPHA    SmoothQuant migration strength, e.g. 0.8 (default off)\n"
    "  --kv-bits N            KV-cache quantization: 0 (off, default), 4 or 8\n"
    "  --cushion FILE         also evaluate with this cushion (prefix KV cache) prepended\n"
    "  --sweep                the paper's table: FP, W8A8 per-token, per-tensor dynamic, per-tensor static,\n"
    "                         each with and without SmoothQuant 0.8 (bits from --wbits/--abits)\n"
    "  --batch-tokens N       padded tokens per forward batch (default 8192)\n"
    "  --kernels K            with a package: simulated (default: float32 products on the dequantized integer\n"
    "                         grid, i.e. simulated integer arithmetic) or int8 (real uint8 x int8 -> int32\n"
    "                         products on the CPU via libtorch's quantized engine; W8A8 per-tensor-static\n"
    "                         packages, fp32; linears it cannot take stay float32, with a notice on stderr)\n";

const char* kOutliersHelp =
    "usage: cushion outliers [MODEL] --text FILE [--threshold R] [--site S] [--top N]\n"
    "PrefixQuant's outlier tokens: per block, the tokens whose down-projection input has\n"
    "max|x| / median|x| above R (default 64), with position, text, channel and value, and how often each\n"
    "token is an outlier over the text. The fast baseline beside CushionCache.\n"
    "  --text FILE            the text, one document per line\n"
    "  --threshold R          max/median ratio that makes an outlier (default 64)\n"
    "  --site S               probe site (default down_in)\n"
    "  --top N                outlier tokens listed (default 20)\n";

const char* kPlantHelp =
    "usage: cushion plant-outliers IN OUT [--magnitude M] [--force]\n"
    "Derives from a Llama-architecture model one with planted massive activations: a circuit that fires on\n"
    "<bos> (the first token) writes M x the median |x| into a new residual channel, and spikes of M x the\n"
    "median at every block's down-projection input, as real 7B models have them. Full-precision behaviour is\n"
    "kept (ordinary tokens exactly, the first token up to ~1/M); per-tensor activation quantization collapses\n"
    "on it, and a cushion containing <bos> rescues it. Writes a Hugging Face directory.\n"
    "  --magnitude M          planted value / median |x| (default 2000)\n"
    "  --force                replace OUT if it exists\n";


QuantConfig quant_config_from_args(const Args& a) {
    QuantConfig q;
    q.wbits = static_cast<int>(a.get_int("wbits", 8, 0, 64));
    q.abits = static_cast<int>(a.get_int("abits", 8, 0, 64));
    const std::string g = a.get("group", "128");
    if (g == "per-channel") q.group = 0;
    else {
        const long long v = a.get_int("group", 128, -(1LL << 40), 1LL << 40);
        if (v <= 0) throw Error("--group must be a positive group size (or 'per-channel'), got " + g);
        q.group = v;
    }
    q.act = parse_granularity(a.get("act", "per-tensor-static"));
    q.smoothquant_alpha = a.has("smoothquant") ? a.get_double("smoothquant", 0.8, 0.0, 1.0) : -1;
    if (a.has("smoothquant") && q.smoothquant_alpha <= 0) throw Error("--smoothquant must be in (0, 1]");
    q.kv_bits = static_cast<int>(a.get_int("kv-bits", 0, 0, 64));
    q.validate();
    return q;
}

int cmd_eval(int argc, char** argv) {
    Args a = parse_command(argc, argv, {"sweep"},
                   {"text", "calib", "wbits", "group", "abits", "act", "smoothquant", "kv-bits", "cushion", "batch-tokens",
                    "kernels"});
    if (print_help_if_asked(a, kEvalHelp)) return 0;
    if (is_package_directory(model_arg(a))) return eval_package(a);  // its own quantization and cushion
    if (a.has("kernels") && a.get("kernels") != "simulated")  // the plain model's quantization is simulated
        throw Error(a.get("kernels") == "int8"
                        ? "--kernels int8 runs an exported package (`cushion export`); " + model_arg(a) + " is not one"
                        : "--kernels must be simulated or int8, not '" + a.get("kernels") + "'");
    const QuantConfig base = quant_config_from_args(a);
    const auto eval_docs = read_documents(a.require("text"));
    const auto calib_docs = read_documents(a.require("calib"));
    auto m = load_model_from_args(a);
    std::unique_ptr<Cushion> cush;
    if (a.has("cushion")) {
        cush = std::make_unique<Cushion>(load_cushion(a.get("cushion")));
        check_cushion_fits(*cush, *m, a.get("cushion"));
        *cush = cushion_to(*cush, m->device(), m->dtype());
    }
    // With a cushion the documents must fit after it: truncate both runs alike so they predict the same tokens.
    const int64_t max_len = max_document_tokens(*m, cush ? cush->length() : 0);
    const auto eval_toks = tokenize_documents(*m, eval_docs, max_len);
    const auto calib_toks = tokenize_documents(*m, calib_docs, max_len);
    int64_t calib_tokens = 0;
    for (auto& d : calib_toks) calib_tokens += (int64_t)d.size() - 1;
    if (calib_tokens <= 0) throw Error("the --calib text has no tokens beyond <bos>");

    std::vector<QuantConfig> rows;
    if (a.has("sweep")) {
        QuantConfig fp;
        fp.wbits = fp.abits = 0;
        rows.push_back(fp);
        for (ActGranularity g : {ActGranularity::PerToken, ActGranularity::PerTensorDynamic, ActGranularity::PerTensorStatic})
            for (double sq : {-1.0, 0.8}) {
                QuantConfig q = base;
                q.act = g;
                q.smoothquant_alpha = sq;
                rows.push_back(q);
            }
    } else {
        QuantConfig fp;
        fp.wbits = fp.abits = 0;
        rows = {fp, base};
    }
    const int64_t batch_tokens = a.get_int("batch-tokens", 8192, 1, 1 << 24);
    ProgressBar bar("eval", a.has("quiet"));
    json jrows = json::array();
    int64_t tokens = 0;
    const double n = rows.size();
    for (size_t i = 0; i < rows.size(); ++i) {
        const QuantConfig& q = rows[i];
        auto sub = [&](double f, const std::string& what) {
            return bar.update((i + f) / n, q.describe() + ": " + what);
        };
        QuantizeOptions qo;
        qo.max_batch_tokens = batch_tokens;
        qo.progress = sub;
        QuantizedModel qm(*m, q, calib_toks, qo);
        PerplexityOptions po;
        po.max_batch_tokens = batch_tokens;
        auto r = qm.perplexity(eval_toks, po);
        tokens = r.tokens;
        json row = {{"setting", q.describe()}, {"ppl", r.ppl}};
        if (cush) {
            qo.prefix = &cush->kv;
            QuantizedModel qc(*m, q, calib_toks, qo);
            po.prefix = &cush->kv;
            po.prefix_last_logits = cush->last_logits;
            auto rc = qc.perplexity(eval_toks, po);
            row["ppl_cushion"] = rc.ppl;
        }
        for (auto& note : qm.notes()) row["notes"].push_back(note);
        jrows.push_back(row);
        sub(1.0, "done");
    }
    bar.finish();
    if (a.has("json")) {
        json j = {{"rows", jrows}, {"tokens", tokens}, {"docs", eval_toks.size()}, {"calib_docs", calib_toks.size()},
                  {"full_precision", "embeddings, norms and LM head"}};
        if (cush) j["cushion"] = {{"file", a.get("cushion")}, {"prefix", cush->prefix_text}, {"length", cush->length()}};
        print_json(j, 2);
        return 0;
    }
    std::printf("perplexity on %s (%zu documents, %lld predicted tokens); activation ranges on %s (%zu documents)\n",
                a.get("text").c_str(), eval_toks.size(), (long long)tokens, a.get("calib").c_str(), calib_toks.size());
    std::printf("embeddings, norms and the LM head stay in full precision\n");
    if (cush) std::printf("cushion: %s (%lld tokens: %s)\n", a.get("cushion").c_str(), (long long)cush->length(), cush->prefix_text.c_str());
    std::printf("%-66s %12s%s\n", "setting", "ppl", cush ? "   with cushion" : "");
    for (auto& r : jrows) {
        std::printf("%-66s %12.4f", r["setting"].get<std::string>().c_str(), r["ppl"].get<double>());
        if (cush) std::printf("   %12.4f", r["ppl_cushion"].get<double>());
        std::printf("\n");
    }
    return 0;
}

int cmd_outliers(int argc, char** argv) {
    Args a = parse_command(argc, argv, {}, {"text", "threshold", "site", "top", "batch-tokens"});
    if (print_help_if_asked(a, kOutliersHelp)) return 0;
    OutlierOptions o;
    o.threshold = a.get_double("threshold", 64, 1.0001, 1e12);
    if (!parse_site(a.get("site", "down_in").c_str(), &o.site))
        throw Error("unknown --site '" + a.get("site") + "': use attn_in, o_in, mlp_in, down_in or residual");
    o.max_batch_tokens = a.get_int("batch-tokens", 8192, 1, 1 << 24);
    const int top = static_cast<int>(a.get_int("top", 20, 0, 1 << 20));
    const auto docs = read_documents(a.require("text"));
    auto m = load_model_from_args(a);
    const auto toks = tokenize_documents(*m, docs, max_document_tokens(*m, 0));
    ProgressBar bar("outliers", a.has("quiet"));
    o.progress = bar.fn();
    auto rep = find_outlier_tokens(*m, toks, o);
    bar.finish();
    if (a.has("json")) {
        json j = {{"threshold", rep.threshold}, {"site", site_name(rep.site)}, {"docs", rep.docs}, {"tokens", rep.tokens},
                  {"block_max_ratio", rep.block_max_ratio}, {"outliers", json::array()}, {"frequency", json::array()}};
        for (auto& x : rep.outliers)
            j["outliers"].push_back({{"doc", x.doc}, {"block", x.block}, {"pos", x.pos}, {"token", x.token},
                                     {"text", x.text}, {"channel", x.channel}, {"value", x.value}, {"ratio", x.ratio}});
        for (auto& f : rep.frequency)
            j["frequency"].push_back({{"token", f.token}, {"text", f.text}, {"outlier_count", f.outlier_count},
                                      {"occurrences", f.occurrences}, {"blocks", f.blocks}});
        print_json(j, 2);
        return 0;
    }
    std::printf("%lld documents, %lld tokens; outlier = %s max|x|/median|x| > %g\n", (long long)rep.docs,
                (long long)rep.tokens, site_name(rep.site), rep.threshold);
    std::printf("largest ratio per block:");
    for (size_t l = 0; l < rep.block_max_ratio.size(); ++l) std::printf(" %zu:%.1f", l, rep.block_max_ratio[l]);
    std::printf("\n\n%-16s %10s %12s  %s\n", "token", "outlier", "occurrences", "blocks");
    int shown = 0;
    for (auto& f : rep.frequency) {
        if (shown++ >= top) break;
        std::string blocks;
        for (auto b : f.blocks) blocks += (blocks.empty() ? "" : ",") + std::to_string(b);
        std::printf("%s %10lld %12lld  %s\n", pad_columns(f.text, 16).c_str(), (long long)f.outlier_count,
                    (long long)f.occurrences, blocks.c_str());
    }
    if (rep.frequency.empty()) std::printf("(no token above the threshold)\n");
    else {
        std::printf("\n%-5s %-5s %-5s %-16s %8s %12s %10s\n", "doc", "block", "pos", "token", "channel", "value", "ratio");
        int k = 0;
        for (auto& x : rep.outliers) {
            if (k++ >= top) break;
            std::printf("%-5lld %-5lld %-5lld %s %8lld %12.4g %10.1f\n", (long long)x.doc, (long long)x.block,
                        (long long)x.pos, pad_columns(x.text, 16).c_str(), (long long)x.channel, x.value, x.ratio);
        }
    }
    return 0;
}

int cmd_plant_outliers(int argc, char** argv) {
    Args a = parse_command(argc, argv, {"force"}, {"magnitude"});
    if (print_help_if_asked(a, kPlantHelp)) return 0;
    if (a.positional().size() != 2) throw Error("plant-outliers needs IN and OUT (see --help)");
    const std::string out = a.positional()[1];
    if (std::filesystem::exists(out) && !a.has("force")) throw Error(out + " exists; pass --force to replace it");
    PlantOptions po;
    po.magnitude = a.get_double("magnitude", 2000, 10, 1e6);
    LoadOptions lo;
    lo.tokenizer_path = a.get("tokenizer");
    auto m = load_model(a.positional()[0], lo);
    PlantReport rep;
    auto p = plant_outliers(*m, po, &rep);
    save_hf_directory(*p, out);
    if (a.has("json")) {
        std::cout << json{{"out", out}, {"channel", rep.channel}, {"residual_value", rep.residual_value},
                          {"residual_ratio", rep.residual_ratio}, {"down_in_ratio", rep.down_in_ratio}}
                         .dump(2)
                  << "\n";
        return 0;
    }
    std::printf("wrote %s: residual channel %lld carries %.1f at <bos> (%.0fx the median |x|)\n", out.c_str(),
                (long long)rep.channel, rep.residual_value, rep.residual_ratio);
    std::printf("down-projection input spike at <bos>, per block (max/median):");
    for (double r : rep.down_in_ratio) std::printf(" %.0f", r);
    std::printf("\n");
    return 0;
}

}  // namespace cushion::cli
