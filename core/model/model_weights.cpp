#include "model/model_weights.h"

#include <ATen/ATen.h>

#include <map>
#include <sstream>

#include "base/error.h"

namespace cushion {

namespace {

template <typename W, typename Fn>
void visit_slots(const ModelConfig& cfg, W& w, const Fn& fn) {
    const int64_t C = cfg.dim, H = cfg.hidden_dim, Q = cfg.n_heads * cfg.head_dim, KV = cfg.kv_dim(), V = cfg.vocab_size;
    const bool opt = cfg.arch == Arch::OPT;
    auto f = [&](const std::string& name, auto& t, std::vector<int64_t> shape, bool stored = true) {
        fn(WeightSlot{name, std::move(shape), stored}, t);
    };
    if (opt) {
        f("model.decoder.embed_tokens.weight", w.tok_emb, {V, C});
        f("model.decoder.embed_positions.weight", w.pos_emb, {cfg.max_seq_len + cfg.pos_offset, C});
        for (size_t i = 0; i < w.layers.size(); ++i) {
            auto& L = w.layers[i];
            const std::string p = "model.decoder.layers." + std::to_string(i) + ".";
            f(p + "self_attn_layer_norm.weight", L.attn_norm, {C});
            f(p + "self_attn_layer_norm.bias", L.attn_norm_bias, {C});
            f(p + "self_attn.q_proj.weight", L.wq, {Q, C});
            f(p + "self_attn.q_proj.bias", L.bq, {Q});
            f(p + "self_attn.k_proj.weight", L.wk, {KV, C});
            f(p + "self_attn.k_proj.bias", L.bk, {KV});
            f(p + "self_attn.v_proj.weight", L.wv, {KV, C});
            f(p + "self_attn.v_proj.bias", L.bv, {KV});
            f(p + "self_attn.out_proj.weight", L.wo, {C, Q});
            f(p + "self_attn.out_proj.bias", L.bo, {C});
            f(p + "final_layer_norm.weight", L.ffn_norm, {C});
            f(p + "final_layer_norm.bias", L.ffn_norm_bias, {C});
            f(p + "fc1.weight", L.w_up, {H, C});
            f(p + "fc1.bias", L.b_up, {H});
            f(p + "fc2.weight", L.w_down, {C, H});
            f(p + "fc2.bias", L.b_down, {C});
        }
        f("model.decoder.final_layer_norm.weight", w.final_norm, {C});
        f("model.decoder.final_layer_norm.bias", w.final_norm_bias, {C});
    } else {
        f("model.embed_tokens.weight", w.tok_emb, {V, C});
        for (size_t i = 0; i < w.layers.size(); ++i) {
            auto& L = w.layers[i];
            const std::string p = "model.layers." + std::to_string(i) + ".";
            f(p + "input_layernorm.weight", L.attn_norm, {C});
            f(p + "self_attn.q_proj.weight", L.wq, {Q, C});
            f(p + "self_attn.q_proj.bias", L.bq, {Q}, cfg.qkv_bias);
            f(p + "self_attn.k_proj.weight", L.wk, {KV, C});
            f(p + "self_attn.k_proj.bias", L.bk, {KV}, cfg.qkv_bias);
            f(p + "self_attn.v_proj.weight", L.wv, {KV, C});
            f(p + "self_attn.v_proj.bias", L.bv, {KV}, cfg.qkv_bias);
            f(p + "self_attn.o_proj.weight", L.wo, {C, Q});
            f(p + "self_attn.o_proj.bias", L.bo, {C}, false);
            f(p + "post_attention_layernorm.weight", L.ffn_norm, {C});
            f(p + "mlp.gate_proj.weight", L.w_gate, {H, C});
            f(p + "mlp.up_proj.weight", L.w_up, {H, C});
            f(p + "mlp.down_proj.weight", L.w_down, {C, H});
        }
        f("model.norm.weight", w.final_norm, {C});
    }
    if (!cfg.tied_embeddings) f("lm_head.weight", w.lm_head, {V, C});
}

template <typename W, typename Fn>
void visit(const ModelConfig& cfg, W& w, const Fn& fn) {
    visit_slots(cfg, w, [&](const WeightSlot& s, auto& t) {
        if (t.defined()) fn(s.name, t);
    });
}

}  // namespace

void ModelWeights::for_each(const ModelConfig& cfg, const std::function<void(const std::string&, at::Tensor&)>& fn) {
    visit(cfg, *this, fn);
}
void ModelWeights::for_each_slot(const ModelConfig& cfg,
                                 const std::function<void(const WeightSlot&, at::Tensor&)>& fn) {
    visit_slots(cfg, *this, fn);
}
void ModelWeights::for_each(const ModelConfig& cfg,
                            const std::function<void(const std::string&, const at::Tensor&)>& fn) const {
    visit(cfg, *this, fn);
}

at::Tensor interleaved_to_half(const at::Tensor& w, int64_t n_heads) {
    const bool vec = w.dim() == 1;
    at::Tensor m = vec ? w.unsqueeze(1) : w;
    const int64_t rows = m.size(0), in = m.size(1), hd = rows / n_heads;
    at::Tensor r = m.reshape({n_heads, hd / 2, 2, in}).transpose(1, 2).reshape({rows, in}).contiguous();
    return vec ? r.squeeze(1) : r;
}

at::Tensor half_to_interleaved(const at::Tensor& w, int64_t n_heads) {
    const bool vec = w.dim() == 1;
    at::Tensor m = vec ? w.unsqueeze(1) : w;
    const int64_t rows = m.size(0), in = m.size(1), hd = rows / n_heads;
    at::Tensor r = m.reshape({n_heads, 2, hd / 2, in}).transpose(1, 2).reshape({rows, in}).contiguous();
    return vec ? r.squeeze(1) : r;
}

namespace {
std::string shape_str(at::IntArrayRef s) {
    std::ostringstream os;
    os << "[";
    for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
    os << "]";
    return os.str();
}

// names: the Hugging Face name of each tensor (ModelWeights::for_each), so that a message names the tensor as a
// Hugging Face directory or a package stores it, besides what it is ("layer 0 wq").
using Names = std::map<const c10::TensorImpl*, std::string>;
void expect(const Names& names, const std::string& source, const std::string& name, const at::Tensor& t, std::vector<int64_t> shape,
            bool required = true) {
    if (!t.defined()) {
        if (required) throw Error(source + ": tensor " + name + " is missing");
        return;
    }
    if (t.sizes() != at::IntArrayRef(shape)) {
        std::string label = name;
        auto it = names.find(t.unsafeGetTensorImpl());
        if (it != names.end()) label = it->second + " (" + name + ")";
        throw Error(source + ": tensor " + label + " has shape " + shape_str(t.sizes()) + ", expected " +
                    shape_str(shape) + " from the config");
    }
}
}  // namespace

void check_shapes(const ModelConfig& c, const ModelWeights& w, const std::string& source) {
    Names names;
    w.for_each(c, [&](const std::string& name, const at::Tensor& t) { names.emplace(t.unsafeGetTensorImpl(), name); });
    const int64_t C = c.dim, H = c.hidden_dim, Q = c.n_heads * c.head_dim, KV = c.kv_dim(), V = c.vocab_size;
    const bool opt = c.arch == Arch::OPT;
    expect(names, source, "token embedding", w.tok_emb, {V, C});
    expect(names, source, "lm_head", w.lm_head, {V, C});
    expect(names, source, "final norm", w.final_norm, {C});
    if (opt) {
        expect(names, source, "final norm bias", w.final_norm_bias, {C});
        expect(names, source, "position embedding", w.pos_emb, {c.max_seq_len + c.pos_offset, C});
    }
    if ((int64_t)w.layers.size() != c.n_layers)
        throw Error(source + ": found " + std::to_string(w.layers.size()) + " layers, config says " +
                    std::to_string(c.n_layers));
    for (size_t i = 0; i < w.layers.size(); ++i) {
        const auto& L = w.layers[i];
        const std::string p = "layer " + std::to_string(i) + " ";
        expect(names, source, p + "attention norm", L.attn_norm, {C});
        expect(names, source, p + "wq", L.wq, {Q, C});
        expect(names, source, p + "wk", L.wk, {KV, C});
        expect(names, source, p + "wv", L.wv, {KV, C});
        expect(names, source, p + "wo", L.wo, {C, Q});
        expect(names, source, p + "ffn norm", L.ffn_norm, {C});
        expect(names, source, p + "w_up", L.w_up, {H, C});
        expect(names, source, p + "w_down", L.w_down, {C, H});
        expect(names, source, p + "q bias", L.bq, {Q}, opt || c.qkv_bias);
        expect(names, source, p + "k bias", L.bk, {KV}, opt || c.qkv_bias);
        expect(names, source, p + "v bias", L.bv, {KV}, opt || c.qkv_bias);
        expect(names, source, p + "o bias", L.bo, {C}, opt);
        if (opt) {
            expect(names, source, p + "attention norm bias", L.attn_norm_bias, {C});
            expect(names, source, p + "ffn norm bias", L.ffn_norm_bias, {C});
            expect(names, source, p + "fc1 bias", L.b_up, {H});
            expect(names, source, p + "fc2 bias", L.b_down, {C});
        } else {
            expect(names, source, p + "w_gate", L.w_gate, {H, C});
        }
    }
}

std::vector<std::string> non_finite_tensors(const ModelConfig& cfg, const ModelWeights& w) {
    std::vector<std::string> bad;
    w.for_each(cfg, [&](const std::string& name, const at::Tensor& t) {
        if (t.is_floating_point() && !at::isfinite(t).all().item<bool>()) bad.push_back(name);
    });
    return bad;
}

namespace {
// Rows of one tensor: a, b, c consecutive row blocks of the same storage, contiguous, same dtype, device and width.
bool consecutive_rows(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c) {
    for (const at::Tensor* t : {&a, &b, &c})
        if (!t->defined() || !t->is_contiguous() || t->requires_grad() || t->dim() != a.dim() ||
            t->scalar_type() != a.scalar_type() || t->device() != a.device() || !t->has_storage() ||
            (a.dim() == 2 && t->size(1) != a.size(1)) ||
            t->storage().unsafeGetStorageImpl() != a.storage().unsafeGetStorageImpl())
            return false;
    return a.dim() >= 1 && a.dim() <= 2 && b.storage_offset() == a.storage_offset() + a.numel() &&
           c.storage_offset() == b.storage_offset() + b.numel();
}

at::Tensor rows_view(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c) {
    const int64_t n = a.size(0) + b.size(0) + c.size(0);
    if (a.dim() == 1) return a.as_strided({n}, {1}, a.storage_offset());
    return a.as_strided({n, a.size(1)}, {a.size(1), 1}, a.storage_offset());
}

// Packs a, b, c into one tensor and makes them its row blocks (nothing when they already are, or cannot be).
void pack_rows(at::Tensor& a, at::Tensor& b, at::Tensor& c) {
    if (!a.defined() || !b.defined() || !c.defined() || consecutive_rows(a, b, c)) return;
    if (a.dim() != b.dim() || a.dim() != c.dim() || a.dim() < 1 || a.dim() > 2 || a.scalar_type() != b.scalar_type() ||
        a.scalar_type() != c.scalar_type() || a.device() != b.device() || a.device() != c.device() ||
        a.requires_grad() || b.requires_grad() || c.requires_grad() ||
        (a.dim() == 2 && (b.size(1) != a.size(1) || c.size(1) != a.size(1))))
        return;
    const at::Tensor p = at::cat({a, b, c}, 0);
    const int64_t na = a.size(0), nb = b.size(0), nc = c.size(0);
    a = p.narrow(0, 0, na);
    b = p.narrow(0, na, nb);
    c = p.narrow(0, na + nb, nc);
}
}  // namespace

void ModelWeights::pack_qkv() {
    for (LayerWeights& L : layers) {
        if (!L.wq.defined() || !L.wk.defined() || !L.wv.defined()) continue;
        const bool biases = L.bq.defined() || L.bk.defined() || L.bv.defined();
        if (biases && !(L.bq.defined() && L.bk.defined() && L.bv.defined())) continue;  // some but not all: unpacked
        pack_rows(L.wq, L.wk, L.wv);
        if (biases) pack_rows(L.bq, L.bk, L.bv);
    }
}

bool packed_qkv(const LayerWeights& L, at::Tensor* w, at::Tensor* b) {
    if (!consecutive_rows(L.wq, L.wk, L.wv) || L.wq.dim() != 2) return false;
    const bool biases = L.bq.defined() || L.bk.defined() || L.bv.defined();
    if (biases && !consecutive_rows(L.bq, L.bk, L.bv)) return false;
    *w = rows_view(L.wq, L.wk, L.wv);
    *b = biases ? rows_view(L.bq, L.bk, L.bv) : at::Tensor();
    return true;
}

}  // namespace cushion
