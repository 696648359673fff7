#include "package/quantized_package.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "model/activation_probe.h"
#include "tokenizer/tokenizer_files.h"
#include "base/atomic_file.h"
#include "base/error.h"
#include "base/json_file.h"
#include "quant/int4_pack.h"
#include "formats/model_loader.h"
#include "quant/quantizer.h"
#include "formats/safetensors.h"
#include "base/sha256.h"
#include "quant/smoothquant.h"
#include "tokenizer/tokenizer.h"

namespace cushion {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace {

constexpr const char* kModelFile = "model.safetensors";
constexpr const char* kCushionFile = "cushion.safetensors";
constexpr const char* kConfigFile = "config.json";
constexpr const char* kInfoFile = "quantization.json";
constexpr const char* kModelFormat = "cushioncache-quantized-model";

std::string strip_slashes(std::string d) {
    while (d.size() > 1 && d.back() == '/') d.pop_back();
    return d;
}

// The block linears that get quantized, by address inside `w`.
std::set<const at::Tensor*> linear_slots(const ModelWeights& w) {
    std::set<const at::Tensor*> s;
    for (const auto& L : w.layers)
        for (const at::Tensor* t : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) s.insert(t);
    return s;
}

std::string act_prefix(int layer, Site s) {
    return "model.layers." + std::to_string(layer) + ".act." + site_name(s) + ".";
}

json config_to_json(const QuantConfig& c) {
    json j;
    j["describe"] = c.describe();
    j["wbits"] = c.wbits;
    j["weight_scheme"] = "symmetric, restricted range [-(2^(b-1)-1), 2^(b-1)-1], w = scale * code";
    j["weight_granularity"] = c.group > 0 ? "group" : "per-channel";
    j["group"] = c.group;
    j["abits"] = c.abits;
    j["act_scheme"] = "asymmetric min-max, a = scale * (code - zero), code in [0, 2^b-1]";
    j["act_granularity"] = granularity_name(c.act);
    j["smoothquant_alpha"] = c.smoothquant_on() ? json(c.smoothquant_alpha) : json(nullptr);
    j["kv_bits"] = c.kv_bits;
    j["kv_granularity"] = "per-token per-head (dynamic), new tokens only; the cushion KV stays full precision";
    j["sites"] = sites_string(c.sites);
    return j;
}

QuantConfig config_from_json(const json& j, const std::string& file) {
    // Each field named when it is missing or of the wrong type ("field 'quantization.wbits' must be a whole number,
    // it is 8.5"), and when its value is not one the tool writes.
    const nlohmann::json plain = j;  // JsonFields reads nlohmann::json
    const JsonFields q(plain, file, "quantization");
    QuantConfig c;
    c.wbits = static_cast<int>(q.integer("wbits", 0, 64));
    c.group = q.integer("group", INT64_MIN, INT64_MAX);
    c.abits = static_cast<int>(q.integer("abits", 0, 64));
    const std::string act = q.string("act_granularity");
    try {
        c.act = parse_granularity(act);
    } catch (const Error& e) {
        q.fail("act_granularity", "is '" + act + "': " + e.what());
    }
    c.smoothquant_alpha = q.has("smoothquant_alpha") ? q.number("smoothquant_alpha") : -1.0;
    c.kv_bits = static_cast<int>(q.integer("kv_bits", 0, 64));
    const std::string sites = q.string("sites");
    try {
        c.sites = parse_sites(sites);
    } catch (const Error& e) {
        q.fail("sites", "is '" + sites + "': " + e.what());
    }
    try {
        c.validate();
    } catch (const Error& e) {
        throw Error(file + ": section 'quantization': " + e.what());
    }
    return c;
}

json read_json(const std::string& path) { return read_ordered_json_file(path); }

void fsync_path(const std::string& p) {
    FILE* f = std::fopen(p.c_str(), "rb");
    if (!f) return;
    ::fsync(fileno(f));
    std::fclose(f);
}

// Stage-weighted progress: stage i of n maps [0,1] onto [i/n, (i+1)/n].
struct Stages {
    const ProgressFn& fn;
    int n;
    int i = 0;
    ProgressFn sub() const {
        if (!fn) return nullptr;
        const int k = i, total = n;
        const ProgressFn& f = fn;
        return [&f, k, total](double x, const std::string& what) { return f((k + x) / total, what); };
    }
    void step(const std::string& what) {
        report_progress(fn, double(i) / n, what);
    }
    void done() { ++i; }
};

// sha256 of quantization.json's canonical text (dump(2), sorted keys) without its self_sha256 field.
std::string info_self_sha256(json info) {
    info.erase("self_sha256");
    return sha256_hex(info.dump(2) + "\n");
}

std::string text_sha(const std::string& path) { return path.empty() ? std::string() : sha256_file(path); }

}  // namespace

// ------------------------------------------------------------------------------------------ export

ExportReport write_package(const Model& fp, const Cushion& cush_in, const std::string& dir_in, const ExportOptions& opts) {
    const std::string dir = strip_slashes(dir_in);
    if (dir.empty()) throw Error("export: empty output directory name");
    const QuantConfig& cfg = opts.config;
    cfg.validate();
    if (!cfg.weights_on() && !cfg.acts_on())
        throw Error("export: nothing to quantize (wbits and abits are both 0)");
    if (fp.dtype() != at::kFloat)
        throw Error("export needs the model in fp32 (scales and dequantized weights are float32); got " +
                    dtype_name(fp.dtype()));
    if (cush_in.empty()) throw Error("export: the cushion is empty");
    check_cushion_fits(cush_in, fp, "the cushion");
    if (cfg.needs_activation_ranges() && opts.calib_docs.empty())
        throw Error("export (" + cfg.describe() + ") needs documents (--calib) for its activation ranges");
    {
        std::error_code ec;
        if (fs::exists(dir, ec) && !opts.overwrite)
            throw Error(dir + ": exists; pass --force to replace it");
    }
    // Tokenizer files, so the package is self-contained.
    std::vector<std::pair<std::string, std::string>> tok_files;
    if (!opts.tokenizer_path.empty()) {
        const std::string& t = opts.tokenizer_path;
        const bool js = t.size() >= 5 && t.compare(t.size() - 5, 5, ".json") == 0;
        const bool model_file = t.size() >= 6 && t.compare(t.size() - 6, 6, ".model") == 0;
        if (!js && !model_file)
            throw Error("export: tokenizer " + t + " must be a tokenizer.model (SentencePiece) or tokenizer.json");
        tok_files.emplace_back(t, js ? "tokenizer.json" : "tokenizer.model");
    } else {
        tok_files = hf_tokenizer_files(fp);
    }
    if (tok_files.empty())
        throw Error("export: no tokenizer file (tokenizer.model / tokenizer.json) found beside " + fp.source +
                    "; pass one with --tokenizer so the package is self-contained");

    at::NoGradGuard ng;
    const bool measure = !opts.eval_docs.empty();
    Stages st{opts.progress, measure ? 6 : 2};
    ExportReport rep;
    rep.dir = dir;
    const Cushion cush = cushion_to(cush_in, fp.device(), fp.dtype());

    PerplexityOptions po;
    po.max_batch_tokens = opts.max_batch_tokens;
    PerplexityOptions poc = po;
    poc.prefix = &cush.kv;
    poc.prefix_last_logits = cush.last_logits;
    QuantizeOptions qo;
    qo.max_batch_tokens = opts.max_batch_tokens;

    if (measure) {
        po.progress = st.sub();
        st.step("perplexity, full precision");
        rep.ppl_fp = perplexity(fp, opts.eval_docs, po).ppl;
        st.done();
        poc.progress = st.sub();
        st.step("perplexity, full precision with the cushion");
        auto r = perplexity(fp, opts.eval_docs, poc);
        rep.ppl_fp_cushion = r.ppl;
        rep.eval_tokens = r.tokens;
        st.done();
        qo.progress = st.sub();
        st.step("quantizing without the cushion");
        {
            QuantizedModel q0(fp, cfg, opts.calib_docs, qo);
            po.progress = nullptr;
            rep.ppl_quant = q0.perplexity(opts.eval_docs, po).ppl;
        }
        st.done();
    }
    qo.prefix = &cush.kv;
    qo.progress = st.sub();
    st.step("quantizing with the cushion in place");
    QuantizedModel qm(fp, cfg, opts.calib_docs, qo);
    rep.notes = qm.notes();
    st.done();
    if (measure) {
        poc.progress = st.sub();
        st.step("perplexity, quantized with the cushion");
        rep.ppl_quant_cushion = qm.perplexity(opts.eval_docs, poc).ppl;
        st.done();
    }

    // ---- tensors ----
    st.step("encoding integer weights");
    std::map<std::string, at::Tensor> simulated;  // the simulated model's tensors by name
    qm.model().weights.for_each(qm.model().config, [&](const std::string& n, const at::Tensor& t) { simulated[n] = t; });
    std::shared_ptr<Model> smoothed = qm.smooth() ? smoothquant_model(fp, *qm.smooth()) : std::make_shared<Model>(fp);
    const auto slots = linear_slots(smoothed->weights);
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    json qweights = json::array();
    smoothed->weights.for_each(smoothed->config, [&](const std::string& name, const at::Tensor& t) {
        const at::Tensor sim = simulated.at(name).detach().to(at::kCPU, at::kFloat).contiguous();
        rep.fp32_weight_bytes += uint64_t(t.numel()) * 4;
        if (cfg.weights_on() && slots.count(&t)) {
            QuantizedWeight qw = quantize_weight(t.detach().to(at::kCPU, at::kFloat), cfg.wbits, cfg.group);
            // The codes must reproduce the simulated model exactly, or the package would not be what was measured.
            if (!at::equal(qw.dequantize(), sim))
                throw Error("internal error: the integer codes of " + name + " do not reproduce the simulated weights");
            if (cfg.wbits == 4) tensors.emplace_back(name + "_packed", pack_int4(qw.q));
            else tensors.emplace_back(name, qw.q.contiguous());
            tensors.emplace_back(name + "_scale", qw.scale.contiguous());
            qweights.push_back({{"name", name}, {"group_size", qw.group_size}});
        } else {
            tensors.emplace_back(name, sim);
        }
    });
    const int n_layers = static_cast<int>(fp.config.n_layers);
    json act_sites = json::array();
    if (auto r = qm.ranges()) {
        at::Tensor like = at::zeros({}, at::kFloat);
        for (int l = 0; l < n_layers; ++l)
            for (int si = 0; si < kSiteCount; ++si) {
                const Site s = static_cast<Site>(si);
                if (!cfg.site_on(s)) continue;
                const SiteRange& sr = r->at(l, s);
                ActQuantParams p = act_params(sr.min, sr.max, cfg.abits, like);
                const std::string pre = act_prefix(l, s);
                tensors.emplace_back(pre + "input_scale", p.scale.to(at::kFloat).contiguous());
                tensors.emplace_back(pre + "input_zero_point", p.zero.to(at::kInt).contiguous());
                tensors.emplace_back(pre + "input_min", at::scalar_tensor(sr.min, at::kDouble));
                tensors.emplace_back(pre + "input_max", at::scalar_tensor(sr.max, at::kDouble));
                if (l == 0) act_sites.push_back(site_name(s));
            }
    }
    if (const SmoothFactors* f = qm.smooth())
        for (int l = 0; l < n_layers; ++l) {
            const std::string pre = "model.layers." + std::to_string(l) + ".smoothquant.";
            tensors.emplace_back(pre + "attn_in", f->attn[l].to(at::kCPU, at::kFloat).contiguous());
            tensors.emplace_back(pre + "mlp_in", f->mlp[l].to(at::kCPU, at::kFloat).contiguous());
        }
    for (auto& [n, t] : tensors) rep.package_weight_bytes += uint64_t(t.numel()) * t.element_size();

    // ---- quantization.json (files' hashes added once they are written) ----
    json info;
    info["format"] = kPackageFormat;
    info["format_version"] = kPackageFormatVersion;
    info["tool"] = "cushion (CushionCache Studio)";
    info["tool_version"] = CUSHION_VERSION;
    info["model"] = {{"fingerprint", fp.fingerprint()}, {"source", fp.source}, {"format", fp.format},
                     {"arch", fp.config.describe()}};
    json q = config_to_json(cfg);
    q["quantized_weights"] = qweights;
    q["weight_storage"] = cfg.wbits == 4
        ? "<name>_packed: uint8, two signed 4-bit codes per byte, low nibble = even column; <name>_scale: float32 (out, in/group)"
        : "<name>: int8 codes (out, in); <name>_scale: float32 (out, in/group)";
    q["activation_sites"] = act_sites;
    q["activation_storage"] = act_sites.empty()
        ? "none (dynamic or full-precision activations)"
        : "model.layers.<l>.act.<site>.input_scale (F32), input_zero_point (I32), input_min / input_max (F64)";
    q["full_precision"] = "embeddings, norms (SmoothQuant folded), biases, LM head; the cushion KV";
    q["notes"] = rep.notes;
    info["quantization"] = q;
    int64_t calib_tokens = 0;
    for (auto& d : opts.calib_docs) calib_tokens += (int64_t)d.size();
    info["calibration"] = {{"file", opts.calib_file.empty() ? json(nullptr) : json(fs::path(opts.calib_file).filename().string())},
                           {"sha256", opts.calib_file.empty() ? json(nullptr) : json(text_sha(opts.calib_file))},
                           {"docs", opts.calib_docs.size()}, {"tokens", calib_tokens},
                           {"with_cushion", true},
                           {"range_tokens", qm.ranges() ? qm.ranges()->tokens : 0}};
    info["cushion"] = {{"file", kCushionFile}, {"prefix_ids", cush_in.prefix_ids}, {"prefix_text", cush_in.prefix_text},
                       {"length", cush_in.length()}};
    if (measure) {
        info["perplexity"] = {{"text_file", opts.eval_file.empty() ? json(nullptr) : json(fs::absolute(opts.eval_file).string())},
                              {"text_sha256", opts.eval_file.empty() ? json(nullptr) : json(text_sha(opts.eval_file))},
                              {"docs", opts.eval_docs.size()}, {"tokens", rep.eval_tokens},
                              {"fp", rep.ppl_fp}, {"fp_cushion", rep.ppl_fp_cushion},
                              {"quantized", rep.ppl_quant}, {"quantized_cushion", rep.ppl_quant_cushion}};
    } else {
        info["perplexity"] = nullptr;
    }
    const std::string config_text = hf_config_json(fp);
    const std::map<std::string, std::string> meta{{"format", kModelFormat}, {"version", "1"},
                                                  {"model_fingerprint", fp.fingerprint()},
                                                  {"tool_version", CUSHION_VERSION},
                                                  {"quantization", cfg.describe()}};
    st.done();

    write_directory_atomically(dir, opts.overwrite, [&](const fs::path& tmp) {
        std::vector<std::string> names;
        auto wrote = [&](const std::string& n) {
            names.push_back(n);
            report_progress(opts.progress, 0.97, "wrote " + n);
        };
        report_progress(opts.progress, 0.95, "writing " + std::string(kModelFile));
        save_safetensors((tmp / kModelFile).string(), tensors, meta);
        wrote(kModelFile);
        save_cushion(cush_in, (tmp / kCushionFile).string());
        wrote(kCushionFile);
        write_text_atomically((tmp / kConfigFile).string(), config_text);
        wrote(kConfigFile);
        for (const auto& [from, name] : tok_files) {
            std::error_code ec;
            fs::copy_file(from, tmp / name, fs::copy_options::overwrite_existing, ec);
            if (ec) throw Error(from + ": cannot copy into " + dir + ": " + ec.message());
            fs::permissions(tmp / name, fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::add, ec);
            fsync_path((tmp / name).string());
            wrote(name);
        }
        json files = json::object();
        for (const auto& n : names) files[n] = sha256_file((tmp / n).string());
        info["files"] = files;
        // quantization.json covers itself: the sha256 of its own canonical text without this field.
        info["self_sha256"] = info_self_sha256(info);
        rep.info_json = info.dump(2) + "\n";
        write_text_atomically((tmp / kInfoFile).string(), rep.info_json);
        report_progress(opts.progress, 0.99, "wrote " + std::string(kInfoFile));
        std::error_code ec;
        for (const auto& e : fs::directory_iterator(tmp, ec))
            if (e.is_regular_file()) rep.bytes += e.file_size();
    });
    if (opts.progress) opts.progress(1.0, "exported");  // in place now: too late to cancel
    return rep;
}

// ------------------------------------------------------------------------------------------ load

bool is_package_directory(const std::string& path) {
    std::error_code ec;
    return fs::is_directory(path, ec) && fs::is_regular_file(fs::path(path) / kInfoFile, ec);
}

namespace {

json read_info(const std::string& dir, bool allow_other_tool_version) {
    if (!is_package_directory(dir)) throw Error(dir + ": not an exported package (no " + std::string(kInfoFile) + ")");
    const std::string path = (fs::path(dir) / kInfoFile).string();
    json info = read_json(path);
    // A string field, "" when absent or not a string (json::value would throw the library's type_error).
    auto text_of = [&](const char* k, const std::string& def) {
        return info.is_object() && info.contains(k) && info[k].is_string() ? info[k].get<std::string>() : def;
    };
    if (!info.is_object() || text_of("format", "") != kPackageFormat)
        throw Error(path + ": not a CushionCache package (format is not '" + std::string(kPackageFormat) + "')");
    if (!info.contains("format_version") || !info["format_version"].is_number_integer() ||
        info["format_version"].get<int>() != kPackageFormatVersion)
        throw Error(path + ": package format version " + (info.contains("format_version") ? info["format_version"].dump() : "?") +
                    " is not supported by cushion " + CUSHION_VERSION + " (it reads version " +
                    std::to_string(kPackageFormatVersion) + "); re-export the model with this version");
    const std::string tv = text_of("tool_version", "?");
    if (tv != CUSHION_VERSION && !allow_other_tool_version)
        throw Error(dir + ": package was written by cushion " + tv + ", this is cushion " + CUSHION_VERSION +
                    "; re-export it with this version (numerics may differ between versions)");
    for (const char* k : {"model", "quantization", "files", "cushion"})
        if (!info.contains(k) || !info[k].is_object()) throw Error(path + ": missing section '" + std::string(k) + "'");
    if (!info["model"].contains("fingerprint") || !info["model"]["fingerprint"].is_string())
        throw Error(path + ": missing model fingerprint");
    return info;
}

// "" when quantization.json's self_sha256 matches its content, else what is wrong.
// "float32", "int8", ... (safetensors' names, lower case) and "[16, 24]": for messages about a file's tensors.
std::string dtype_text(const at::Tensor& t) {
    switch (t.scalar_type()) {
        case at::kFloat: return "float32";
        case at::kDouble: return "float64";
        case at::kHalf: return "float16";
        case at::kBFloat16: return "bfloat16";
        case at::kChar: return "int8";
        case at::kByte: return "uint8";
        case at::kShort: return "int16";
        case at::kInt: return "int32";
        case at::kLong: return "int64";
        case at::kBool: return "bool";
        default: return c10::toString(t.scalar_type());
    }
}
std::string shape_text(at::IntArrayRef s) {
    std::string r = "[";
    for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + "]";
}
std::string shape_text(const at::Tensor& t) { return shape_text(t.sizes()); }

std::string check_self_hash(const json& info, const std::string& path) {
    if (!info.contains("self_sha256") || !info["self_sha256"].is_string())
        return path + ": field self_sha256 is missing (quantization.json must cover itself; re-export the package)";
    const std::string want = info["self_sha256"].get<std::string>(), got = info_self_sha256(info);
    if (want != got)
        return path + ": its content does not match its self_sha256 (" + want + ", content " + got +
               "): quantization.json was edited or damaged";
    return "";
}

// (file, ok, expected, got) for every listed file.
struct HashCheck {
    std::string file, expected, got;
    bool ok = false;
};
std::vector<HashCheck> check_hashes(const std::string& dir, const json& info) {
    std::vector<HashCheck> r;
    for (const char* needed : {kModelFile, kCushionFile, kConfigFile})
        if (!info["files"].contains(needed)) r.push_back({needed, "(listed in quantization.json)", "(not listed)", false});
    for (auto it = info["files"].begin(); it != info["files"].end(); ++it) {
        HashCheck h;
        h.file = it.key();
        h.expected = it.value().is_string() ? it.value().get<std::string>() : "";
        if (h.file.empty() || h.file.find('/') != std::string::npos || h.file == "." || h.file == "..") {
            h.got = "(invalid file name)";
        } else {
            const fs::path p = fs::path(dir) / h.file;
            std::error_code ec;
            if (!fs::is_regular_file(p, ec)) h.got = "(missing)";
            else h.got = sha256_file(p.string());
        }
        h.ok = !h.expected.empty() && h.got == h.expected;
        r.push_back(h);
    }
    return r;
}

}  // namespace

std::shared_ptr<QuantizedPackage> load_package(const std::string& dir_in, const LoadPackageOptions& opts) {
    const std::string dir = strip_slashes(dir_in);
    report_progress(opts.progress, 0.0, "reading quantization.json");
    const json info = read_info(dir, opts.allow_other_tool_version);
    const std::string info_path = (fs::path(dir) / kInfoFile).string();
    const std::string fingerprint = info["model"]["fingerprint"].get<std::string>();
    if (opts.check_hashes) {
        report_progress(opts.progress, 0.02, "checking file hashes");
        if (const std::string e = check_self_hash(info, info_path); !e.empty()) throw Error(e);
        for (const auto& h : check_hashes(dir, info))
            if (!h.ok)
                throw Error((fs::path(dir) / h.file).string() + ": sha256 " + h.got + " does not match quantization.json (" +
                            h.expected + "): the file was modified or damaged");
    }
    auto pkg = std::make_shared<QuantizedPackage>();
    pkg->dir = dir;
    pkg->info_json = info.dump(2) + "\n";
    pkg->config = config_from_json(info["quantization"], info_path);
    const QuantConfig& cfg = pkg->config;

    auto model = std::make_shared<Model>();
    model->source = dir;
    model->format = "package";
    model->config = read_hf_config((fs::path(dir) / kConfigFile).string(), &model->warnings);
    const ModelConfig& c = model->config;
    const std::string mpath = (fs::path(dir) / kModelFile).string();
    SafetensorsFile f(mpath);
    auto meta = [&](const char* k) {
        auto it = f.metadata().find(k);
        return it == f.metadata().end() ? std::string() : it->second;
    };
    if (meta("format") != kModelFormat) throw Error(mpath + ": not a quantized package model (format tag missing)");
    if (meta("model_fingerprint") != fingerprint)
        throw Error(mpath + " belongs to model " + meta("model_fingerprint") + ", but quantization.json says " + fingerprint +
                    ": the package mixes files of different models");

    // Every slot a model of this architecture can have; each is filled from the file or left undefined.
    ModelWeights& w = model->weights;
    const at::Tensor slot = at::empty({0});
    w.tok_emb = w.pos_emb = w.final_norm = w.final_norm_bias = w.lm_head = slot;
    w.layers.resize(static_cast<size_t>(c.n_layers));
    for (auto& L : w.layers)
        for (at::Tensor* t : {&L.attn_norm, &L.attn_norm_bias, &L.wq, &L.wk, &L.wv, &L.wo, &L.bq, &L.bk, &L.bv, &L.bo,
                              &L.ffn_norm, &L.ffn_norm_bias, &L.w_gate, &L.w_up, &L.w_down, &L.b_up, &L.b_down})
            *t = slot;
    const auto slots = linear_slots(w);
    std::map<const at::Tensor*, int64_t> in_width, out_rows;  // input and output sizes of every block linear (config)
    for (auto& L : w.layers) {
        for (const at::Tensor* t : {&L.wq, &L.wk, &L.wv, &L.w_gate, &L.w_up}) in_width[t] = c.dim;
        in_width[&L.wo] = c.n_heads * c.head_dim;
        in_width[&L.w_down] = c.hidden_dim;
        out_rows[&L.wq] = c.n_heads * c.head_dim;
        out_rows[&L.wk] = out_rows[&L.wv] = c.kv_dim();
        out_rows[&L.wo] = out_rows[&L.w_down] = c.dim;
        out_rows[&L.w_gate] = out_rows[&L.w_up] = c.hidden_dim;
    }
    std::map<const at::Tensor*, std::pair<int, LinearId>> linear_id;  // slot -> (layer, linear)
    for (size_t l = 0; l < w.layers.size(); ++l) {
        auto& L = w.layers[l];
        const int li = static_cast<int>(l);
        linear_id[&L.wq] = {li, LinearId::Q};
        linear_id[&L.wk] = {li, LinearId::K};
        linear_id[&L.wv] = {li, LinearId::V};
        linear_id[&L.wo] = {li, LinearId::O};
        linear_id[&L.w_gate] = {li, LinearId::Gate};
        linear_id[&L.w_up] = {li, LinearId::Up};
        linear_id[&L.w_down] = {li, LinearId::Down};
    }
    if (cfg.weights_on() && cfg.wbits == 8) pkg->weight_codes.resize(w.layers.size());
    const double total = double(f.names().size()) + 1;
    size_t done = 0;
    w.for_each(c, [&](const std::string& name, at::Tensor& t) {
        const bool linear = slots.count(&t) > 0;
        if (linear && cfg.weights_on()) {
            const std::string sname = name + "_scale";
            if (!f.contains(sname)) {
                t = at::Tensor();
                if (f.contains(name) || f.contains(name + "_packed"))
                    throw Error(mpath + ": quantized weight " + name + " has no " + sname);
                return;
            }
            // Every tensor of the file is checked for dtype and shape against the config before any use, the
            // message naming the tensor, what it is and what it should be (libtorch's own words - "Dimension out of
            // range" - named nothing).
            const int64_t in = in_width.at(&t), out = out_rows.at(&t);
            at::Tensor scale = f.get(sname);
            if (scale.scalar_type() != at::kFloat || scale.dim() != 2 || scale.size(0) != out || scale.size(1) < 1 ||
                in % scale.size(1) != 0)
                throw Error(mpath + ": tensor " + sname + " is " + dtype_text(scale) + " " + shape_text(scale) +
                            ", expected float32 [" + std::to_string(out) + ", groups] with groups dividing " +
                            std::to_string(in) + " (out x groups of " + name + ")");
            if (!at::isfinite(scale).all().item<bool>())
                throw Error(mpath + ": " + sname + " contains NaN or Inf (the weights it scales would be NaN)");
            if (!(scale > 0).all().item<bool>())
                throw Error(mpath + ": " + sname + " holds a scale <= 0 (weight scales are positive)");
            at::Tensor codes;
            if (cfg.wbits == 4) {
                const std::string pname = name + "_packed";
                if (!f.contains(pname)) throw Error(mpath + ": missing tensor " + pname);
                at::Tensor packed = f.get(pname);
                if (packed.scalar_type() != at::kByte || packed.sizes() != at::IntArrayRef({out, (in + 1) / 2}))
                    throw Error(mpath + ": tensor " + pname + " is " + dtype_text(packed) + " " + shape_text(packed) +
                                ", expected uint8 " + shape_text({out, (in + 1) / 2}) + " (two 4-bit codes a byte, " +
                                std::to_string(out) + " x " + std::to_string(in) + ")");
                codes = unpack_int4(packed, in);
            } else {
                if (!f.contains(name)) throw Error(mpath + ": missing tensor " + name);
                codes = f.get(name);
                if (codes.scalar_type() != at::kChar || codes.sizes() != at::IntArrayRef({out, in}))
                    throw Error(mpath + ": tensor " + name + " is " + dtype_text(codes) + " " + shape_text(codes) +
                                ", expected int8 " + shape_text({out, in}) + " (its weight codes, out x in)");
            }
            const int64_t qmax = weight_qmax(cfg.wbits);
            if (codes.numel() && (codes.min().item<int64_t>() < -qmax || codes.max().item<int64_t>() > qmax))
                throw Error(mpath + ": " + name + " has codes outside [-" + std::to_string(qmax) + ", " + std::to_string(qmax) + "]");
            QuantizedWeight qw;
            qw.q = codes;
            qw.scale = scale;
            qw.bits = cfg.wbits;
            qw.group_size = codes.size(1) / scale.size(1);
            t = qw.dequantize().contiguous();
            auto id = linear_id.find(&t);
            if (!pkg->weight_codes.empty() && id != linear_id.end())
                pkg->weight_codes[id->second.first][static_cast<int>(id->second.second)] = qw;
        } else if (f.contains(name)) {
            at::Tensor x = f.get(name);
            if (!x.is_floating_point())
                throw Error(mpath + ": tensor " + name + " is " + dtype_text(x) + " " + shape_text(x) +
                            ", expected a floating-point type");
            t = x.to(at::kFloat).contiguous();
        } else {
            t = at::Tensor();
        }
        report_progress(opts.progress, 0.05 + 0.85 * std::min(1.0, ++done / total), "loading " + name);
    });
    // Slots this architecture does not visit (e.g. Llama's norm biases) stay placeholders: clear them.
    auto clear_unvisited = [](at::Tensor& t) {
        if (t.defined() && t.dim() == 1 && t.size(0) == 0) t = at::Tensor();
    };
    for (at::Tensor* t : {&w.tok_emb, &w.pos_emb, &w.final_norm, &w.final_norm_bias, &w.lm_head}) clear_unvisited(*t);
    for (auto& L : w.layers)
        for (at::Tensor* t : {&L.attn_norm, &L.attn_norm_bias, &L.wq, &L.wk, &L.wv, &L.wo, &L.bq, &L.bk, &L.bv, &L.bo,
                              &L.ffn_norm, &L.ffn_norm_bias, &L.w_gate, &L.w_up, &L.w_down, &L.b_up, &L.b_down})
            clear_unvisited(*t);
    if (c.tied_embeddings) w.lm_head = w.tok_emb;
    for (auto& L : w.layers)
        for (at::Tensor* t : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_up, &L.w_down})
            if (!t->defined()) throw Error(mpath + ": a block linear weight is missing");
    check_shapes(c, w, mpath);

    // Static activation ranges.
    const int n_layers = static_cast<int>(c.n_layers);
    if (cfg.acts_on() && cfg.act == ActGranularity::PerTensorStatic) {
        auto ranges = std::make_shared<ActivationRanges>();
        ranges->layers.resize(static_cast<size_t>(n_layers));
        const at::Tensor like = at::zeros({}, at::kFloat);
        for (int l = 0; l < n_layers; ++l)
            for (int si = 0; si < kSiteCount; ++si) {
                const Site s = static_cast<Site>(si);
                if (!cfg.site_on(s)) continue;
                const std::string pre = act_prefix(l, s);
                for (const char* k : {"input_min", "input_max", "input_scale", "input_zero_point"}) {
                    if (!f.contains(pre + k)) throw Error(mpath + ": missing tensor " + pre + k);
                    const at::Tensor v = f.get(pre + k);
                    if (v.numel() != 1 || v.dim() > 1 || v.scalar_type() == at::kBool)
                        throw Error(mpath + ": tensor " + pre + k + " is " + dtype_text(v) + " " + shape_text(v) +
                                    ", expected one number (shape [] or [1])");
                }
                SiteRange& r = ranges->layers[l][si];
                r.min = f.get(pre + "input_min").to(at::kDouble).item<double>();
                r.max = f.get(pre + "input_max").to(at::kDouble).item<double>();
                if (!std::isfinite(r.min) || !std::isfinite(r.max) || r.min > r.max)
                    throw Error(mpath + ": " + pre + "input_min/max is not a finite range");
                ActQuantParams p = act_params(r.min, r.max, cfg.abits, like);
                const at::Tensor scale = f.get(pre + "input_scale").to(at::kFloat).reshape({});
                const at::Tensor zero = f.get(pre + "input_zero_point").to(at::kFloat).reshape({});
                if (!at::equal(scale, p.scale.to(at::kFloat)) || !at::equal(zero, p.zero.to(at::kFloat)))
                    throw Error(mpath + ": " + pre + "input_scale / input_zero_point disagree with input_min / input_max");
            }
        pkg->ranges = ranges;
    }
    report_progress(opts.progress, 0.92, "loading tokenizer");
    const auto V = static_cast<int32_t>(model->config.vocab_size);
    model->tokenizer = !opts.tokenizer_path.empty() ? load_tokenizer_file(opts.tokenizer_path, V)
                                                    : load_tokenizer_in_directory(dir, V);
    if (!model->tokenizer) throw Error(dir + ": no tokenizer (tokenizer.model or tokenizer.json) in the package");
    model->set_fingerprint(fingerprint);
    pkg->model = model;

    report_progress(opts.progress, 0.96, "loading the cushion");
    const std::string cpath = (fs::path(dir) / kCushionFile).string();
    pkg->cushion = load_cushion(cpath);
    if (pkg->cushion.model_fingerprint != fingerprint)
        throw Error(cpath + " was made for model " + pkg->cushion.model_fingerprint + ", but the package's model is " +
                    fingerprint + ": the package mixes files of different models");
    check_cushion_fits(pkg->cushion, *model, cpath);
    if (cfg.acts_on() || cfg.kv_on()) pkg->hook = std::make_shared<ActQuantHook>(cfg, n_layers, pkg->ranges);
    report_progress(opts.progress, 1.0, "loaded");
    return pkg;
}

void QuantizedPackage::to(c10::Device dev, at::ScalarType dt) {
    model->to(dev, dt);
    cushion = cushion_to(cushion, dev, dt);
}

int64_t QuantizedPackage::max_doc_tokens() const { return max_document_tokens(*model, cushion.length()); }

PerplexityResult QuantizedPackage::perplexity(const std::vector<std::vector<int32_t>>& docs,
                                              const PerplexityOptions& opts) const {
    PerplexityOptions o = opts;
    o.prefix = &cushion.kv;
    o.prefix_last_logits = cushion.last_logits;
    if (!o.kernels) o.kernels = kernels.get();
    HookChain chain;
    chain.hooks = {opts.hook, hook.get()};
    o.hook = &chain;
    return cushion::perplexity(*model, docs, o);
}

at::Tensor QuantizedPackage::forward(const at::Tensor& tokens, const ForwardArgs& args) const {
    ForwardArgs a = args;
    a.prefix = &cushion.kv;
    if (!a.kernels) a.kernels = kernels.get();
    HookChain chain;
    chain.hooks = {args.hook, hook.get()};
    a.hook = &chain;
    return model->forward(tokens, a);
}

// ------------------------------------------------------------------------------------------ verify

VerifyReport verify_package(const std::string& dir_in, const VerifyOptions& opts) {
    const std::string dir = strip_slashes(dir_in);
    VerifyReport rep;
    auto problem = [&](const std::string& p) {
        rep.ok = false;
        rep.problems.push_back(p);
    };
    json info;
    try {
        info = read_info(dir, /*allow_other_tool_version=*/false);
    } catch (const Error& e) {
        if (!is_package_directory(dir)) throw;
        problem(e.what());
        return rep;
    }
    report_progress(opts.progress, 0.0, "checking file hashes");
    if (const std::string e = check_self_hash(info, (fs::path(dir) / kInfoFile).string()); !e.empty()) problem(e);
    for (const auto& h : check_hashes(dir, info)) {
        rep.files.emplace_back(h.file, h.ok);
        if (!h.ok) problem(h.file + ": sha256 " + h.got + " does not match quantization.json (" + h.expected + ")");
    }
    if (!rep.ok) return rep;
    const std::string fingerprint = info["model"]["fingerprint"].get<std::string>();
    if (opts.source && opts.source->fingerprint() != fingerprint)
        problem("the package was exported from model " + fingerprint + ", not from the given model (" +
                opts.source->fingerprint() + ")");
    std::shared_ptr<QuantizedPackage> pkg;
    try {
        LoadPackageOptions lo;
        lo.check_hashes = false;  // just done
        pkg = load_package(dir, lo);
    } catch (const Error& e) {
        problem(std::string("loading: ") + e.what());
        return rep;
    }
    if (!opts.remeasure) return rep;
    if (!info.contains("perplexity") || !info["perplexity"].is_object()) return rep;  // nothing recorded to compare with
    const json& pp = info["perplexity"];  // nothing recorded to compare with
    std::string text = opts.text_file;
    const std::string recorded_sha =
        pp.contains("text_sha256") && pp["text_sha256"].is_string() ? pp["text_sha256"].get<std::string>() : "";
    if (text.empty() && pp.contains("text_file") && pp["text_file"].is_string()) {
        std::error_code ec;
        const std::string t = pp["text_file"].get<std::string>();
        if (fs::is_regular_file(t, ec)) text = t;
    }
    if (text.empty()) return rep;  // the export's text is gone and none was given: hashes only
    if (!recorded_sha.empty() && sha256_file(text) != recorded_sha) {
        problem(text + " is not the text the perplexity was measured on at export (sha256 differs)");
        return rep;
    }
    rep.text_file = text;
    const auto docs = tokenize_documents(*pkg->model, read_documents(text), pkg->max_doc_tokens());
    PerplexityOptions po;
    po.max_batch_tokens = opts.max_batch_tokens;
    po.progress = opts.progress;
    rep.ppl_measured = pkg->perplexity(docs, po).ppl;
    const nlohmann::json ppj = pp;
    rep.ppl_recorded = JsonFields(ppj, (fs::path(dir) / kInfoFile).string(), "perplexity").number_or("quantized_cushion", 0.0);
    rep.remeasured = true;
    if (!(std::fabs(rep.ppl_measured - rep.ppl_recorded) <= opts.rel_tol * std::fabs(rep.ppl_recorded)))
        problem("perplexity re-measured " + std::to_string(rep.ppl_measured) + " differs from the recorded " +
                std::to_string(rep.ppl_recorded) + " by more than " + std::to_string(opts.rel_tol) + " relative");
    return rep;
}

}  // namespace cushion
