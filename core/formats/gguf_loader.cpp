// GGUF (llama.cpp) models: versions 2 and 3, F32/F16/BF16 and block-quantized tensors (Q4_0, Q4_1, Q5_0, Q5_1,
// Q8_0, Q2_K..Q6_K; dequantized to float32 on load by gguf_blocks.cpp), Llama-family architectures.
// Every count, length, dimension and offset is checked against the file before anything is allocated.
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>

#include "formats/gguf_blocks.h"
#include "tokenizer/tokenizer_files.h"
#include "base/mapped_file.h"
#include "formats/model_loader.h"
#include "formats/weight_names.h"

namespace cushion {

namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" little-endian
constexpr uint64_t kMaxCount = 1000000;      // tensors, metadata keys
constexpr uint64_t kMaxDim = uint64_t(1) << 31;
constexpr int kMaxArrayDepth = 4;

// GGUF metadata value types.
enum GType : uint32_t {
    T_U8 = 0, T_I8 = 1, T_U16 = 2, T_I16 = 3, T_U32 = 4, T_I32 = 5, T_F32 = 6, T_BOOL = 7,
    T_STRING = 8, T_ARRAY = 9, T_U64 = 10, T_I64 = 11, T_F64 = 12,
};

const char* gtype_name(uint32_t t) {
    static const char* names[] = {"uint8", "int8",   "uint16", "int16", "uint32", "int32", "float32",
                                  "bool",  "string", "array",  "uint64", "int64", "float64"};
    return t <= T_F64 ? names[t] : "unknown";
}

uint64_t gtype_min_size(uint32_t t) {
    switch (t) {
        case T_U8: case T_I8: case T_BOOL: return 1;
        case T_U16: case T_I16: return 2;
        case T_U32: case T_I32: case T_F32: return 4;
        case T_U64: case T_I64: case T_F64: return 8;
        case T_STRING: return 8;
        case T_ARRAY: return 12;
        default: return 0;
    }
}

bool gtype_is_int(uint32_t t) {
    return t == T_U8 || t == T_I8 || t == T_U16 || t == T_I16 || t == T_U32 || t == T_I32 || t == T_U64 || t == T_I64;
}

struct GValue {
    uint32_t type = 0;
    // scalars
    int64_t i = 0;   // integers and bools (u64 above INT64_MAX are clamped; sizes that large are rejected anyway)
    double f = 0;    // floats (and integers, converted)
    std::string s;
    // arrays (one level; nested arrays are read and counted but not kept)
    uint32_t elem_type = 0;
    uint64_t length = 0;
    std::vector<std::string> strs;
    std::vector<double> nums;
};

struct TensorInfo {
    std::string name;
    std::vector<uint64_t> ne;  // GGUF order: fastest-varying first
    uint32_t type = 0;
    uint64_t offset = 0;       // absolute, in the file
    uint64_t nbytes = 0;
    uint64_t numel = 0;
    uint64_t info_at = 0;      // where its description starts (for messages)

    // Row-major (PyTorch) shape: the GGUF dims reversed.
    std::vector<int64_t> shape() const {
        std::vector<int64_t> s;
        for (auto it = ne.rbegin(); it != ne.rend(); ++it) s.push_back(static_cast<int64_t>(*it));
        return s;
    }
};

std::string shape_str(const std::vector<int64_t>& s) {
    std::string r = "[";
    for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + "]";
}

std::string at_offset(const std::string& path, uint64_t off) { return path + ": offset " + std::to_string(off) + ": "; }

class GgufReader {
public:
    explicit GgufReader(const std::string& path) : file_(path), r_(file_), path_(path) {}

    void parse(const ProgressFn& progress) {
        const uint32_t magic = r_.read<uint32_t>("GGUF magic");
        if (magic != kGgufMagic)
            throw Error(at_offset(path_, 0) + "not a GGUF file (magic is not \"GGUF\")");
        version_ = r_.read<uint32_t>("GGUF version");
        if (version_ != 2 && version_ != 3)
            throw Error(at_offset(path_, 4) + "unsupported GGUF version " + std::to_string(version_) +
                        " (versions 2 and 3 are supported)");
        const uint64_t n_tensors = r_.read<uint64_t>("tensor count");
        const uint64_t n_kv = r_.read<uint64_t>("metadata key count");
        const uint64_t left = file_.size() - r_.pos();
        // Each metadata entry takes at least 13 bytes, each tensor description at least 24.
        if (n_kv > kMaxCount || n_kv * 13 > left)
            throw Error(at_offset(path_, 16) + "metadata key count " + std::to_string(n_kv) +
                        " is absurd for a file of " + std::to_string(file_.size()) + " bytes");
        if (n_tensors > kMaxCount || n_tensors * 24 > left)
            throw Error(at_offset(path_, 8) + "tensor count " + std::to_string(n_tensors) +
                        " is absurd for a file of " + std::to_string(file_.size()) + " bytes");

        for (uint64_t k = 0; k < n_kv; ++k) {
            const uint64_t at = r_.pos();
            std::string key = r_.read_string("metadata key", 1 << 16);
            const uint32_t type = r_.read<uint32_t>("metadata value type");
            GValue v = read_value(type, key, 0);
            if (kv_.count(key)) throw Error(at_offset(path_, at) + "metadata key '" + key + "' appears twice");
            kv_.emplace(std::move(key), std::move(v));
        }
        report_progress(progress, 0.02, "reading GGUF header");

        alignment_ = 32;
        if (has("general.alignment")) {
            const int64_t a = get_int("general.alignment");
            if (a <= 0 || a > (1 << 20) || (a & (a - 1)) != 0)
                throw Error(path_ + ": general.alignment = " + std::to_string(a) + " is not a power of two");
            alignment_ = static_cast<uint64_t>(a);
        }

        tensors_.reserve(n_tensors);
        for (uint64_t t = 0; t < n_tensors; ++t) {
            TensorInfo ti;
            ti.info_at = r_.pos();
            ti.name = r_.read_string("tensor name", 1 << 16);
            const std::string what = "tensor '" + ti.name + "'";
            const uint32_t n_dims = r_.read<uint32_t>("tensor dimension count");
            if (n_dims < 1 || n_dims > 4)
                throw Error(at_offset(path_, ti.info_at) + what + " has " + std::to_string(n_dims) +
                            " dimensions (1 to 4 allowed)");
            ti.numel = 1;
            for (uint32_t d = 0; d < n_dims; ++d) {
                const uint64_t dim_at = r_.pos();
                const uint64_t n = r_.read<uint64_t>("tensor dimension");
                if (n == 0 || n >= kMaxDim)
                    throw Error(at_offset(path_, dim_at) + what + " has dimension " + std::to_string(d) + " = " +
                                std::to_string(n) + ", outside [1, 2^31)");
                if (ti.numel > (uint64_t(1) << 62) / n)
                    throw Error(at_offset(path_, dim_at) + what + " has too many elements");
                ti.numel *= n;
                ti.ne.push_back(n);
            }
            const uint64_t type_at = r_.pos();
            ti.type = r_.read<uint32_t>("tensor type");
            const gguf::GgmlType* gt = gguf::ggml_type(ti.type);
            if (!gt || !gt->decode)
                throw Error(at_offset(path_, type_at) + "unsupported tensor type " + gguf::ggml_type_label(ti.type) +
                            " for tensor " + ti.name + " (supported: " + gguf::supported_ggml_types() + ")");
            // A block never spans two rows.
            if (ti.ne[0] % gt->block != 0)
                throw Error(at_offset(path_, type_at) + what + " of type " + gt->name + " has a row of " +
                            std::to_string(ti.ne[0]) + " elements, not a multiple of the block size " +
                            std::to_string(gt->block));
            ti.nbytes = gguf::ggml_nbytes(*gt, ti.numel, at_offset(path_, type_at) + what);
            ++type_counts_[gt->name];
            const uint64_t off_at = r_.pos();
            ti.offset = r_.read<uint64_t>("tensor data offset");
            if (ti.offset % alignment_ != 0)
                throw Error(at_offset(path_, off_at) + what + " data offset " + std::to_string(ti.offset) +
                            " is not a multiple of the alignment " + std::to_string(alignment_));
            if (index_.count(ti.name)) throw Error(at_offset(path_, ti.info_at) + what + " appears twice");
            index_[ti.name] = tensors_.size();
            tensors_.push_back(std::move(ti));
        }

        // The data section starts at the next multiple of the alignment.
        const uint64_t end = r_.pos();
        const uint64_t data_start = (end + alignment_ - 1) / alignment_ * alignment_;
        if (data_start > file_.size())
            throw Error(at_offset(path_, end) + "the tensor data section (at " + std::to_string(data_start) +
                        ") starts past the end of the file (" + std::to_string(file_.size()) + " bytes); truncated?");
        const uint64_t data_size = file_.size() - data_start;
        for (auto& ti : tensors_) {
            if (ti.offset > data_size || ti.nbytes > data_size - ti.offset)
                throw Error(at_offset(path_, data_start + std::min(ti.offset, data_size)) + "tensor '" + ti.name +
                            "' data [" + std::to_string(ti.offset) + ", +" + std::to_string(ti.nbytes) +
                            ") runs past the end of the data section (" + std::to_string(data_size) +
                            " bytes); the file is truncated or the offset is wrong");
            ti.offset += data_start;
        }
    }

    // ---- metadata access ----
    bool has(const std::string& key) const { return kv_.count(key) != 0; }
    const GValue& get(const std::string& key) const {
        auto it = kv_.find(key);
        if (it == kv_.end()) throw Error(path_ + ": missing metadata key '" + key + "'");
        return it->second;
    }
    int64_t get_int(const std::string& key) const {
        const GValue& v = get(key);
        if (!gtype_is_int(v.type))
            throw Error(path_ + ": metadata key '" + key + "' has type " + gtype_name(v.type) +
                        (v.type == T_ARRAY ? " (per-layer values are not supported)" : "") + ", expected an integer");
        return v.i;
    }
    int64_t get_int(const std::string& key, int64_t def) const { return has(key) ? get_int(key) : def; }
    bool get_bool(const std::string& key, bool def) const {
        if (!has(key)) return def;
        const GValue& v = get(key);
        if (v.type != T_BOOL)
            throw Error(path_ + ": metadata key '" + key + "' has type " + gtype_name(v.type) + ", expected a bool");
        return v.i != 0;
    }
    double get_float(const std::string& key, double def) const {
        if (!has(key)) return def;
        const GValue& v = get(key);
        if (v.type != T_F32 && v.type != T_F64 && !gtype_is_int(v.type))
            throw Error(path_ + ": metadata key '" + key + "' has type " + gtype_name(v.type) + ", expected a number");
        return v.f;
    }
    std::string get_str(const std::string& key) const {
        const GValue& v = get(key);
        if (v.type != T_STRING)
            throw Error(path_ + ": metadata key '" + key + "' has type " + gtype_name(v.type) + ", expected a string");
        return v.s;
    }
    const GValue& get_array(const std::string& key, uint32_t elem_type, bool numeric_ok = false) const {
        const GValue& v = get(key);
        const bool ok = v.type == T_ARRAY && (v.elem_type == elem_type ||
                                              (numeric_ok && v.elem_type != T_STRING && v.elem_type != T_ARRAY));
        if (!ok)
            throw Error(path_ + ": metadata key '" + key + "' is not an array of " + gtype_name(elem_type));
        return v;
    }

    // ---- tensors ----
    const TensorInfo* find(const std::string& name) const {
        auto it = index_.find(name);
        return it == index_.end() ? nullptr : &tensors_[it->second];
    }
    size_t tensor_count() const { return tensors_.size(); }
    const std::vector<TensorInfo>& tensors() const { return tensors_; }

    // A float32 CPU tensor (rows, cols) from the data, dequantized.
    at::Tensor load(const TensorInfo& ti) const {
        const uint8_t* p = file_.data() + ti.offset;
        const std::vector<int64_t> shape = ti.shape();
        switch (ti.type) {
            case 0: {
                at::Tensor t = at::empty(shape, at::kFloat);
                std::memcpy(t.data_ptr(), p, ti.nbytes);
                return t;
            }
            case 1:
            case 30: {
                at::Tensor raw = at::empty(shape, ti.type == 1 ? at::kHalf : at::kBFloat16);
                std::memcpy(raw.data_ptr(), p, ti.nbytes);
                return raw.to(at::kFloat);
            }
            default: {
                at::Tensor t = at::empty(shape, at::kFloat);
                gguf::dequantize(ti.type, p, ti.nbytes, ti.numel, t.data_ptr<float>(),
                                 at_offset(path_, ti.offset) + "tensor '" + ti.name + "'");
                return t;
            }
        }
    }

    // The tensor types in the file, most frequent first: "Q4_1 x 210, F32 x 61, Q8_0 x 1".
    std::string type_summary() const {
        std::vector<std::pair<std::string, int>> v(type_counts_.begin(), type_counts_.end());
        std::stable_sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
        std::string s;
        for (const auto& [name, n] : v) s += (s.empty() ? "" : ", ") + name + " x " + std::to_string(n);
        return s;
    }

    const std::string& path() const { return path_; }
    uint32_t version() const { return version_; }

private:
    GValue read_value(uint32_t type, const std::string& key, int depth) {
        GValue v;
        v.type = type;
        const uint64_t at = r_.pos();
        const char* what = "metadata value";
        switch (type) {
            case T_U8: v.i = r_.read<uint8_t>(what); break;
            case T_I8: v.i = r_.read<int8_t>(what); break;
            case T_U16: v.i = r_.read<uint16_t>(what); break;
            case T_I16: v.i = r_.read<int16_t>(what); break;
            case T_U32: v.i = r_.read<uint32_t>(what); break;
            case T_I32: v.i = r_.read<int32_t>(what); break;
            case T_U64: {
                const uint64_t u = r_.read<uint64_t>(what);
                v.i = u > uint64_t(INT64_MAX) ? INT64_MAX : static_cast<int64_t>(u);
                break;
            }
            case T_I64: v.i = r_.read<int64_t>(what); break;
            case T_F32: v.f = r_.read<float>(what); break;
            case T_F64: v.f = r_.read<double>(what); break;
            case T_BOOL: {
                const uint8_t b = r_.read<uint8_t>(what);
                if (b > 1)
                    throw Error(at_offset(path_, at) + "metadata key '" + key + "': bool value " + std::to_string(b));
                v.i = b;
                break;
            }
            case T_STRING: v.s = r_.read_string("metadata string", file_.size()); break;
            case T_ARRAY: {
                if (depth >= kMaxArrayDepth)
                    throw Error(at_offset(path_, at) + "metadata key '" + key + "': arrays nested too deeply");
                v.elem_type = r_.read<uint32_t>("array element type");
                v.length = r_.read<uint64_t>("array length");
                const uint64_t min = gtype_min_size(v.elem_type);
                if (min == 0)
                    throw Error(at_offset(path_, at) + "metadata key '" + key + "': unknown array element type " +
                                std::to_string(v.elem_type));
                const uint64_t left = file_.size() - r_.pos();
                if (v.length > left / min)
                    throw Error(at_offset(path_, at) + "metadata key '" + key + "': array of " +
                                std::to_string(v.length) + " " + gtype_name(v.elem_type) +
                                " values cannot fit in the rest of the file (" + std::to_string(left) + " bytes)");
                if (v.elem_type == T_STRING) v.strs.reserve(v.length);
                else if (v.elem_type != T_ARRAY) v.nums.reserve(v.length);
                for (uint64_t n = 0; n < v.length; ++n) {
                    GValue e = read_value(v.elem_type, key, depth + 1);
                    if (v.elem_type == T_STRING) v.strs.push_back(std::move(e.s));
                    else if (v.elem_type != T_ARRAY) v.nums.push_back(e.type == T_F32 || e.type == T_F64 ? e.f : double(e.i));
                }
                break;
            }
            default:
                throw Error(at_offset(path_, at) + "metadata key '" + key + "' has unknown value type " +
                            std::to_string(type));
        }
        if (gtype_is_int(type) || type == T_BOOL) v.f = static_cast<double>(v.i);
        return v;
    }

    MappedFile file_;
    ByteReader r_;
    std::string path_;
    uint32_t version_ = 0;
    uint64_t alignment_ = 32;
    std::map<std::string, GValue> kv_;
    std::vector<TensorInfo> tensors_;
    std::map<std::string, size_t> index_;
    std::map<std::string, int> type_counts_;
};

std::shared_ptr<const Tokenizer> tokenizer_from_gguf(const GgufReader& g, int64_t vocab) {
    const std::string& path = g.path();
    if (!g.has("tokenizer.ggml.model"))
        throw Error(path + ": no tokenizer in the file (metadata key 'tokenizer.ggml.model' is missing); "
                           "pass a tokenizer file");
    const std::string kind = g.get_str("tokenizer.ggml.model");
    const GValue& tokens = g.get_array("tokenizer.ggml.tokens", T_STRING);
    auto id = [&](const char* key, int64_t def) -> int32_t {
        const int64_t v = g.get_int(key, def);
        // -1 and 0xFFFFFFFF mean "none"; any other id outside the vocabulary is an error.
        if (v == -1 || v == 0xFFFFFFFFLL) return -1;
        if (v < 0 || v >= static_cast<int64_t>(tokens.strs.size()))
            throw Error(path + ": metadata " + key + " = " + std::to_string(v) + " is outside the vocabulary (" +
                        std::to_string(tokens.strs.size()) + " tokens)");
        return static_cast<int32_t>(v);
    };
    if (tokens.strs.empty()) throw Error(path + ": tokenizer.ggml.tokens is empty");
    // tokenizer.ggml.token_type, one per token, each a llama.cpp token type (1 normal ... 6 byte; 0 undefined).
    auto token_types = [&]() {
        std::vector<int32_t> types;
        if (!g.has("tokenizer.ggml.token_type")) return types;
        const GValue& t = g.get_array("tokenizer.ggml.token_type", T_I32, true);
        if (t.nums.size() != tokens.strs.size())
            throw Error(path + ": tokenizer.ggml.token_type has " + std::to_string(t.nums.size()) + " entries for " +
                        std::to_string(tokens.strs.size()) + " tokens");
        for (size_t i = 0; i < t.nums.size(); ++i) {
            const double d = t.nums[i];
            if (!(d >= 0 && d <= 6))
                throw Error(path + ": tokenizer.ggml.token_type[" + std::to_string(i) + "] = " + std::to_string(d) +
                            " is not a token type (0-6)");
            types.push_back(static_cast<int32_t>(d));
        }
        return types;
    };
    if (static_cast<int64_t>(tokens.strs.size()) > vocab)
        throw Error(path + ": the tokenizer has " + std::to_string(tokens.strs.size()) +
                    " tokens but the embedding only " + std::to_string(vocab) + " rows");
    if (kind == "llama") {
        std::vector<float> scores;
        if (g.has("tokenizer.ggml.scores")) {
            const GValue& s = g.get_array("tokenizer.ggml.scores", T_F32, true);
            if (s.nums.size() != tokens.strs.size())
                throw Error(path + ": tokenizer.ggml.scores has " + std::to_string(s.nums.size()) + " entries for " +
                            std::to_string(tokens.strs.size()) + " tokens");
            scores.assign(s.nums.begin(), s.nums.end());
        } else {
            scores.assign(tokens.strs.size(), 0.0f);
        }
        std::vector<int32_t> types = token_types();
        return make_score_bpe_tokenizer(tokens.strs, std::move(scores), std::move(types),
                                        id("tokenizer.ggml.bos_token_id", 1), id("tokenizer.ggml.eos_token_id", 2),
                                        id("tokenizer.ggml.unknown_token_id", 0));
    }
    if (kind == "gpt2") {
        std::vector<std::string> merges;
        if (g.has("tokenizer.ggml.merges")) merges = g.get_array("tokenizer.ggml.merges", T_STRING).strs;
        const std::string pre = g.has("tokenizer.ggml.pre") ? g.get_str("tokenizer.ggml.pre") : "default";
        std::vector<int32_t> types = token_types();
        // The engine's <bos> is the token every document (and every cushion) starts with. A tokenizer that adds no
        // BOS (tokenizer.ggml.add_bos_token = false: SmolLM2, Qwen2, GPT-2) has none of its own; its documents then
        // start with the separator its pretraining put between documents, <|endoftext|> where the vocabulary has it
        // as a control token, as for such a tokenizer.json (core/byte_bpe_tokenizer.cpp), else with
        // tokenizer.ggml.bos_token_id. SmolLM2-Instruct's bos_token_id is <|im_start|>, its chat turns' opener.
        int32_t bos = id("tokenizer.ggml.bos_token_id", -1);
        if (!g.get_bool("tokenizer.ggml.add_bos_token", true)) {
            for (size_t i = 0; i < tokens.strs.size(); ++i)
                if (tokens.strs[i] == "<|endoftext|>" && (types.empty() || types[i] == 3)) {
                    bos = static_cast<int32_t>(i);
                    break;
                }
        }
        try {
            return make_byte_bpe_tokenizer(tokens.strs, std::move(merges), pre, bos,
                                           id("tokenizer.ggml.eos_token_id", -1), std::move(types));
        } catch (const Cancelled&) {
            throw;
        } catch (const Error& e) {
            throw Error(path + ": tokenizer (tokenizer.ggml.model = gpt2, tokenizer.ggml.pre = '" + pre + "'): " +
                        e.what() + "; pass a tokenizer file (--tokenizer tokenizer.json)");
        }
    }
    throw Error(path + ": unsupported tokenizer model '" + kind +
                "' (tokenizer.ggml.model; supported: llama, gpt2); pass a tokenizer file");
}

}  // namespace

std::shared_ptr<Model> load_gguf(const std::string& path, const LoadOptions& opts) {
    report_progress(opts.progress, 0.0, "reading GGUF header");
    GgufReader g(path);
    g.parse(opts.progress);

    auto model = std::make_shared<Model>();
    model->source = path;
    model->format = "gguf";
    model->source_types = g.type_summary();
    ModelConfig& c = model->config;

    // ---- architecture and hyperparameters ----
    const std::string arch = g.get_str("general.architecture");
    if (arch == "llama" || arch == "mistral") {
        c.arch = Arch::Llama;
    } else if (arch == "qwen2") {
        c.arch = Arch::Llama;
        c.qkv_bias = true;
    } else {
        throw Error(path + ": unsupported architecture '" + arch +
                    "' (general.architecture; supported: llama, mistral, qwen2)");
    }
    c.arch_name = arch;
    auto sane = [&](const std::string& key, int64_t v) {
        if (v <= 0 || v >= (int64_t(1) << 31))
            throw Error(path + ": metadata " + key + " = " + std::to_string(v) + " is out of range");
        return v;
    };
    auto req = [&](const char* suffix) { return sane(arch + suffix, g.get_int(arch + suffix)); };
    c.dim = req(".embedding_length");
    c.hidden_dim = req(".feed_forward_length");
    c.n_layers = req(".block_count");
    c.n_heads = req(".attention.head_count");
    c.n_kv_heads = g.has(arch + ".attention.head_count_kv") ? req(".attention.head_count_kv") : c.n_heads;
    c.max_seq_len = req(".context_length");
    c.rope_theta = g.get_float(arch + ".rope.freq_base", 10000.0);
    c.norm_eps = g.get_float(arch + ".attention.layer_norm_rms_epsilon", 1e-5);
    if (g.has(arch + ".attention.key_length")) {
        c.head_dim = req(".attention.key_length");
    } else {
        if (c.dim % c.n_heads != 0)
            throw Error(path + ": embedding_length " + std::to_string(c.dim) + " is not a multiple of head_count " +
                        std::to_string(c.n_heads));
        c.head_dim = c.dim / c.n_heads;
    }
    if (g.has(arch + ".attention.value_length") && g.get_int(arch + ".attention.value_length") != c.head_dim)
        throw Error(path + ": attention.value_length differs from key_length; not supported");
    if (g.has(arch + ".rope.dimension_count") && g.get_int(arch + ".rope.dimension_count") != c.head_dim)
        throw Error(path + ": " + arch + ".rope.dimension_count = " +
                    std::to_string(g.get_int(arch + ".rope.dimension_count")) +
                    " differs from the head size " + std::to_string(c.head_dim) + "; partial RoPE is not supported");
    if (g.has(arch + ".rope.scaling.type")) {
        const GValue& v = g.get(arch + ".rope.scaling.type");
        if (v.type == T_STRING && v.s != "none")
            model->warnings.push_back("RoPE scaling '" + v.s + "' in " + path + " is ignored");
    }

    const TensorInfo* emb = g.find("token_embd.weight");
    if (!emb) throw Error(path + ": missing tensor token_embd.weight");
    if (emb->ne.size() != 2) throw Error(path + ": tensor token_embd.weight is not a matrix");
    c.vocab_size = static_cast<int64_t>(emb->ne[1]);
    c.tied_embeddings = g.find("output.weight") == nullptr;
    c.validate(path);

    // ---- tensors ----
    const int64_t C = c.dim, H = c.hidden_dim, Q = c.n_heads * c.head_dim, KV = c.kv_dim(), V = c.vocab_size;
    const size_t total = static_cast<size_t>(3 + (c.qkv_bias ? 12 : 9) * c.n_layers);
    size_t done = 0;
    std::set<std::string> taken;
    auto take = [&](const std::string& name, std::vector<int64_t> expect, bool required = true) -> at::Tensor {
        const TensorInfo* ti = g.find(name);
        taken.insert(name);
        if (!ti) {
            if (required) throw Error(path + ": missing tensor " + name);
            return at::Tensor();
        }
        if (ti->shape() != expect)
            throw Error(path + ": tensor " + name + " has shape " + shape_str(ti->shape()) + " (GGUF dims reversed), expected " +
                        shape_str(expect) + " from the metadata");
        at::Tensor t = g.load(*ti);
        report_progress(opts.progress, 0.05 + 0.9 * double(++done) / double(total), "loading " + name);
        return t;
    };
    ModelWeights& w = model->weights;
    w.tok_emb = take("token_embd.weight", {V, C});
    w.final_norm = take("output_norm.weight", {C});
    w.lm_head = c.tied_embeddings ? w.tok_emb : take("output.weight", {V, C});
    // llama.cpp's "llama" graph uses interleaved RoPE pairs (its converter permutes Hugging Face Q/K rows);
    // "qwen2" uses NEOX (rotate-half) RoPE and is stored unpermuted.
    const bool permute = arch != "qwen2";
    w.layers.resize(static_cast<size_t>(c.n_layers));
    for (int64_t l = 0; l < c.n_layers; ++l) {
        LayerWeights& L = w.layers[static_cast<size_t>(l)];
        const std::string p = "blk." + std::to_string(l) + ".";
        L.attn_norm = take(p + "attn_norm.weight", {C});
        L.wq = take(p + "attn_q.weight", {Q, C});
        L.wk = take(p + "attn_k.weight", {KV, C});
        L.wv = take(p + "attn_v.weight", {KV, C});
        L.wo = take(p + "attn_output.weight", {C, Q});
        if (c.qkv_bias) {
            L.bq = take(p + "attn_q.bias", {Q});
            L.bk = take(p + "attn_k.bias", {KV});
            L.bv = take(p + "attn_v.bias", {KV});
        }
        L.ffn_norm = take(p + "ffn_norm.weight", {C});
        L.w_gate = take(p + "ffn_gate.weight", {H, C});
        L.w_down = take(p + "ffn_down.weight", {C, H});
        L.w_up = take(p + "ffn_up.weight", {H, C});
        if (permute) {
            L.wq = interleaved_to_half(L.wq, c.n_heads);
            L.wk = interleaved_to_half(L.wk, c.n_kv_heads);
            if (L.bq.defined()) L.bq = interleaved_to_half(L.bq, c.n_heads);
            if (L.bk.defined()) L.bk = interleaved_to_half(L.bk, c.n_kv_heads);
        }
    }
    // Every tensor of the file is one the metadata's architecture reads: extra blocks (block_count = 4 with blk.4.*
    // present ran 4 layers of a 5-layer model) or unknown tensors mean the metadata does not describe the file.
    for (const TensorInfo& ti : g.tensors()) {
        if (taken.count(ti.name)) continue;
        if (ti.name == "rope_freqs.weight") {  // Llama 3.1's RoPE frequency factors: the scaling is ignored (above)
            model->warnings.push_back("tensor rope_freqs.weight in " + path + " (RoPE scaling factors) is ignored");
            continue;
        }
        throw Error(path + ": tensor " + ti.name + " is not part of the " + arch + " model the metadata describes (" +
                    arch + ".block_count = " + std::to_string(c.n_layers) + (c.qkv_bias ? ", q/k/v biases" : "") +
                    "); the file's metadata and tensors disagree");
    }
    check_shapes(c, w, path);
    note_non_finite_weights(*model, path, gguf_tensor_name);

    // ---- tokenizer ----
    report_progress(opts.progress, 0.97, "loading tokenizer");
    model->tokenizer = opts.tokenizer_path.empty() ? tokenizer_from_gguf(g, V) : load_tokenizer_file(opts.tokenizer_path, static_cast<int32_t>(V));
    report_progress(opts.progress, 1.0, "loaded");
    return model;
}

}  // namespace cushion
