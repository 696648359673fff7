// A deliberately naive, loop-by-loop double-precision forward pass (one sequence, no KV tricks),
// written independently of core/model.cpp, as the reference for hand-checkable tiny models.
// Llama weights are taken in Meta's interleaved-RoPE layout, so the loaders' permutation is tested too.
#pragma once
#include <cmath>
#include <vector>

namespace naive {

using Vec = std::vector<double>;
using Mat = std::vector<Vec>;  // [out][in]

struct Layer {
    Vec attn_norm, attn_norm_b, ffn_norm, ffn_norm_b;
    Mat wq, wk, wv, wo, w_gate, w_up, w_down;
    Vec bq, bk, bv, bo, b_up, b_down;
};
struct Model {
    bool opt = false;
    int dim = 0, hidden = 0, heads = 0, kv_heads = 0, vocab = 0, pos_offset = 2;
    double eps = 1e-5, theta = 10000;
    Mat emb, pos_emb, lm_head;
    Vec final_norm, final_norm_b;
    std::vector<Layer> layers;
};

inline Vec matvec(const Mat& w, const Vec& x, const Vec& b = {}) {
    Vec y(w.size(), 0.0);
    for (size_t o = 0; o < w.size(); ++o) {
        double s = b.empty() ? 0.0 : b[o];
        for (size_t i = 0; i < x.size(); ++i) s += w[o][i] * x[i];
        y[o] = s;
    }
    return y;
}
inline Vec rmsnorm(const Vec& x, const Vec& w, double eps) {
    double ss = 0;
    for (double v : x) ss += v * v;
    double r = 1.0 / std::sqrt(ss / x.size() + eps);
    Vec y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * r * w[i];
    return y;
}
inline Vec layernorm(const Vec& x, const Vec& w, const Vec& b, double eps) {
    double m = 0, v = 0;
    for (double a : x) m += a;
    m /= x.size();
    for (double a : x) v += (a - m) * (a - m);
    v /= x.size();
    Vec y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = (x[i] - m) / std::sqrt(v + eps) * w[i] + b[i];
    return y;
}
// Interleaved RoPE on a vector of n_heads * head_dim.
inline void rope(Vec& v, int n_heads, int head_dim, int pos, double theta) {
    for (int h = 0; h < n_heads; ++h)
        for (int i = 0; i < head_dim; i += 2) {
            double freq = 1.0 / std::pow(theta, double(i) / head_dim);
            double a = pos * freq, c = std::cos(a), s = std::sin(a);
            double& x0 = v[h * head_dim + i];
            double& x1 = v[h * head_dim + i + 1];
            double r0 = x0 * c - x1 * s, r1 = x0 * s + x1 * c;
            x0 = r0;
            x1 = r1;
        }
}

// Returns logits [T][V] for tokens, with `prefix_len` leading tokens treated like any others.
inline Mat forward(const Model& m, const std::vector<int>& tokens) {
    const int T = tokens.size(), C = m.dim, H = m.heads, KVH = m.kv_heads, D = C / H;
    Mat x(T);
    for (int t = 0; t < T; ++t) {
        x[t] = m.emb[tokens[t]];
        if (m.opt)
            for (int c = 0; c < C; ++c) x[t][c] += m.pos_emb[t + m.pos_offset][c];
    }
    for (const Layer& L : m.layers) {
        Mat q(T), k(T), v(T);
        for (int t = 0; t < T; ++t) {
            Vec h = m.opt ? layernorm(x[t], L.attn_norm, L.attn_norm_b, m.eps) : rmsnorm(x[t], L.attn_norm, m.eps);
            q[t] = matvec(L.wq, h, L.bq);
            k[t] = matvec(L.wk, h, L.bk);
            v[t] = matvec(L.wv, h, L.bv);
            if (!m.opt) {
                rope(q[t], H, D, t, m.theta);
                rope(k[t], KVH, D, t, m.theta);
            }
        }
        for (int t = 0; t < T; ++t) {
            Vec att(C, 0.0);
            for (int h = 0; h < H; ++h) {
                const int kh = h / (H / KVH);
                std::vector<double> sc(t + 1);
                double mx = -1e300;
                for (int j = 0; j <= t; ++j) {
                    double s = 0;
                    for (int d = 0; d < D; ++d) s += q[t][h * D + d] * k[j][kh * D + d];
                    sc[j] = s / std::sqrt(double(D));
                    mx = std::max(mx, sc[j]);
                }
                double z = 0;
                for (auto& s : sc) z += (s = std::exp(s - mx));
                for (int j = 0; j <= t; ++j)
                    for (int d = 0; d < D; ++d) att[h * D + d] += sc[j] / z * v[j][kh * D + d];
            }
            Vec o = matvec(L.wo, att, L.bo);
            for (int c = 0; c < C; ++c) x[t][c] += o[c];
            Vec h = m.opt ? layernorm(x[t], L.ffn_norm, L.ffn_norm_b, m.eps) : rmsnorm(x[t], L.ffn_norm, m.eps);
            Vec g;
            if (m.opt) {
                g = matvec(L.w_up, h, L.b_up);
                for (auto& a : g) a = a > 0 ? a : 0;
            } else {
                Vec a = matvec(L.w_gate, h), b = matvec(L.w_up, h);
                g.resize(a.size());
                for (size_t i = 0; i < a.size(); ++i) g[i] = a[i] / (1 + std::exp(-a[i])) * b[i];
            }
            Vec d = matvec(L.w_down, g, L.b_down);
            for (int c = 0; c < C; ++c) x[t][c] += d[c];
        }
    }
    Mat logits(T);
    for (int t = 0; t < T; ++t) {
        Vec h = m.opt ? layernorm(x[t], m.final_norm, m.final_norm_b, m.eps) : rmsnorm(x[t], m.final_norm, m.eps);
        logits[t] = matvec(m.lm_head, h);
    }
    return logits;
}

}  // namespace naive
