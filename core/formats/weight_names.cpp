#include "formats/weight_names.h"

#include <ATen/ATen.h>

#include <regex>
#include <utility>

#include "model/model.h"
#include "model/non_finite.h"

namespace cushion {

namespace {

// Splits "model.layers.<n>.<rest>" into n and rest; false for the other names.
bool layer_part(const std::string& hf, std::string* layer, std::string* rest) {
    static const std::regex re(R"(^model\.layers\.(\d+)\.(.+)$)");
    std::smatch m;
    if (!std::regex_match(hf, m, re)) return false;
    *layer = m[1].str();
    *rest = m[2].str();
    return true;
}

}  // namespace

std::string gguf_tensor_name(const std::string& hf) {
    static const std::pair<const char*, const char*> top[] = {
        {"model.embed_tokens.weight", "token_embd.weight"},
        {"model.norm.weight", "output_norm.weight"},
        {"lm_head.weight", "output.weight"}};
    static const std::pair<const char*, const char*> block[] = {
        {"input_layernorm.weight", "attn_norm.weight"},
        {"self_attn.q_proj.weight", "attn_q.weight"},       {"self_attn.q_proj.bias", "attn_q.bias"},
        {"self_attn.k_proj.weight", "attn_k.weight"},       {"self_attn.k_proj.bias", "attn_k.bias"},
        {"self_attn.v_proj.weight", "attn_v.weight"},       {"self_attn.v_proj.bias", "attn_v.bias"},
        {"self_attn.o_proj.weight", "attn_output.weight"},  {"post_attention_layernorm.weight", "ffn_norm.weight"},
        {"mlp.gate_proj.weight", "ffn_gate.weight"},        {"mlp.up_proj.weight", "ffn_up.weight"},
        {"mlp.down_proj.weight", "ffn_down.weight"}};
    for (const auto& [from, to] : top)
        if (hf == from) return to;
    std::string layer, rest;
    if (layer_part(hf, &layer, &rest))
        for (const auto& [from, to] : block)
            if (rest == from) return "blk." + layer + "." + to;
    return hf;
}

std::string llama2c_tensor_name(const std::string& hf) {
    static const std::pair<const char*, const char*> top[] = {
        {"model.embed_tokens.weight", "token_embedding_table"},
        {"model.norm.weight", "rms_final_weight"},
        {"lm_head.weight", "wcls"}};
    static const std::pair<const char*, const char*> block[] = {
        {"input_layernorm.weight", "rms_att_weight"}, {"self_attn.q_proj.weight", "wq"},
        {"self_attn.k_proj.weight", "wk"},            {"self_attn.v_proj.weight", "wv"},
        {"self_attn.o_proj.weight", "wo"},            {"post_attention_layernorm.weight", "rms_ffn_weight"},
        {"mlp.gate_proj.weight", "w1"},               {"mlp.down_proj.weight", "w2"},
        {"mlp.up_proj.weight", "w3"}};
    for (const auto& [from, to] : top)
        if (hf == from) return to;
    std::string layer, rest;
    if (layer_part(hf, &layer, &rest))
        for (const auto& [from, to] : block)
            if (rest == from) return std::string(to) + "[" + layer + "]";
    return hf;
}

void note_non_finite_weights(Model& m, const std::string& path,
                             const std::function<std::string(const std::string& hf_name)>& file_name) {
    m.weights.for_each(m.config, [&](const std::string& name, const at::Tensor& t) {
        if (!t.is_floating_point() || at::isfinite(t).all().item<bool>()) return;
        const std::string d = describe_non_finite_weight(name, file_name ? file_name(name) : name, t);
        m.non_finite_weights.push_back(d);
        m.warnings.push_back(path + ": tensor " + d + " contains NaN or Inf");
    });
}

}  // namespace cushion
