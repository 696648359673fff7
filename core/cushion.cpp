#include "cushion.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <nlohmann/json.hpp>

#include "error.h"
#include "safetensors.h"

namespace cushion {

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
    for (size_t l = 0; l < c.kv.k.size(); ++l)
        for (const at::Tensor* t : {&c.kv.k[l], &c.kv.v[l]})
            if (t->dim() != 4 || t->size(0) != 1 || t->size(1) != cfg.n_kv_heads || t->size(3) != cfg.head_dim ||
                t->size(2) != c.length())
                throw Error(source + ": KV tensor of layer " + std::to_string(l) + " has the wrong shape for this model");
    if (!c.last_logits.defined() || c.last_logits.dim() != 1 || c.last_logits.size(0) != cfg.vocab_size)
        throw Error(source + ": last_logits missing or of the wrong size");
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
    const auto& meta = f.metadata();
    auto get = [&](const std::string& k) {
        auto it = meta.find(k);
        return it == meta.end() ? std::string() : it->second;
    };
    if (get("format") != "cushioncache-cushion") throw Error(path + ": not a cushion file (no cushioncache-cushion format tag)");
    if (get("version") != "1") throw Error(path + ": cushion file version '" + get("version") + "' is not supported");
    Cushion c;
    c.model_fingerprint = get("model_fingerprint");
    c.prefix_text = get("prefix_text");
    c.settings_json = get("settings").empty() ? "{}" : get("settings");
    c.history_json = get("history").empty() ? "{}" : get("history");
    for (size_t l = 0;; ++l) {
        const std::string kn = "k." + std::to_string(l), vn = "v." + std::to_string(l);
        if (!f.contains(kn)) break;
        if (!f.contains(vn)) throw Error(path + ": tensor " + vn + " missing");
        c.kv.k.push_back(f.get(kn).to(at::kFloat));
        c.kv.v.push_back(f.get(vn).to(at::kFloat));
    }
    if (c.kv.k.empty()) throw Error(path + ": no KV tensors");
    if (!f.contains("last_logits") || !f.contains("prefix_ids")) throw Error(path + ": last_logits or prefix_ids missing");
    c.last_logits = f.get("last_logits").to(at::kFloat);
    at::Tensor ids = f.get("prefix_ids").to(at::kLong);
    for (int64_t i = 0; i < ids.numel(); ++i) c.prefix_ids.push_back(static_cast<int32_t>(ids[i].item<int64_t>()));
    if ((int64_t)c.prefix_ids.size() != c.length()) throw Error(path + ": prefix_ids and KV length disagree");
    for (auto* t : {&c.kv.k, &c.kv.v})
        for (auto& x : *t)
            if (!at::isfinite(x).all().item<bool>()) throw Error(path + ": KV cache contains NaN or Inf");
    return c;
}

Cushion cushion_to(const Cushion& c, c10::Device dev, at::ScalarType dt) {
    Cushion r = c;
    for (auto& t : r.kv.k) t = t.to(dev, dt);
    for (auto& t : r.kv.v) t = t.to(dev, dt);
    return r;
}

}  // namespace cushion
