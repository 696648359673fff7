#include "cushion/cushion.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <limits>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/json_file.h"
#include "formats/safetensors.h"
#include "quant/quant_config.h"

namespace cushion {

using json = nlohmann::json;

Cushion make_cushion(const Model& m, const std::vector<int32_t>& prefix_ids) {
    if (prefix_ids.empty()) throw Error("a cushion needs at least one token");
    at::NoGradGuard ng;
    Cushion c;
    c.prefix_ids = prefix_ids;
    for (auto id : prefix_ids) c.prefix_text += m.tokenizer->piece(id);
    at::Tensor toks = at::tensor(std::vector<int64_t>(prefix_ids.begin(), prefix_ids.end()), at::kLong).unsqueeze(0);
    ForwardArgs fa;
    fa.present = &c.kv;
    fa.last_logits_only = true;
    c.last_logits = m.forward(toks, fa)[0][0].to(at::kCPU, at::kFloat).contiguous();
    for (auto& t : c.kv.k) t = t.detach().contiguous();
    for (auto& t : c.kv.v) t = t.detach().contiguous();
    c.model_fingerprint = m.fingerprint();
    return c;
}

void check_cushion_fits(const Cushion& c, const Model& m, const std::string& source) {
    if (!c.model_fingerprint.empty() && c.model_fingerprint != m.fingerprint())
        throw Error(source + " was made for another model (fingerprint " + c.model_fingerprint + ", this model is " +
                    m.fingerprint() + ")");
    const auto& cfg = m.config;
    if ((int64_t)c.kv.k.size() != cfg.n_layers || c.kv.v.size() != c.kv.k.size())
        throw Error(source + " has " + std::to_string(c.kv.k.size()) + " layers, the model " + std::to_string(cfg.n_layers));
    const std::vector<int64_t> kv_shape{1, cfg.n_kv_heads, c.length(), cfg.head_dim};
    for (size_t l = 0; l < c.kv.k.size(); ++l)
        for (const char* which : {"k", "v"}) {
            const at::Tensor& t = which[0] == 'k' ? c.kv.k[l] : c.kv.v[l];
            if (!t.defined() || t.sizes() != at::IntArrayRef(kv_shape))
                throw Error(source + ": tensor " + which + "." + std::to_string(l) + " has shape " +
                            (t.defined() ? c10::str(t.sizes()) : std::string("(none)")) + ", expected " +
                            c10::str(at::IntArrayRef(kv_shape)) + " (1, the model's " + std::to_string(cfg.n_kv_heads) +
                            " KV heads, " + std::to_string(c.length()) + " positions, head size " +
                            std::to_string(cfg.head_dim) + ")");
        }
    if (!c.last_logits.defined() || c.last_logits.dim() != 1 || c.last_logits.size(0) != cfg.vocab_size)
        throw Error(source + ": tensor last_logits has shape " +
                    (c.last_logits.defined() ? c10::str(c.last_logits.sizes()) : std::string("(none)")) +
                    ", expected [" + std::to_string(cfg.vocab_size) + "] (the model's vocabulary)");
    if (c.prefix_ids.empty() || (int64_t)c.prefix_ids.size() != c.length())
        throw Error(source + ": prefix_ids do not match its KV cache (" + std::to_string(c.prefix_ids.size()) +
                    " ids, " + std::to_string(c.length()) + " positions)");
    for (size_t i = 0; i < c.prefix_ids.size(); ++i)
        if (c.prefix_ids[i] < 0 || c.prefix_ids[i] >= cfg.vocab_size)
            throw Error(source + ": prefix_ids[" + std::to_string(i) + "] = " + std::to_string(c.prefix_ids[i]) +
                        " is outside this model's vocabulary (" + std::to_string(cfg.vocab_size) + " tokens)");
    if (c.length() + 1 > cfg.max_seq_len) throw Error(source + " is longer than the model's context");
}

void save_cushion(const Cushion& c, const std::string& path) {
    std::vector<std::pair<std::string, at::Tensor>> ts;
    for (size_t l = 0; l < c.kv.k.size(); ++l) {
        ts.push_back({"k." + std::to_string(l), c.kv.k[l].detach().to(at::kCPU, at::kFloat).contiguous()});
        ts.push_back({"v." + std::to_string(l), c.kv.v[l].detach().to(at::kCPU, at::kFloat).contiguous()});
    }
    ts.push_back({"last_logits", c.last_logits.detach().to(at::kCPU, at::kFloat).contiguous()});
    ts.push_back({"prefix_ids", at::tensor(std::vector<int64_t>(c.prefix_ids.begin(), c.prefix_ids.end()), at::kLong)});
    std::map<std::string, std::string> meta{{"format", "cushioncache-cushion"},
                                            {"version", "1"},
                                            {"model_fingerprint", c.model_fingerprint},
                                            {"prefix_text", c.prefix_text},
                                            {"settings", c.settings_json},
                                            {"history", c.history_json},
                                            {"tool_version", CUSHION_VERSION}};
    save_safetensors(path, ts, meta);
}

Cushion load_cushion(const std::string& path) {
    SafetensorsFile f(path);
    f.require_format("cushioncache-cushion", "cushion file");
    auto get = [&](const std::string& k) { return f.meta(k); };
    Cushion c;
    c.model_fingerprint = get("model_fingerprint");
    // A cushion is a KV cache of one model: without the fingerprint nothing ties it to that model.
    if (c.model_fingerprint.empty())
        throw Error(path + ": metadata field model_fingerprint is missing or empty (a cushion must name its model)");
    c.prefix_text = get("prefix_text");
    c.settings_json = get("settings").empty() ? "{}" : get("settings");
    c.history_json = get("history").empty() ? "{}" : get("history");
    auto floating = [&](const std::string& name) {
        const at::Tensor t = f.get(name);
        if (!at::isFloatingType(t.scalar_type()))
            throw Error(path + ": tensor " + name + " has dtype " + std::string(c10::toString(t.scalar_type())) +
                        ", expected a floating-point type");
        at::Tensor x = t.to(at::kFloat);
        if (!at::isfinite(x).all().item<bool>()) throw Error(path + ": tensor " + name + " contains NaN or Inf");
        return x;
    };
    for (size_t l = 0;; ++l) {
        const std::string kn = "k." + std::to_string(l), vn = "v." + std::to_string(l);
        if (!f.contains(kn)) break;
        if (!f.contains(vn)) throw Error(path + ": tensor " + vn + " missing");
        at::Tensor k = floating(kn), v = floating(vn);
        if (k.dim() != 4 || k.size(0) != 1 || k.sizes() != v.sizes())
            throw Error(path + ": tensors " + kn + " and " + vn + " must both be (1, kv_heads, P, head_dim); they are " +
                        c10::str(k.sizes()) + " and " + c10::str(v.sizes()));
        if (!c.kv.k.empty() && k.sizes() != c.kv.k[0].sizes())
            throw Error(path + ": tensor " + kn + " is " + c10::str(k.sizes()) + ", layer 0's is " +
                        c10::str(c.kv.k[0].sizes()));
        c.kv.k.push_back(k);
        c.kv.v.push_back(v);
    }
    if (c.kv.k.empty()) throw Error(path + ": no KV tensors (k.0, v.0, ...)");
    if (c.kv.k[0].size(2) < 1) throw Error(path + ": the cushion has no tokens (a cushion holds at least <bos>)");
    if (!f.contains("last_logits") || !f.contains("prefix_ids")) throw Error(path + ": last_logits or prefix_ids missing");
    c.last_logits = floating("last_logits");
    if (c.last_logits.dim() != 1) throw Error(path + ": tensor last_logits must be 1-D (vocabulary), it is " +
                                              c10::str(c.last_logits.sizes()));
    const at::Tensor raw_ids = f.get("prefix_ids");
    if (raw_ids.dim() != 1 || at::isFloatingType(raw_ids.scalar_type()) || raw_ids.scalar_type() == at::kBool)
        throw Error(path + ": tensor prefix_ids must be a 1-D integer tensor");
    at::Tensor ids = raw_ids.to(at::kLong);
    for (int64_t i = 0; i < ids.numel(); ++i) {
        const int64_t id = ids[i].item<int64_t>();
        if (id < 0 || id > std::numeric_limits<int32_t>::max())
            throw Error(path + ": prefix_ids[" + std::to_string(i) + "] = " + std::to_string(id) + " is not a token id");
        c.prefix_ids.push_back(static_cast<int32_t>(id));
    }
    if ((int64_t)c.prefix_ids.size() != c.length())
        throw Error(path + ": prefix_ids has " + std::to_string(c.prefix_ids.size()) + " tokens, the KV cache " +
                    std::to_string(c.length()));
    return c;
}

Cushion cushion_to(const Cushion& c, c10::Device dev, at::ScalarType dt) {
    Cushion r = c;
    for (auto& t : r.kv.k) t = t.to(dev, dt);
    for (auto& t : r.kv.v) t = t.to(dev, dt);
    return r;
}

QuantLossOptions search_loss_options(const Cushion& c, const std::string& source) {
    QuantLossOptions o;
    const json s = parse_json_text(c.settings_json.empty() ? "{}" : c.settings_json, source + " settings");
    if (!s.is_object() || !s.contains("search")) return o;
    const json& g = s["search"];
    if (!g.is_object()) throw Error(source + ": settings field 'search' is not an object");
    if (g.contains("bits")) {
        if (!g["bits"].is_number_integer()) throw Error(source + ": settings field 'search.bits' is not an integer");
        o.bits = g["bits"].get<int>();
        if (o.bits != 4 && o.bits != 6 && o.bits != 8 && o.bits != 16)
            throw Error(source + ": settings field 'search.bits' is " + std::to_string(o.bits) + "; use 4, 6, 8 or 16");
    }
    if (g.contains("sites")) {
        if (!g["sites"].is_string()) throw Error(source + ": settings field 'search.sites' is not a string");
        try {
            o.sites = parse_sites(g["sites"].get<std::string>());
        } catch (const Error& e) {
            throw Error(source + ": settings field 'search.sites': " + e.what());
        }
    }
    return o;
}

}  // namespace cushion
