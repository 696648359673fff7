#include "model/model_config.h"

#include <cmath>

#include <sstream>

#include "base/error.h"

namespace cushion {

namespace {
constexpr int64_t kMaxDim = 1 << 17;         // 131072: larger than any released model's hidden size
constexpr int64_t kMaxVocab = 1 << 22;       // 4M tokens
constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxSeq = 1 << 24;

void check_range(const std::string& source, const char* field, int64_t v, int64_t lo, int64_t hi) {
    if (v < lo || v > hi) {
        std::ostringstream os;
        os << source << ": " << field << " = " << v << " is out of range [" << lo << ", " << hi << "]";
        throw Error(os.str());
    }
}
}  // namespace

void ModelConfig::validate(const std::string& source) const {
    check_range(source, "dim", dim, 1, kMaxDim);
    check_range(source, "hidden_dim", hidden_dim, 1, 8 * kMaxDim);
    check_range(source, "n_layers", n_layers, 1, kMaxLayers);
    check_range(source, "n_heads", n_heads, 1, dim);
    check_range(source, "n_kv_heads", n_kv_heads, 1, n_heads);
    check_range(source, "vocab_size", vocab_size, 1, kMaxVocab);
    check_range(source, "max_seq_len", max_seq_len, 1, kMaxSeq);
    check_range(source, "head_dim", head_dim, 1, dim);
    if (n_heads % n_kv_heads != 0)
        throw Error(source + ": n_heads (" + std::to_string(n_heads) + ") is not a multiple of n_kv_heads (" +
                    std::to_string(n_kv_heads) + ")");
    if (arch == Arch::Llama && head_dim % 2 != 0)
        throw Error(source + ": head_dim " + std::to_string(head_dim) + " is odd; RoPE needs an even head size");
    if (!(norm_eps > 0 && norm_eps < 1)) throw Error(source + ": norm epsilon " + std::to_string(norm_eps) + " is not in (0, 1)");
    if (!(rope_theta > 0) || !std::isfinite(rope_theta))
        throw Error(source + ": rope_theta " + std::to_string(rope_theta) + " must be positive and finite");
    if (rope_type != "default" && rope_type != "linear" && rope_type != "llama3")
        throw Error(source + ": RoPE type '" + rope_type + "' is not supported (default, linear, llama3)");
    if (rope_type != "default" && !(rope_factor > 0))
        throw Error(source + ": RoPE scaling factor " + std::to_string(rope_factor) + " must be positive");
    if (rope_type == "llama3" && !(rope_low_freq_factor > 0 && rope_high_freq_factor > rope_low_freq_factor &&
                                   rope_original_max_pos > 0))
        throw Error(source + ": llama3 RoPE scaling needs 0 < low_freq_factor < high_freq_factor and a positive "
                             "original_max_position_embeddings");
}

int64_t ModelConfig::parameter_count() const {
    const int64_t C = dim, H = hidden_dim, Q = n_heads * head_dim, KV = kv_dim();
    int64_t per_layer = C * Q + 2 * C * KV + Q * C + 2 * C;
    per_layer += arch == Arch::Llama ? 3 * C * H : 2 * C * H + H + C + 2 * C + Q + 2 * KV + C;
    if (qkv_bias) per_layer += Q + 2 * KV;
    int64_t total = n_layers * per_layer + vocab_size * C + C;
    if (!tied_embeddings) total += vocab_size * C;
    if (arch == Arch::OPT) total += (max_seq_len + pos_offset) * C + C;
    return total;
}

std::string ModelConfig::describe() const {
    std::ostringstream os;
    os << arch_name << ": dim " << dim << ", hidden " << hidden_dim << ", layers " << n_layers << ", heads "
       << n_heads << " (kv " << n_kv_heads << ", head_dim " << head_dim << "), vocab " << vocab_size
       << ", max_seq " << max_seq_len;
    if (arch == Arch::Llama) os << ", rope_theta " << rope_theta << ", norm_eps " << norm_eps;
    if (arch == Arch::Llama && rope_type == "linear") os << ", rope linear x" << rope_factor;
    if (arch == Arch::Llama && rope_type == "llama3")
        os << ", rope llama3 (factor " << rope_factor << ", low " << rope_low_freq_factor << ", high "
           << rope_high_freq_factor << ", original " << rope_original_max_pos << ")";
    if (tied_embeddings) os << ", tied embeddings";
    if (qkv_bias) os << ", qkv bias";
    return os.str();
}

}  // namespace cushion
