#include "package/compressed_tensors_export.h"

#include <ATen/ATen.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>

#include "base/atomic_file.h"
#include "base/error.h"
#include "base/json_file.h"
#include "formats/safetensors.h"
#include "package/quantized_package.h"
#include "quant/int4_pack.h"
#include "tokenizer/tokenizer.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

namespace cushion {

at::Tensor pack_int32_fields(const at::Tensor& codes_in, int bits) {
    if (bits != 4 && bits != 8) throw Error("pack_int32_fields: bits must be 4 or 8, not " + std::to_string(bits));
    if (codes_in.dim() != 2) throw Error("pack_int32_fields: codes must be (rows, n)");
    const int64_t h = int64_t(1) << (bits - 1);
    at::Tensor c = codes_in.to(at::kCPU, at::kLong);
    if (c.numel() && (c.min().item<int64_t>() < -h || c.max().item<int64_t>() > h - 1))
        throw Error("pack_int32_fields: a code lies outside [" + std::to_string(-h) + ", " + std::to_string(h - 1) + "]");
    const int64_t rows = c.size(0), n = c.size(1), per = 32 / bits;
    const int64_t words = (n * bits + 31) / 32;
    // unsigned fields (code + 2^(b-1)), zero-padded to whole words (pack_to_int32 pads after the offset)
    at::Tensor u = at::zeros({rows, words * per}, at::kLong);
    u.narrow(1, 0, n).copy_(c + h);
    u = u.view({rows, words, per});
    at::Tensor shifts = at::arange(per, at::kLong).mul_(bits);
    at::Tensor w = at::bitwise_left_shift(u, shifts).sum(-1);  // < 2^32: fields do not overlap
    // reinterpret the low 32 bits as a signed int32 (two's complement), as torch's int32 words hold them
    w = at::where(w >= (int64_t(1) << 31), w - (int64_t(1) << 32), w);
    return w.to(at::kInt).contiguous();
}

namespace {

struct Linear {
    std::string module;  // e.g. model.layers.0.self_attn.q_proj
    int layer = 0;
    Site site = Site::AttnIn;
    std::string kind;    // the name after the layer number, e.g. self_attn.q_proj
    int64_t group = 0;   // columns per scale
    int64_t in = 0, out = 0;
};

// The activation site whose input a block linear reads (Llama / Mistral / Qwen2 and OPT names).
Site site_of(const std::string& leaf, const std::string& name) {
    static const std::map<std::string, Site> m{
        {"q_proj", Site::AttnIn}, {"k_proj", Site::AttnIn}, {"v_proj", Site::AttnIn},
        {"o_proj", Site::OIn},    {"out_proj", Site::OIn},  {"gate_proj", Site::MlpIn},
        {"up_proj", Site::MlpIn}, {"fc1", Site::MlpIn},     {"down_proj", Site::DownIn}, {"fc2", Site::DownIn}};
    auto it = m.find(leaf);
    if (it == m.end()) throw Error("compressed-tensors export: quantized weight " + name + " is not a known block linear");
    return it->second;
}

std::string regex_escape(const std::string& s) {
    std::string r;
    for (char ch : s) {
        if (std::string(".^$|()[]{}*+?\\").find(ch) != std::string::npos) r += '\\';
        r += ch;
    }
    return r;
}

std::string fmt_double(double v) {
    char b[64];
    std::snprintf(b, sizeof b, "%.4f", v);
    return b;
}

std::string cushion_md(const ojson& info, const std::vector<int32_t>& ids, const std::string& prefix_text,
                       const std::string& scheme, const std::string& format, int64_t n_layers) {
    std::ostringstream o;
    std::string id_list;
    for (size_t i = 0; i < ids.size(); ++i) id_list += (i ? ", " : "") + std::to_string(ids[i]);
    o << "# The cushion of this checkpoint\n\n"
      << "This directory is a `compressed-tensors` checkpoint (" << format << ": " << scheme
      << ") written by `cushion export --format compressed-tensors` (CushionCache Studio) from a package whose static\n"
      << "activation ranges were calibrated **with the cushion in place and excluding it**. The quantized model is only\n"
      << "as good as the package when every request starts with the cushion, which comes in two forms:\n\n"
      << "* `cushion_prefix.json`: its " << ids.size() << " token id(s) [" << id_list << "] (`" << prefix_text
      << "`), starting with `<bos>`.\n"
      << "* `cushion_kv.safetensors`: its key/value cache, `k.<layer>` / `v.<layer>` for the " << n_layers
      << " layers, float32 `(1, n_kv_heads, P, head_dim)`,\n"
      << "  keys after RoPE at positions 0..P-1 in the rotate-half layout transformers keeps; `last_logits` (the logits\n"
      << "  at the cushion's last position) and `prefix_ids`.\n\n"
      << "## What a server must do\n\n"
      << "**Token prefix (any server; vLLM, llama.cpp, transformers):** tokenize the text WITHOUT special tokens (no\n"
      << "`<bos>`: the cushion supplies it) and send `prefix_ids + text_ids` as the prompt's token ids (vLLM:\n"
      << "`prompt_token_ids`). Turn prefix caching on (vLLM `enable_prefix_caching=True`) so the cushion's K/V are\n"
      << "computed once and reused by every request. The cushion's tokens then run through the quantized model like any\n"
      << "other tokens: their own activations are quantized with ranges that exclude them, so their K/V differ from the\n"
      << "tuned ones. For a cushion found by the greedy search alone this is the only difference; a *tuned* cushion's\n"
      << "K/V no longer correspond to any tokens, and the token prefix loses the tuning. With static activations the\n"
      << "loss can exceed the cushion's gain: on SmolLM2-135M W8A8 the `<|endoftext|>` cushion as a token gave perplexity\n"
      << "26.9 (its massive activation clipped by ranges that exclude it) against 10.9 with its K/V and 15.3 with no\n"
      << "cushion and ranges that include it (tests/perf/RESULTS.md).\n\n"
      << "**Tuned K/V (stacks that take past key values, e.g. transformers):** load `k.<l>` / `v.<l>` into the cache as\n"
      << "the first P positions, feed the text without `<bos>` at positions P, P+1, ... with an attention mask over\n"
      << "P + T positions; the first text token's logits are `last_logits`. This reproduces the package exactly\n"
      << "(`cushion eval PACKAGE`). The cache is extended in place: use a fresh copy per request.\n\n"
      << "In both cases keep the cushion at the start of the context, and do not add a second `<bos>`. The tokenizer\n"
      << "loads with transformers' `AutoTokenizer.from_pretrained(this directory)` (a SentencePiece `tokenizer.model`\n"
      << "needs the `protobuf` package); where the source model had no `tokenizer_config.json`, the one written here\n"
      << "adds no special tokens, so `tokenizer(text).input_ids` are the text ids to append to `prefix_ids`.\n\n";
    if (info.contains("perplexity") && info["perplexity"].is_object()) {
        const auto& p = info["perplexity"];
        auto num = [&](const char* k) { return p.contains(k) && p[k].is_number() ? fmt_double(p[k].get<double>()) : "-"; };
        o << "## Perplexity recorded at export (`cushion export`, engine, README protocol)\n\n"
          << "On `" << (p.contains("text_file") && p["text_file"].is_string() ? p["text_file"].get<std::string>() : "")
          << "` (" << (p.contains("tokens") ? p["tokens"].dump() : "?") << " predicted tokens):\n\n"
          << "| | no cushion | with the cushion (tuned K/V) |\n|---|---|---|\n"
          << "| full precision | " << num("fp") << " | " << num("fp_cushion") << " |\n"
          << "| quantized | " << num("quantized") << " | " << num("quantized_cushion") << " |\n\n"
          << "What the token prefix alone gives is measured by `ctest -R reference_compressed_tensors` (tokens only vs\n"
          << "tuned K/V, with transformers + compressed-tensors) and reported in `tests/perf/RESULTS.md`.\n\n";
    }
    o << "## Numbers\n\n"
      << "Weights: symmetric integer codes (restricted range: -2^(b-1) unused), w = weight_scale x code, bit for bit the\n"
      << "package's. Activations (W8A8): static, one scale and zero point per linear input (q/k/v share theirs, as do\n"
      << "gate/up), asymmetric: a = input_scale x (q - input_zero_point), q in [-128, 127]. Embeddings, norms and the\n"
      << "LM head are float32. `quantization.json` is the package's record (settings, calibration text sha256).\n";
    return o.str();
}

}  // namespace

CompressedTensorsReport write_compressed_tensors(const std::string& package_dir, const std::string& out_dir,
                                                 const CompressedTensorsOptions& opts) {
    report_progress(opts.progress, 0.0, "checking the package");
    LoadPackageOptions lo;
    lo.progress = nullptr;
    auto pkg = load_package(package_dir, lo);
    const QuantConfig& cfg = pkg->config;
    const std::string where = "compressed-tensors export of " + package_dir + ": ";
    if (!cfg.weights_on())
        throw Error(where + "the package's weights are full precision (wbits 0); compressed-tensors needs quantized weights");
    if (cfg.wbits != 8 && cfg.wbits != 4) throw Error(where + "wbits " + std::to_string(cfg.wbits) + " (4 or 8 only)");
    if (cfg.kv_on())
        throw Error(where + "KV-cache quantization (--kv-bits) is dynamic per token and head in the engine; "
                    "compressed-tensors' kv_cache_scheme is static: export the package with --kv-bits 0");
    if (cfg.acts_on()) {
        if (cfg.act != ActGranularity::PerTensorStatic)
            throw Error(where + "activations are " + granularity_name(cfg.act) + "; compressed-tensors' dynamic quantizers "
                        "are symmetric or widen the range to include 0, so only per-tensor-static (or --abits 0) "
                        "converts exactly");
        if (cfg.abits != 8)
            throw Error(where + "abits " + std::to_string(cfg.abits) + ": only 8-bit activations (W8A8) are exported");
        if (cfg.wbits != 8)
            throw Error(where + "4-bit weights with quantized activations: export W8A8, or W4A16 (--abits 0)");
        for (int s = 0; s < kSiteCount; ++s)
            if (static_cast<Site>(s) != Site::Residual && !cfg.site_on(static_cast<Site>(s)))
                throw Error(where + "activation site " + site_name(static_cast<Site>(s)) + " is not quantized; "
                            "the export needs every block linear's input quantized (--sites all)");
    }
    const bool w8a8 = cfg.acts_on();
    const int bits = cfg.wbits;
    const std::string format = w8a8 ? "int-quantized" : "pack-quantized";

    const ojson info = read_ordered_json_file((fs::path(package_dir) / "quantization.json").string());
    const SafetensorsFile st((fs::path(package_dir) / "model.safetensors").string());
    const auto& qw = info["quantization"]["quantized_weights"];
    if (!qw.is_array() || qw.empty()) throw Error(where + "quantization.json lists no quantized_weights");

    // ---- the block linears and their layouts
    std::vector<Linear> linears;
    std::set<std::string> consumed;
    static const std::regex layer_re(R"(^(.*\.layers\.)(\d+)\.(.+)\.weight$)");
    for (const auto& e : qw) {
        if (!e.is_object() || !e.contains("name") || !e["name"].is_string())
            throw Error(where + "quantization.json: quantized_weights entries need a \"name\"");
        const std::string name = e["name"].get<std::string>();
        std::smatch m;
        if (!std::regex_match(name, m, layer_re)) throw Error(where + "quantized weight " + name + " is not in a block");
        Linear L;
        L.module = name.substr(0, name.size() - 7);
        L.layer = std::stoi(m[2].str());
        L.kind = m[3].str();
        const std::string leaf = L.kind.substr(L.kind.rfind('.') + 1);
        L.site = site_of(leaf, name);
        const auto sshape = st.shape(name + "_scale");
        if (sshape.size() != 2) throw Error(where + name + "_scale is not (out, groups)");
        L.out = sshape[0];
        const int64_t groups = sshape[1];
        if (bits == 8) {
            const auto ws = st.shape(name);
            if (ws.size() != 2 || ws[0] != L.out) throw Error(where + name + " does not match its scale");
            L.in = ws[1];
        } else {
            if (!e.contains("group_size") || !e["group_size"].is_number_integer())
                throw Error(where + "quantization.json: " + name + " has no group_size");
            L.in = e["group_size"].get<int64_t>() * groups;
        }
        if (groups <= 0 || L.in % groups) throw Error(where + name + "_scale: " + std::to_string(groups) +
                                                      " groups do not divide " + std::to_string(L.in) + " columns");
        L.group = L.in / groups;
        linears.push_back(L);
    }

    // ---- tensors
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    int64_t done = 0;
    for (const Linear& L : linears) {
        report_progress(opts.progress, 0.05 + 0.75 * double(done++) / double(linears.size()), "converting " + L.module);
        const std::string w = L.module + ".weight";
        at::Tensor codes = bits == 8 ? st.get(w) : unpack_int4(st.get(w + "_packed"), L.in);
        consumed.insert(bits == 8 ? w : w + "_packed");
        if (codes.scalar_type() != at::kChar || codes.size(0) != L.out || codes.size(1) != L.in)
            throw Error(where + w + ": codes are not int8 (" + std::to_string(L.out) + ", " + std::to_string(L.in) + ")");
        at::Tensor scale = st.get(w + "_scale").to(at::kFloat).contiguous();
        consumed.insert(w + "_scale");
        if (w8a8) {
            tensors.emplace_back(w, codes.contiguous());
            const std::string pre = "model.layers." + std::to_string(L.layer) + ".act." + site_name(L.site) + ".";
            if (!st.contains(pre + "input_scale") || !st.contains(pre + "input_zero_point"))
                throw Error(where + "no static range " + pre + "input_scale / input_zero_point for " + L.module);
            at::Tensor s = st.get(pre + "input_scale").to(at::kFloat).reshape({1}).contiguous();
            const int64_t z = st.get(pre + "input_zero_point").to(at::kLong).item<int64_t>();
            const int64_t zp = z - 128;
            if (zp < -128 || zp > 127)
                throw Error(where + pre + "input_zero_point is " + std::to_string(z) + ": the static range of " +
                            site_name(L.site) + " in layer " + std::to_string(L.layer) + " excludes 0, and the zero "
                            "point does not fit compressed-tensors' int8 (" + std::to_string(zp) + " after the shift)");
            tensors.emplace_back(L.module + ".input_scale", s);
            tensors.emplace_back(L.module + ".input_zero_point", at::full({1}, zp, at::kChar));
        } else {
            tensors.emplace_back(L.module + ".weight_packed", pack_int32_fields(codes, bits));
            tensors.emplace_back(L.module + ".weight_shape", at::tensor(std::vector<int64_t>{L.out, L.in}, at::kLong));
        }
        tensors.emplace_back(L.module + ".weight_scale", scale);
    }
    for (const auto& n : st.names()) {
        if (consumed.count(n) || n.find(".act.") != std::string::npos || n.find(".smoothquant.") != std::string::npos)
            continue;
        tensors.emplace_back(n, st.get(n).contiguous());
    }

    // ---- quantization_config: one config group per weight layout; targets: a regex per (kind, layout) covering
    // all its layers, else one per module
    std::map<int64_t, std::map<std::string, std::vector<const Linear*>>> layouts;  // group (0 = channel) -> kind -> linears
    std::set<int> layers;
    for (const Linear& L : linears) {
        layouts[L.group == L.in ? 0 : L.group][L.kind].push_back(&L);
        layers.insert(L.layer);
    }
    ojson groups = ojson::object();
    int gi = 0;
    for (const auto& [group, kinds] : layouts) {
        ojson targets = ojson::array();
        for (const auto& [kind, ls] : kinds) {
            const std::string prefix = ls.front()->module.substr(0, ls.front()->module.size() - kind.size() - 1);
            const std::string base = prefix.substr(0, prefix.rfind('.') + 1);  // "model.layers."
            if (ls.size() == layers.size()) {
                targets.push_back("re:^" + regex_escape(base) + "\\d+\\." + regex_escape(kind) + "$");
            } else {
                for (const Linear* L : ls) targets.push_back("re:^" + regex_escape(L->module) + "$");
            }
        }
        ojson wargs = {{"num_bits", bits}, {"type", "int"}, {"symmetric", true},
                       {"strategy", group ? "group" : "channel"}, {"group_size", group ? ojson(group) : ojson(nullptr)},
                       {"dynamic", false}, {"actorder", nullptr}, {"observer", "minmax"}};
        ojson g = {{"targets", targets}, {"weights", wargs}};
        if (w8a8)
            g["input_activations"] = {{"num_bits", 8}, {"type", "int"}, {"symmetric", false}, {"strategy", "tensor"},
                                      {"group_size", nullptr}, {"dynamic", false}, {"observer", "minmax"}};
        else
            g["input_activations"] = nullptr;
        g["output_activations"] = nullptr;
        g["format"] = format;
        groups["group_" + std::to_string(gi++)] = g;
    }
    ojson qc = {{"quant_method", "compressed-tensors"}, {"format", format}, {"quantization_status", "compressed"},
                {"config_groups", groups}, {"ignore", ojson::array({"lm_head"})}, {"kv_cache_scheme", nullptr},
                {"global_compression_ratio", nullptr}};
    ojson config = read_ordered_json_file((fs::path(package_dir) / "config.json").string());
    config["quantization_config"] = qc;

    CompressedTensorsReport rep;
    rep.dir = out_dir;
    rep.format = format;
    rep.linears = static_cast<int64_t>(linears.size());
    rep.prefix_ids = pkg->cushion.prefix_ids;
    bool all_channel = layouts.size() == 1 && layouts.begin()->first == 0;
    std::string wl = all_channel ? "per-channel" : "group " + std::to_string(cfg.group) + " (per-channel where it does not divide)";
    rep.scheme = w8a8 ? "W8A8: int8 weights " + wl + ", static per-tensor asymmetric int8 activations"
                      : "W" + std::to_string(bits) + "A16: int" + std::to_string(bits) + " weights " + wl + ", activations full precision";

    ojson prefix = {{"prefix_ids", pkg->cushion.prefix_ids},
                    {"prefix_text", pkg->cushion.prefix_text},
                    {"bos_id", pkg->cushion.prefix_ids.empty() ? -1 : pkg->cushion.prefix_ids.front()},
                    {"length", pkg->cushion.prefix_ids.size()},
                    {"usage", "prepend these ids to every request's token ids (the text tokenized without special "
                              "tokens); see CUSHION.md"},
                    {"kv_file", "cushion_kv.safetensors"}};
    const std::string md = cushion_md(info, pkg->cushion.prefix_ids, pkg->cushion.prefix_text, rep.scheme, format,
                                      pkg->model->config.n_layers);

    // tokenizer_config.json for transformers' AutoTokenizer, when the package has none (a package keeps one only when
    // its source model had it): the class for the tokenizer file and the package tokenizer's <bos> / <eos>. It adds no
    // special tokens: every request starts with the cushion, whose first token is <bos> (CUSHION.md).
    ojson tok_config;
    if (!fs::exists(fs::path(package_dir) / "tokenizer_config.json")) {
        const Tokenizer& tk = *pkg->model->tokenizer;
        const bool spm = fs::exists(fs::path(package_dir) / "tokenizer.model");
        tok_config["tokenizer_class"] = spm ? "LlamaTokenizer" : "PreTrainedTokenizerFast";
        if (tk.bos_id() >= 0) tok_config["bos_token"] = tk.piece(tk.bos_id());
        if (tk.eos_id() >= 0) tok_config["eos_token"] = tk.piece(tk.eos_id());
        tok_config["add_bos_token"] = false;
        tok_config["add_eos_token"] = false;
        tok_config["model_max_length"] = pkg->model->config.max_seq_len;
        tok_config["clean_up_tokenization_spaces"] = false;
    }

    std::vector<std::string> copies{"cushion.safetensors", "quantization.json", "tokenizer.model", "tokenizer.json",
                                    "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"};
    write_directory_atomically(out_dir, opts.overwrite, [&](const fs::path& tmp) {
        report_progress(opts.progress, 0.85, "writing model.safetensors");
        save_safetensors((tmp / "model.safetensors").string(), tensors, {{"format", "pt"}});
        write_text_atomically((tmp / "config.json").string(), config.dump(2) + "\n");
        write_text_atomically((tmp / "cushion_prefix.json").string(), prefix.dump(2) + "\n");
        write_text_atomically((tmp / "CUSHION.md").string(), md);
        if (!tok_config.empty()) write_text_atomically((tmp / "tokenizer_config.json").string(), tok_config.dump(2) + "\n");
        for (const auto& name : copies) {
            const fs::path from = fs::path(package_dir) / name;
            if (!fs::exists(from)) continue;
            const std::string to = name == "cushion.safetensors" ? "cushion_kv.safetensors" : name;
            write_atomically((tmp / to).string(), [&](const std::string& t) {
                std::error_code ec;
                fs::copy_file(from, t, fs::copy_options::overwrite_existing, ec);
                if (ec) throw Error("cannot copy " + from.string() + ": " + ec.message());
                fs::permissions(t, fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::add, ec);
            });
            report_progress(opts.progress, 0.95, "wrote " + to);
        }
        std::error_code ec;
        for (const auto& e : fs::directory_iterator(tmp, ec))
            if (e.is_regular_file()) rep.bytes += e.file_size();
    });
    if (opts.progress) opts.progress(1.0, "exported");
    return rep;
}

}  // namespace cushion
