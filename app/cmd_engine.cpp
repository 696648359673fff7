// `cushion info | generate | ppl | probe`: the engine's commands.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "analysis/colormap.h"
#include "model/activation_probe.h"
#include "model/non_finite.h"
#include "cli_common.h"
#include "cli_progress.h"
#include "model/generation.h"
#include "model/perplexity.h"
#include "png_writer.h"
#include "base/cuda_info.h"
#include "base/device_memory.h"
#include "base/threads.h"

namespace cushion::cli {

using json = nlohmann::json;

const char* kInfoHelp =
    "usage: cushion info [MODEL] [options]\n"
    "Prints the model's architecture, sizes, tokenizer and fingerprint.\n";

const char* kGenerateHelp =
    "usage: cushion generate [MODEL] --prompt TEXT [--max-tokens N] [--temperature T --seed S --top-p P]\n"
    "Generates text after the prompt (which gets <bos> first). Greedy by default (temperature 0).\n"
    "  --prompt TEXT       the prompt (required)\n"
    "  --max-tokens N      new tokens at most (default 128); stops at </s>\n"
    "  --temperature T     0 = greedy (default); > 0 samples\n"
    "  --seed S            random seed for sampling (default 42)\n"
    "  --top-p P           nucleus sampling mass (default 1 = off)\n"
    "  --cushion FILE      prepend this cushion (prefix KV cache); the prompt then gets no <bos> of its own\n"
    "  MODEL may be a package from `cushion export`: it runs with its quantizer and its cushion\n"
    "  --kernels K         with a package: simulated (default: float32 products on the dequantized integer\n"
    "                      grid, same numbers as an integer kernel up to rounding) or int8 (real uint8 x int8\n"
    "                      -> int32 products on the CPU via libtorch's quantized engine; W8A8 per-tensor-static\n"
    "                      packages, fp32; linears it cannot take stay float32, with a notice on stderr)\n"
    "  With --json: {\"prompt_tokens\": [...], \"tokens\": [...], \"text\": ...}\n";

const char* kPplHelp =
    "usage: cushion ppl [MODEL] --text FILE [--batch-tokens N]\n"
    "Perplexity: every non-empty line is one document = <bos> + its tokens (truncated to the model's\n"
    "context); mean NLL over every predicted position; ppl = exp(mean).\n"
    "  --text FILE         the text (e.g. resources/text/tinystories-eval.txt)\n"
    "  --batch-tokens N    padded tokens per forward batch (default 8192)\n"
    "  --cushion FILE      run every document after this cushion (prefix KV cache) instead of its <bos>;\n"
    "                      the same tokens are predicted (the first from the cushion's last logits)\n"
    "  MODEL may be a package from `cushion export`: it runs with its quantizer and its cushion\n"
    "  --kernels K         with a package: simulated (default: float32 products on the dequantized integer\n"
    "                      grid, same numbers as an integer kernel up to rounding) or int8 (real uint8 x int8\n"
    "                      -> int32 products on the CPU via libtorch's quantized engine; W8A8 per-tensor-static\n"
    "                      packages, fp32; linears it cannot take stay float32, with a notice on stderr)\n"
    "  With --json: {\"ppl\": ..., \"tokens\": ..., \"docs\": ...}\n";

const char* kProbeHelp =
    "usage: cushion probe [MODEL] (--text FILE | --prompt TEXT) [--png FILE] [--site S] [--top N]\n"
    "Runs the model and reports the activations quantization sees, per block and probe site:\n"
    "attn_in (q/k/v input), o_in, mlp_in (gate/up input), down_in, residual. For each: the largest |x|,\n"
    "its token and channel, and the largest max/median |x| ratio of a token (outlier tokens have >> 1).\n"
    "  --text FILE         probe every document (line) of FILE\n"
    "  --prompt TEXT       probe one prompt (gets <bos> first)\n"
    "  --site S            site for the table and heatmap (default down_in; 'all' in the table for all)\n"
    "  --png FILE          write a layers x tokens heatmap of per-token max |x| (log colour scale)\n"
    "                      for the prompt / first document at --site\n"
    "  --top N             outliers listed per block (default 3)\n"
    "  --cushion FILE      run after this cushion (prefix KV cache): the text gets no <bos>, and what is\n"
    "                      shown are the real tokens only, as quantization sees them\n";

int cmd_info(int argc, char** argv) {
    Args a = parse_command(argc, argv, {}, {});
    if (print_help_if_asked(a, kInfoHelp)) return 0;
    auto m = load_model_from_args(a);
    const auto& c = m->config;
    const int64_t params = c.parameter_count();
    if (a.has("json")) {
        json j = {{"source", m->source}, {"format", m->format}, {"arch", c.arch_name}, {"dim", c.dim},
                  {"hidden_dim", c.hidden_dim}, {"n_layers", c.n_layers}, {"n_heads", c.n_heads},
                  {"n_kv_heads", c.n_kv_heads}, {"head_dim", c.head_dim}, {"vocab_size", c.vocab_size},
                  {"max_seq_len", c.max_seq_len}, {"rope_theta", c.rope_theta}, {"norm_eps", c.norm_eps},
                  {"tied_embeddings", c.tied_embeddings}, {"qkv_bias", c.qkv_bias}, {"parameters", params},
                  {"tokenizer", m->tokenizer->kind()}, {"bos_id", m->tokenizer->bos_id()},
                  {"eos_id", m->tokenizer->eos_id()}, {"fingerprint", m->fingerprint()},
                  {"device", m->device().str()}, {"dtype", dtype_name(m->dtype())}, {"warnings", m->warnings},
                  {"threads", at::get_num_threads()}, {"openmp_wait_policy", openmp_wait_policy()},
                  {"source_types", m->source_types}, {"libtorch", libtorch_version()}, {"cuda_compiled", cuda_compiled()},
                  {"cuda_version", cuda_version()}, {"cuda_devices", json::array()}};
        for (const CudaDeviceInfo& d : cuda_devices())
            j["cuda_devices"].push_back({{"index", d.index}, {"name", d.name},
                                         {"compute_capability", std::to_string(d.major) + "." + std::to_string(d.minor)},
                                         {"memory_bytes", d.total_bytes}});
        print_json(j, 2);
        return 0;
    }
    std::printf("model:       %s (%s)\n", m->source.c_str(), m->format.c_str());
    std::printf("arch:        %s\n", c.describe().c_str());
    std::printf("parameters:  %lld (%.2f MB in %s)\n", (long long)params,
                params * double(at::elementSize(m->dtype())) / 1e6, dtype_name(m->dtype()).c_str());
    if (!m->source_types.empty()) std::printf("tensors:     %s (in the file; float on load)\n", m->source_types.c_str());
    std::printf("tokenizer:   %s, %d tokens, bos %d, eos %d\n", m->tokenizer->kind().c_str(),
                m->tokenizer->vocab_size(), m->tokenizer->bos_id(), m->tokenizer->eos_id());
    std::printf("device:      %s\n", m->device().str().c_str());
    std::printf("threads:     %d (OpenMP wait policy %s)\n", at::get_num_threads(),
                *openmp_wait_policy() ? openmp_wait_policy() : "default");
    std::printf("fingerprint: %s\n", m->fingerprint().c_str());
    std::printf("libtorch:    %s, CUDA %s\n", libtorch_version().c_str(),
                cuda_compiled() ? ("compiled in (runtime " + cuda_version() + ")").c_str() : "not compiled in");
    const auto gpus = cuda_devices();
    if (cuda_compiled() && gpus.empty()) std::printf("GPUs:        none visible\n");
    for (const CudaDeviceInfo& d : gpus)
        std::printf("GPU %d:       %s (compute %d.%d, %s)\n", d.index, d.name.c_str(), d.major, d.minor,
                    format_bytes(d.total_bytes).c_str());
    return 0;
}

int cmd_generate(int argc, char** argv) {
    Args a = parse_command(argc, argv, {}, {"prompt", "max-tokens", "temperature", "seed", "top-p", "cushion", "kernels"});
    if (print_help_if_asked(a, kGenerateHelp)) return 0;
    const std::string prompt = a.require("prompt");
    GenerateOptions o;
    o.max_new_tokens = a.get_int("max-tokens", 128, 1, 1 << 20);
    o.temperature = a.get_double("temperature", 0.0, 0.0, 100.0);
    o.seed = static_cast<uint64_t>(a.get_int("seed", 42, 0, (1LL << 62)));
    o.top_p = a.get_double("top-p", 1.0, 1e-6, 1.0);
    const RunTarget target = run_target_from_args(a);  // a package (quantizer, kernels, cushion) or a model
    target.apply(&o);
    const auto& m = target.model;
    const auto ids = m->tokenizer->encode(prompt, true);
    const bool js = a.has("json");
    int32_t prev = ids.back();
    if (!js) {
        std::printf("%s", m->tokenizer->decode(ids).c_str());
        std::fflush(stdout);
    }
    o.on_token = [&](int32_t t) {
        if (!js) {
            std::printf("%s", m->tokenizer->decode_token(prev, t).c_str());
            std::fflush(stdout);
        }
        prev = t;
        return !interrupted();
    };
    auto out = generate(*m, ids, o);
    if (js) {
        std::vector<int32_t> all = ids;
        all.insert(all.end(), out.begin(), out.end());
        json j = {{"prompt_tokens", ids}, {"tokens", out}, {"text", m->tokenizer->decode(all)}};
        print_json(j);  // text cut mid-character (a byte-level token at --max-tokens) gets U+FFFD
    } else {
        std::printf("\n");
    }
    return interrupted() ? 130 : 0;
}

int cmd_ppl(int argc, char** argv) {
    Args a = parse_command(argc, argv, {}, {"text", "batch-tokens", "cushion", "kernels"});
    if (print_help_if_asked(a, kPplHelp)) return 0;
    const auto docs = read_documents(a.require("text"));
    PerplexityOptions o;
    o.max_batch_tokens = a.get_int("batch-tokens", 8192, 1, 1 << 24);
    const RunTarget target = run_target_from_args(a);  // a package (quantizer, kernels, cushion) or a model
    target.apply(&o);
    const auto& m = target.model;
    const auto& cush = target.cushion;
    const auto toks = tokenize_documents(*m, docs, max_document_tokens(*m, cush ? cush->length() : 0));
    ProgressBar bar("perplexity", a.has("quiet"));
    o.progress = bar.fn();
    auto r = perplexity(*m, toks, o);
    bar.finish();
    if (a.has("json")) {
        print_json(json{{"ppl", r.ppl}, {"tokens", r.tokens}, {"docs", r.docs}});
    } else {
        std::printf("perplexity %.4f over %lld predicted tokens in %lld documents (mean NLL %.6f)\n", r.ppl,
                    (long long)r.tokens, (long long)r.docs, r.mean_nll);
    }
    return 0;
}

namespace {

std::string printable(std::string s) {
    for (auto& ch : s)
        if (ch == '\n') ch = ' ';
    return s;
}

void write_heatmap(const std::string& path, const at::Tensor& map /*(L, T)*/) {
    const int64_t L = map.size(0), T = map.size(1);
    const int cw = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(16, 1600 / std::max<int64_t>(T, 1))));
    const int ch = 24;
    const int w = static_cast<int>(T * cw), h = static_cast<int>(L * ch);
    // The studio's colours and log scale (analysis/colormap.h), from the map's smallest to its largest value.
    const at::Tensor m = map.to(at::kFloat).clamp_min(1e-6).contiguous();
    const LogScale scale{m.min().item<double>(), m.max().item<double>()};
    std::vector<uint8_t> rgb(size_t(w) * h * 3);
    auto acc = m.accessor<float, 2>();
    for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x) {
            const uint32_t c = inferno(scale(acc[y / ch][x / cw]));
            uint8_t* px = &rgb[(size_t(y) * w + x) * 3];
            px[0] = red(c);
            px[1] = green(c);
            px[2] = blue(c);
        }
    write_png(path, w, h, rgb);
}

}  // namespace

int cmd_probe(int argc, char** argv) {
    Args a = parse_command(argc, argv, {}, {"text", "prompt", "png", "site", "top", "cushion"});
    if (print_help_if_asked(a, kProbeHelp)) return 0;
    if (a.has("text") == a.has("prompt")) throw Error("probe needs exactly one of --text FILE or --prompt TEXT");
    const std::string site_s = a.get("site", "down_in");
    Site site = Site::DownIn;
    const bool all_sites = site_s == "all";
    if (!all_sites && !parse_site(site_s.c_str(), &site))
        throw Error("unknown --site '" + site_s + "': use attn_in, o_in, mlp_in, down_in, residual or all");
    if (all_sites && a.has("png")) throw Error("--png needs one --site, not 'all'");
    const int top = static_cast<int>(a.get_int("top", 3, 0, 1000));
    std::vector<std::string> docs = a.has("text") ? read_documents(a.get("text")) : std::vector<std::string>{a.get("prompt")};
    auto m = load_model_from_args(a);
    auto cush = cushion_from_args(a, *m);
    auto toks = tokenize_documents(*m, docs, max_document_tokens(*m, cush ? cush->length() : 0));
    if (cush)
        for (auto& d : toks) d.erase(d.begin());  // the cushion provides <bos>
    for (auto& d : toks)
        if (d.empty()) throw Error("nothing to probe: the text has no tokens after the cushion");
    at::Tensor tokens, valid;
    pad_batch(toks, &tokens, &valid);
    ProbeOptions po;
    po.top_k = std::max(top, 1);
    ActivationProbe probe(static_cast<int>(m->config.n_layers), po);
    ForwardArgs fa;
    fa.hook = &probe;
    fa.valid = valid;
    fa.skip_logits = true;
    fa.prefix = cush ? &cush->kv : nullptr;
    m->forward(tokens, fa);
    auto res = probe.take();
    if (!res->all_finite()) {
        fa.hook = nullptr;
        throw non_finite_error(*m, "probe", tokens, fa, [&](int64_t row) {
            return a.has("prompt") ? std::string("the prompt") : "document " + std::to_string(row + 1);
        });
    }
    const auto& tk = *m->tokenizer;
    auto token_text = [&](int64_t b, int64_t t) { return printable(tk.piece(toks[b][t])); };

    std::vector<Site> sites;
    if (all_sites)
        for (int s = 0; s < kSiteCount; ++s) sites.push_back(static_cast<Site>(s));
    else
        sites.push_back(site);
    json j = {{"docs", docs.size()}, {"tokens", valid.sum().item<int64_t>()}, {"layers", json::array()}};
    if (!a.has("json"))
        std::printf("%-5s %-9s %12s %8s %8s  %-14s %s\n", "block", "site", "max|x|", "ratio", "channel", "token (pos)",
                    "top outliers (pos:channel=value)");
    for (int l = 0; l < m->config.n_layers; ++l) {
        json jl = {{"layer", l}, {"sites", json::object()}};
        for (Site s : sites) {
            const SiteSummary& S = res->at(l, s);
            at::Tensor ratio = S.ratio();
            const float max_ratio = ratio.max().item<float>();
            json jt = json::array();
            std::string tops;
            for (size_t i = 0; i < S.top.size() && (int)i < top; ++i) {
                const auto& o = S.top[i];
                jt.push_back({{"doc", o.batch}, {"pos", o.token}, {"channel", o.channel}, {"value", o.value},
                              {"token", token_text(o.batch, o.token)}});
                char buf[96];
                std::snprintf(buf, sizeof buf, "%s%lld:%lld=%.3g", i ? ", " : "", (long long)o.token,
                              (long long)o.channel, o.value);
                tops += buf;
            }
            const Outlier best = S.top.empty() ? Outlier{} : S.top[0];
            jl["sites"][site_name(s)] = {{"max_abs", std::fabs(best.value)}, {"max_ratio", max_ratio},
                                         {"top", jt}};
            if (!a.has("json")) {
                std::string where = token_text(best.batch, best.token) + " (" + std::to_string(best.token) + ")";
                std::printf("%-5d %-9s %12.4g %8.1f %8lld  %s %s\n", l, site_name(s), std::fabs(best.value),
                            max_ratio, (long long)best.channel, pad_columns(where, 14).c_str(), tops.c_str());
            }
        }
        j["layers"].push_back(jl);
    }
    if (a.has("png")) {
        write_heatmap(a.get("png"), res->layer_token_map(site, 0).narrow(1, 0, (int64_t)toks[0].size()));
        if (!a.has("json")) std::printf("heatmap (%s, layers x tokens of doc 0) written to %s\n", site_name(site), a.get("png").c_str());
        j["png"] = a.get("png");
    }
    if (a.has("json")) print_json(j, 2);
    return 0;
}

}  // namespace cushion::cli
