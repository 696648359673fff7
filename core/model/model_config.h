// The architecture description shared by every loader: what a model is, independent of its file format.
#pragma once
#include <cstdint>
#include <string>

namespace cushion {

enum class Arch { Llama, OPT };

struct ModelConfig {
    Arch arch = Arch::Llama;
    std::string arch_name = "llama";  // as found in the file ("llama", "mistral", "qwen2", "opt", ...)
    int64_t dim = 0;                  // hidden size
    int64_t hidden_dim = 0;           // feed-forward size
    int64_t n_layers = 0;
    int64_t n_heads = 0;
    int64_t n_kv_heads = 0;
    int64_t vocab_size = 0;
    int64_t max_seq_len = 0;
    int64_t head_dim = 0;             // usually dim / n_heads
    double rope_theta = 10000.0;
    // RoPE scaling (Hugging Face rope_parameters / rope_scaling): "default" (none), "linear" (inverse
    // frequencies / rope_factor) or "llama3" (Llama 3.1's per-frequency smoothing, as transformers computes it).
    std::string rope_type = "default";
    double rope_factor = 1.0;
    double rope_low_freq_factor = 1.0;
    double rope_high_freq_factor = 4.0;
    int64_t rope_original_max_pos = 0;  // llama3: original_max_position_embeddings
    double norm_eps = 1e-5;
    bool tied_embeddings = false;
    bool qkv_bias = false;            // Qwen2
    // OPT specifics
    bool do_layer_norm_before = true;
    int64_t pos_offset = 2;           // OPT learned positions start at index 2

    int64_t kv_dim() const { return n_kv_heads * head_dim; }
    // Throws cushion::Error naming `source` if any size is absent, absurd (e.g. dim = 2^40) or inconsistent.
    void validate(const std::string& source) const;
    // Number of parameters implied by the config (for sizes shown to users and allocation checks).
    int64_t parameter_count() const;
    std::string describe() const;  // one line, for `cushion info`
};

}  // namespace cushion
