// Hugging Face model directories: config.json + model.safetensors (or a sharded index), Llama-family
// (llama, mistral, qwen2) and OPT. Also writes such a directory (save_hf_directory), atomically.
#include <ATen/ATen.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "tokenizer/tokenizer_files.h"
#include "base/atomic_file.h"
#include "base/json_file.h"
#include "formats/model_loader.h"
#include "formats/safetensors.h"
#include "formats/weight_names.h"

namespace cushion {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
    std::string r = "[";
    for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + "]";
}

// Reads config.json fields with errors naming the field and the file.
class ConfigReader {
public:
    ConfigReader(const json& j, std::string file) : j_(j), file_(std::move(file)) {}

    bool has(const char* key) const { return j_.contains(key) && !j_[key].is_null(); }
    int64_t req_int(const char* key) const {
        if (!has(key)) throw Error(file_ + ": missing field '" + key + "'");
        return as_int(key);
    }
    int64_t opt_int(const char* key, int64_t def) const { return has(key) ? as_int(key) : def; }
    double opt_double(const char* key, double def) const {
        if (!has(key)) return def;
        if (!j_[key].is_number()) throw Error(file_ + ": field '" + std::string(key) + "' is not a number");
        return j_[key].get<double>();
    }
    bool opt_bool(const char* key, bool def) const {
        if (!has(key)) return def;
        if (!j_[key].is_boolean()) throw Error(file_ + ": field '" + std::string(key) + "' is not true/false");
        return j_[key].get<bool>();
    }
    std::string opt_str(const char* key, const std::string& def) const {
        if (!has(key)) return def;
        if (!j_[key].is_string()) throw Error(file_ + ": field '" + std::string(key) + "' is not a string");
        return j_[key].get<std::string>();
    }

private:
    int64_t as_int(const char* key) const {
        const json& v = j_[key];
        if (!v.is_number_integer() && !v.is_number_unsigned())
            throw Error(file_ + ": field '" + std::string(key) + "' is not an integer (" + v.dump() + ")");
        if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX))
            throw Error(file_ + ": field '" + std::string(key) + "' = " + v.dump() + " is out of range");
        const int64_t x = v.get<int64_t>();
        if (x < 0 || x >= (int64_t(1) << 40))
            throw Error(file_ + ": field '" + std::string(key) + "' = " + std::to_string(x) + " is out of range");
        return x;
    }
    const json& j_;
    std::string file_;
};

json parse_json_file(const std::string& path) { return read_json_file(path); }

// RoPE base and scaling. transformers 4.x writes rope_theta at the top level and rope_scaling {"rope_type" or
// "type", "factor", ...}; transformers 5.x writes rope_parameters {"rope_theta", "rope_type", ...} instead.
// Needs c.max_seq_len (llama3's original_max_position_embeddings defaults to it).
void read_rope(const json& j, const std::string& file, ModelConfig& c, std::vector<std::string>& warnings) {
    ConfigReader r(j, file);
    c.rope_theta = r.opt_double("rope_theta", 10000.0);
    const char* key = r.has("rope_parameters") ? "rope_parameters" : r.has("rope_scaling") ? "rope_scaling" : nullptr;
    if (!key) return;
    const std::string where = file + ": " + key;
    if (!j[key].is_object()) throw Error(where + " is not an object");
    ConfigReader p(j[key], where);
    c.rope_theta = p.opt_double("rope_theta", c.rope_theta);
    const std::string type = p.opt_str("rope_type", p.opt_str("type", "default"));
    if (type == "default") return;
    if (type != "linear" && type != "llama3") {
        warnings.push_back(where + ": RoPE type '" + type + "' is ignored (supported: default, linear, llama3)");
        return;
    }
    auto req = [&](const char* k) {
        if (!p.has(k)) throw Error(where + ": missing field '" + k + "' for RoPE type " + type);
        return p.opt_double(k, 0.0);
    };
    c.rope_type = type;
    c.rope_factor = req("factor");
    if (type == "llama3") {
        c.rope_low_freq_factor = req("low_freq_factor");
        c.rope_high_freq_factor = req("high_freq_factor");
        c.rope_original_max_pos = p.opt_int("original_max_position_embeddings", c.max_seq_len);
    }
}

ModelConfig parse_config(const json& j, const std::string& file, std::vector<std::string>& warnings) {
    if (!j.is_object()) throw Error(file + ": not a JSON object");
    ConfigReader r(j, file);
    std::string type = r.opt_str("model_type", "");
    if (type.empty() && j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty() &&
        j["architectures"][0].is_string()) {
        static const std::map<std::string, std::string> by_class = {{"LlamaForCausalLM", "llama"},
                                                                    {"MistralForCausalLM", "mistral"},
                                                                    {"Qwen2ForCausalLM", "qwen2"},
                                                                    {"OPTForCausalLM", "opt"}};
        const std::string cls = j["architectures"][0].get<std::string>();
        auto it = by_class.find(cls);
        type = it != by_class.end() ? it->second : cls;
    }
    if (type.empty()) throw Error(file + ": missing field 'model_type' (and no known 'architectures')");

    ModelConfig c;
    c.arch_name = type;
    if (type == "llama" || type == "mistral" || type == "qwen2") {
        c.arch = Arch::Llama;
        c.qkv_bias = type == "qwen2";
        if (r.opt_bool("attention_bias", false))
            throw Error(file + ": attention_bias = true (biases on q/k/v/o) is not supported");
        if (r.opt_bool("mlp_bias", false)) throw Error(file + ": mlp_bias = true is not supported");
        const std::string act = r.opt_str("hidden_act", "silu");
        if (act != "silu") throw Error(file + ": hidden_act '" + act + "' is not supported (only silu)");
        c.dim = r.req_int("hidden_size");
        c.hidden_dim = r.req_int("intermediate_size");
        c.n_layers = r.req_int("num_hidden_layers");
        c.n_heads = r.req_int("num_attention_heads");
        c.n_kv_heads = r.opt_int("num_key_value_heads", c.n_heads);
        c.vocab_size = r.req_int("vocab_size");
        c.max_seq_len = r.req_int("max_position_embeddings");
        c.norm_eps = r.opt_double("rms_norm_eps", 1e-6);
        c.tied_embeddings = r.opt_bool("tie_word_embeddings", false);
        read_rope(j, file, c, warnings);
        // Sliding-window attention is not implemented: the numbers differ past the window.
        const bool window = type == "mistral" || (type == "qwen2" && r.opt_bool("use_sliding_window", false));
        if (window && r.has("sliding_window") && r.opt_int("sliding_window", 0) < c.max_seq_len)
            warnings.push_back(file + ": sliding_window " + std::to_string(r.opt_int("sliding_window", 0)) +
                               " is ignored (full attention): sequences longer than it differ from the original");
    } else if (type == "opt") {
        c.arch = Arch::OPT;
        c.dim = r.req_int("hidden_size");
        c.hidden_dim = r.req_int("ffn_dim");
        c.n_layers = r.req_int("num_hidden_layers");
        c.n_heads = r.req_int("num_attention_heads");
        c.n_kv_heads = c.n_heads;
        c.vocab_size = r.req_int("vocab_size");
        c.max_seq_len = r.req_int("max_position_embeddings");
        c.norm_eps = 1e-5;
        c.tied_embeddings = r.opt_bool("tie_word_embeddings", true);
        c.do_layer_norm_before = r.opt_bool("do_layer_norm_before", true);
        c.pos_offset = 2;
        const int64_t proj = r.opt_int("word_embed_proj_dim", c.dim);
        if (proj != c.dim)
            throw Error(file + ": word_embed_proj_dim (" + std::to_string(proj) + ") differs from hidden_size (" +
                        std::to_string(c.dim) + "); OPT models with embedding projections are not supported");
        const std::string act = r.opt_str("activation_function", "relu");
        if (act != "relu") throw Error(file + ": activation_function '" + act + "' is not supported (only relu)");
        if (!r.opt_bool("enable_bias", true)) throw Error(file + ": enable_bias = false is not supported");
        if (!r.opt_bool("layer_norm_elementwise_affine", true))
            throw Error(file + ": layer_norm_elementwise_affine = false is not supported");
        if (r.opt_bool("_remove_final_layer_norm", false))
            throw Error(file + ": _remove_final_layer_norm = true is not supported");
    } else {
        throw Error("unsupported architecture '" + type + "' in " + file + " (supported: llama, mistral, qwen2, opt)");
    }
    if (c.n_heads <= 0) throw Error(file + ": num_attention_heads must be positive");
    if (r.has("head_dim")) {
        c.head_dim = r.req_int("head_dim");
    } else {
        if (c.dim % c.n_heads != 0)
            throw Error(file + ": hidden_size " + std::to_string(c.dim) + " is not a multiple of num_attention_heads " +
                        std::to_string(c.n_heads));
        c.head_dim = c.dim / c.n_heads;
    }
    c.validate(file);
    return c;
}

// The tensors of a directory, over one or more safetensors files.
class WeightFiles {
public:
    explicit WeightFiles(const std::string& dir) : dir_(dir) {
        const fs::path single = fs::path(dir) / "model.safetensors";
        const fs::path index = fs::path(dir) / "model.safetensors.index.json";
        if (fs::exists(single)) {
            add_file(single.string());
            for (const auto& n : files_.back()->names()) where_[n] = files_.back().get();
        } else if (fs::exists(index)) {
            const std::string ip = index.string();
            const json j = parse_json_file(ip);
            if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
                throw Error(ip + ": missing or invalid field 'weight_map'");
            std::map<std::string, SafetensorsFile*> shards;
            for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
                if (!it.value().is_string())
                    throw Error(ip + ": weight_map entry '" + it.key() + "' is not a file name");
                const std::string shard = it.value().get<std::string>();
                if (shard.empty() || shard.find('/') != std::string::npos || shard == "." || shard == "..")
                    throw Error(ip + ": weight_map entry '" + it.key() + "' names an invalid shard '" + shard + "'");
                auto s = shards.find(shard);
                if (s == shards.end()) {
                    add_file((fs::path(dir) / shard).string());
                    s = shards.emplace(shard, files_.back().get()).first;
                }
                if (!s->second->contains(it.key()))
                    throw Error(ip + ": weight_map puts tensor '" + it.key() + "' in " + shard + ", which lacks it");
                where_[it.key()] = s->second;
            }
        } else {
            std::string extra;
            if (fs::exists(fs::path(dir) / "pytorch_model.bin") ||
                fs::exists(fs::path(dir) / "pytorch_model.bin.index.json"))
                extra = " (pytorch_model.bin is not supported; convert it to safetensors)";
            throw Error(dir + ": no model.safetensors or model.safetensors.index.json" + extra);
        }
    }

    // The file holding `name` (also tried with / without a leading "model."), or null.
    const SafetensorsFile* find(const std::string& name, std::string* found) const {
        std::vector<std::string> cands{name};
        const std::string pre = "model.";
        if (name.compare(0, pre.size(), pre) == 0) cands.push_back(name.substr(pre.size()));
        else cands.push_back(pre + name);
        for (const auto& c : cands) {
            auto it = where_.find(c);
            if (it != where_.end()) {
                *found = c;
                return it->second;
            }
        }
        return nullptr;
    }

private:
    void add_file(const std::string& p) { files_.push_back(std::make_unique<SafetensorsFile>(p)); }
    std::string dir_;
    std::vector<std::unique_ptr<SafetensorsFile>> files_;
    std::map<std::string, SafetensorsFile*> where_;
};

std::string strip_trailing_slashes(std::string d) {
    while (d.size() > 1 && d.back() == '/') d.pop_back();
    return d;
}

void fsync_file(const std::string& p) {
    FILE* f = std::fopen(p.c_str(), "rb");
    if (!f) return;
    ::fsync(fileno(f));
    std::fclose(f);
}

}  // namespace

std::shared_ptr<Model> load_hf_directory(const std::string& dir_in, const LoadOptions& opts) {
    const std::string dir = strip_trailing_slashes(dir_in);
    report_progress(opts.progress, 0.0, "reading config.json");
    const std::string cfg_path = (fs::path(dir) / "config.json").string();
    if (!fs::exists(cfg_path)) throw Error(dir + ": no config.json (not a Hugging Face model directory)");
    auto model = std::make_shared<Model>();
    model->source = dir;
    model->format = "hf";
    ModelConfig& c = model->config;
    c = parse_config(parse_json_file(cfg_path), cfg_path, model->warnings);

    WeightFiles files(dir);
    const int64_t V = c.vocab_size;
    // The names and shapes are ModelWeights::for_each_slot's (one list for the reader and every writer).
    ModelWeights& w = model->weights;
    w.layers.resize(static_cast<size_t>(c.n_layers));
    size_t total = 0, done = 0;
    w.for_each_slot(c, [&](const WeightSlot& s, at::Tensor&) { total += s.stored ? 1 : 0; });
    auto take = [&](const std::string& name, const std::vector<int64_t>& expect) -> at::Tensor {
        std::string found;
        const SafetensorsFile* f = files.find(name, &found);
        if (!f) throw Error(dir + ": missing tensor " + name);
        const std::vector<int64_t> shape = f->shape(found);
        if (shape != expect)
            throw Error(f->path() + ": tensor " + found + " has shape " + shape_str(shape) + ", expected " +
                        shape_str(expect) + " from config.json");
        at::Tensor t = f->get(found);
        if (!t.is_floating_point())
            throw Error(f->path() + ": tensor " + found + " has dtype " + std::string(c10::toString(t.scalar_type())) +
                        ", not a floating-point type");
        t = t.to(at::kFloat).contiguous();
        report_progress(opts.progress, 0.02 + 0.93 * std::min(1.0, double(++done) / double(total)), "loading " + found);
        return t;
    };

    w.for_each_slot(c, [&](const WeightSlot& s, at::Tensor& t) {
        if (s.stored) t = take(s.name, s.shape);
    });
    if (c.tied_embeddings) w.lm_head = w.tok_emb;

    check_shapes(c, w, dir);
    note_non_finite_weights(*model, dir, nullptr);

    report_progress(opts.progress, 0.96, "loading tokenizer");
    model->tokenizer = !opts.tokenizer_path.empty()
                           ? load_tokenizer_file(opts.tokenizer_path, static_cast<int32_t>(V))
                           : load_tokenizer_in_directory(dir, static_cast<int32_t>(V));
    if (!model->tokenizer)
        throw Error(dir + ": no tokenizer (tokenizer.model or tokenizer.json); pass one with --tokenizer");
    if (model->tokenizer->vocab_size() > V)
        model->warnings.push_back("the tokenizer has " + std::to_string(model->tokenizer->vocab_size()) +
                                  " tokens but the model's vocab_size is " + std::to_string(V) +
                                  "; ids past the embedding cannot be used");
    report_progress(opts.progress, 1.0, "loaded");
    return model;
}

ModelConfig read_hf_config(const std::string& config_path, std::vector<std::string>* warnings) {
    std::vector<std::string> w;
    ModelConfig c = parse_config(parse_json_file(config_path), config_path, w);
    if (warnings) warnings->insert(warnings->end(), w.begin(), w.end());
    return c;
}

std::string hf_config_json(const Model& model) {
    const ModelConfig& c = model.config;
    nlohmann::ordered_json j;
    const int32_t bos = model.tokenizer ? model.tokenizer->bos_id() : -1;
    const int32_t eos = model.tokenizer ? model.tokenizer->eos_id() : -1;
    if (c.arch == Arch::OPT) {
        j["architectures"] = {"OPTForCausalLM"};
        j["model_type"] = "opt";
        j["hidden_size"] = c.dim;
        j["ffn_dim"] = c.hidden_dim;
        j["num_hidden_layers"] = c.n_layers;
        j["num_attention_heads"] = c.n_heads;
        j["vocab_size"] = c.vocab_size;
        j["max_position_embeddings"] = c.max_seq_len;
        j["do_layer_norm_before"] = c.do_layer_norm_before;
        j["word_embed_proj_dim"] = c.dim;
        j["activation_function"] = "relu";
        j["enable_bias"] = true;
        j["tie_word_embeddings"] = c.tied_embeddings;
    } else {
        const bool qwen = c.qkv_bias;
        j["architectures"] = {qwen ? "Qwen2ForCausalLM" : "LlamaForCausalLM"};
        j["model_type"] = qwen ? "qwen2" : "llama";
        j["hidden_size"] = c.dim;
        j["intermediate_size"] = c.hidden_dim;
        j["num_hidden_layers"] = c.n_layers;
        j["num_attention_heads"] = c.n_heads;
        j["num_key_value_heads"] = c.n_kv_heads;
        j["head_dim"] = c.head_dim;
        j["vocab_size"] = c.vocab_size;
        j["max_position_embeddings"] = c.max_seq_len;
        j["rope_theta"] = c.rope_theta;
        if (c.rope_type != "default") {  // the 4.x key, which transformers 5.x also reads
            nlohmann::ordered_json rs = {{"rope_type", c.rope_type}, {"factor", c.rope_factor}};
            if (c.rope_type == "llama3") {
                rs["low_freq_factor"] = c.rope_low_freq_factor;
                rs["high_freq_factor"] = c.rope_high_freq_factor;
                rs["original_max_position_embeddings"] = c.rope_original_max_pos;
            }
            j["rope_scaling"] = rs;
        }
        j["rms_norm_eps"] = c.norm_eps;
        j["hidden_act"] = "silu";
        j["tie_word_embeddings"] = c.tied_embeddings;
        if (!qwen) j["attention_bias"] = false;
    }
    if (bos >= 0) j["bos_token_id"] = bos;
    if (eos >= 0) j["eos_token_id"] = eos;
    j["torch_dtype"] = "float32";
    return j.dump(2) + "\n";
}

std::vector<std::pair<std::string, std::string>> hf_tokenizer_files(const Model& model) {
    const ModelConfig& c = model.config;
    std::vector<std::pair<fs::path, std::string>> copies;  // source file, name in the new directory
    std::error_code ec;
    if (!model.source.empty()) {
        const fs::path src(model.source);
        if (fs::is_directory(src, ec)) {
            for (const char* n : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"})
                if (fs::is_regular_file(src / n, ec)) copies.emplace_back(src / n, n);
        } else {
            const fs::path beside = src.parent_path().empty() ? fs::path(".") : src.parent_path();
            if (fs::is_regular_file(beside / "tokenizer.model", ec)) {
                copies.emplace_back(beside / "tokenizer.model", "tokenizer.model");
            } else {
                std::vector<fs::path> toks;
                for (const auto& e : fs::directory_iterator(beside, ec)) {
                    const std::string n = e.path().filename().string();
                    if (e.is_regular_file() && n.size() > 9 && n.compare(0, 3, "tok") == 0 &&
                        n.compare(n.size() - 6, 6, ".model") == 0)
                        toks.push_back(e.path());
                }
                std::sort(toks.begin(), toks.end());
                // Prefer tok<vocab>.model (llama2.c's naming), else the first one.
                const fs::path want = beside / ("tok" + std::to_string(c.vocab_size) + ".model");
                if (std::find(toks.begin(), toks.end(), want) != toks.end()) copies.emplace_back(want, "tokenizer.model");
                else if (!toks.empty()) copies.emplace_back(toks.front(), "tokenizer.model");
            }
            if (fs::is_regular_file(beside / "tokenizer.json", ec))
                copies.emplace_back(beside / "tokenizer.json", "tokenizer.json");
        }
    }
    std::vector<std::pair<std::string, std::string>> r;
    for (const auto& [from, name] : copies) r.emplace_back(from.string(), name);
    return r;
}

void save_hf_directory(const Model& model, const std::string& dir_in) {
    const std::string dir = strip_trailing_slashes(dir_in);
    const ModelConfig& c = model.config;
    if (dir.empty()) throw Error("save_hf_directory: empty directory name");
    fs::path target(dir);
    fs::path parent = target.parent_path();
    if (parent.empty()) parent = ".";
    std::error_code ec;
    if (fs::exists(target, ec) && !fs::is_directory(target, ec))
        throw Error(dir + ": exists and is not a directory");
    fs::create_directories(parent, ec);
    if (ec) throw Error(parent.string() + ": cannot create directory: " + ec.message());

    const std::string config_text = hf_config_json(model);

    // ---- tensors (float32, CPU) ----
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    model.weights.for_each(c, [&](const std::string& name, const at::Tensor& t) {
        tensors.emplace_back(name, t.detach().to(at::kCPU, at::kFloat).contiguous());
    });

    std::vector<std::pair<fs::path, std::string>> copies;  // source file, name in the new directory
    for (const auto& [from, name] : hf_tokenizer_files(model)) copies.emplace_back(fs::path(from), name);

    // ---- write into a temporary directory beside the target, then put it in place ----
    write_directory_atomically(dir, /*overwrite=*/true, [&](const fs::path& tmp) {
        std::error_code ec2;
        write_text_atomically((tmp / "config.json").string(), config_text);
        save_safetensors((tmp / "model.safetensors").string(), tensors, {{"format", "pt"}});
        for (const auto& [from, name] : copies) {
            fs::copy_file(from, tmp / name, fs::copy_options::overwrite_existing, ec2);
            if (ec2) throw Error(from.string() + ": cannot copy into " + dir + ": " + ec2.message());
            fs::permissions(tmp / name, fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::add, ec2);
            fsync_file((tmp / name).string());
        }
    });
}

}  // namespace cushion
