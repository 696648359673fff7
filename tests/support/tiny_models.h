// Tiny random models built in tests: the same weights as a cushion::Model and as a naive::Model.
#pragma once
#include <ATen/ATen.h>

#include <memory>
#include <random>

#include "model/model.h"
#include "numerics/naive_reference.h"
#include "tokenizer/tokenizer.h"

namespace cushion::test {

struct TinySpec {
    bool opt = false;
    int dim = 16, hidden = 24, layers = 2, heads = 4, kv_heads = 2, vocab = 11, max_seq = 64;
    bool qkv_bias = false, tied = false;
    double theta = 10000.0;
    uint64_t seed = 1;
};

inline naive::Mat rand_mat(std::mt19937_64& g, int rows, int cols, double scale) {
    std::normal_distribution<double> nd(0.0, scale);
    naive::Mat m(rows, naive::Vec(cols));
    for (auto& r : m)
        for (auto& v : r) v = nd(g);
    return m;
}
inline naive::Vec rand_vec(std::mt19937_64& g, int n, double mean, double scale) {
    std::normal_distribution<double> nd(mean, scale);
    naive::Vec v(n);
    for (auto& x : v) x = nd(g);
    return v;
}
inline at::Tensor to_tensor(const naive::Mat& m) {
    at::Tensor t = at::empty({(int64_t)m.size(), (int64_t)m[0].size()}, at::kDouble);
    for (size_t i = 0; i < m.size(); ++i)
        for (size_t j = 0; j < m[0].size(); ++j) t[i][j] = m[i][j];
    return t.to(at::kFloat);
}
inline at::Tensor to_tensor(const naive::Vec& v) {
    if (v.empty()) return at::Tensor();
    return at::tensor(std::vector<double>(v.begin(), v.end()), at::kDouble).to(at::kFloat);
}
// Rounds the naive model's weights to float32 so both see identical parameters.
inline void round_to_float(naive::Mat& m) {
    for (auto& r : m)
        for (auto& v : r) v = static_cast<float>(v);
}
inline void round_to_float(naive::Vec& v) {
    for (auto& x : v) x = static_cast<float>(x);
}

// A tokenizer over a vocabulary "<unk>", "<s>", "</s>", "a", "b", ... for tiny models.
inline std::shared_ptr<Tokenizer> tiny_tokenizer(int vocab) {
    std::vector<std::string> pieces{"<unk>", "<s>", "</s>"};
    std::vector<float> scores{0, 0, 0};
    for (int i = 3; i < vocab; ++i) {
        pieces.push_back(std::string(1, char('a' + (i - 3) % 26)) + (i >= 29 ? std::to_string(i) : ""));
        scores.push_back(-float(i));
    }
    return make_score_bpe_tokenizer(pieces, scores, {}, 1, 2, 0);
}

inline std::pair<std::shared_ptr<Model>, naive::Model> make_tiny(const TinySpec& s) {
    std::mt19937_64 g(s.seed);
    naive::Model n;
    n.opt = s.opt;
    n.dim = s.dim; n.hidden = s.hidden; n.heads = s.heads; n.kv_heads = s.kv_heads; n.vocab = s.vocab;
    n.theta = s.theta;
    const int D = s.dim / s.heads, KV = s.kv_heads * D;
    const double ws = 1.0 / std::sqrt(double(s.dim));
    n.emb = rand_mat(g, s.vocab, s.dim, 1.0);
    if (s.opt) n.pos_emb = rand_mat(g, s.max_seq + 2, s.dim, 0.3);
    n.lm_head = s.tied ? n.emb : rand_mat(g, s.vocab, s.dim, ws);
    n.final_norm = rand_vec(g, s.dim, 1.0, 0.1);
    if (s.opt) n.final_norm_b = rand_vec(g, s.dim, 0.0, 0.1);
    for (int l = 0; l < s.layers; ++l) {
        naive::Layer L;
        L.attn_norm = rand_vec(g, s.dim, 1.0, 0.1);
        L.ffn_norm = rand_vec(g, s.dim, 1.0, 0.1);
        L.wq = rand_mat(g, s.dim, s.dim, ws);
        L.wk = rand_mat(g, KV, s.dim, ws);
        L.wv = rand_mat(g, KV, s.dim, ws);
        L.wo = rand_mat(g, s.dim, s.dim, ws);
        L.w_up = rand_mat(g, s.hidden, s.dim, ws);
        L.w_down = rand_mat(g, s.dim, s.hidden, 1.0 / std::sqrt(double(s.hidden)));
        if (s.opt) {
            L.attn_norm_b = rand_vec(g, s.dim, 0, 0.1);
            L.ffn_norm_b = rand_vec(g, s.dim, 0, 0.1);
            L.bq = rand_vec(g, s.dim, 0, 0.1); L.bk = rand_vec(g, KV, 0, 0.1); L.bv = rand_vec(g, KV, 0, 0.1);
            L.bo = rand_vec(g, s.dim, 0, 0.1); L.b_up = rand_vec(g, s.hidden, 0, 0.1); L.b_down = rand_vec(g, s.dim, 0, 0.1);
        } else {
            L.w_gate = rand_mat(g, s.hidden, s.dim, ws);
            if (s.qkv_bias) { L.bq = rand_vec(g, s.dim, 0, 0.1); L.bk = rand_vec(g, KV, 0, 0.1); L.bv = rand_vec(g, KV, 0, 0.1); }
        }
        for (auto* m : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_up, &L.w_down, &L.w_gate}) round_to_float(*m);
        for (auto* v : {&L.attn_norm, &L.ffn_norm, &L.attn_norm_b, &L.ffn_norm_b, &L.bq, &L.bk, &L.bv, &L.bo, &L.b_up, &L.b_down}) round_to_float(*v);
        n.layers.push_back(L);
    }
    round_to_float(n.emb); round_to_float(n.lm_head); round_to_float(n.final_norm); round_to_float(n.final_norm_b);
    if (s.opt) round_to_float(n.pos_emb);

    auto m = std::make_shared<Model>();
    ModelConfig& c = m->config;
    c.arch = s.opt ? Arch::OPT : Arch::Llama;
    c.arch_name = s.opt ? "opt" : (s.qkv_bias ? "qwen2" : "llama");
    c.dim = s.dim; c.hidden_dim = s.hidden; c.n_layers = s.layers; c.n_heads = s.heads; c.n_kv_heads = s.kv_heads;
    c.vocab_size = s.vocab; c.max_seq_len = s.max_seq; c.head_dim = D; c.rope_theta = s.theta;
    c.norm_eps = 1e-5; c.tied_embeddings = s.tied; c.qkv_bias = s.qkv_bias;
    ModelWeights& w = m->weights;
    w.tok_emb = to_tensor(n.emb);
    w.lm_head = s.tied ? w.tok_emb : to_tensor(n.lm_head);
    w.final_norm = to_tensor(n.final_norm);
    if (s.opt) { w.final_norm_bias = to_tensor(n.final_norm_b); w.pos_emb = to_tensor(n.pos_emb); }
    for (auto& L : n.layers) {
        LayerWeights lw;
        lw.attn_norm = to_tensor(L.attn_norm); lw.ffn_norm = to_tensor(L.ffn_norm);
        lw.attn_norm_bias = to_tensor(L.attn_norm_b); lw.ffn_norm_bias = to_tensor(L.ffn_norm_b);
        // Meta interleaved -> canonical rotate-half (OPT has no RoPE: no permutation).
        lw.wq = s.opt ? to_tensor(L.wq) : interleaved_to_half(to_tensor(L.wq), s.heads);
        lw.wk = s.opt ? to_tensor(L.wk) : interleaved_to_half(to_tensor(L.wk), s.kv_heads);
        lw.bq = L.bq.empty() ? at::Tensor() : (s.opt ? to_tensor(L.bq) : interleaved_to_half(to_tensor(L.bq), s.heads));
        lw.bk = L.bk.empty() ? at::Tensor() : (s.opt ? to_tensor(L.bk) : interleaved_to_half(to_tensor(L.bk), s.kv_heads));
        lw.wv = to_tensor(L.wv); lw.bv = to_tensor(L.bv);
        lw.wo = to_tensor(L.wo); lw.bo = to_tensor(L.bo);
        lw.w_up = to_tensor(L.w_up); lw.b_up = to_tensor(L.b_up);
        lw.w_down = to_tensor(L.w_down); lw.b_down = to_tensor(L.b_down);
        if (!s.opt) lw.w_gate = to_tensor(L.w_gate);
        w.layers.push_back(lw);
    }
    check_shapes(c, w, "tiny");
    m->tokenizer = tiny_tokenizer(s.vocab);
    m->source = "tiny";
    m->format = "test";
    return {m, n};
}

}  // namespace cushion::test
