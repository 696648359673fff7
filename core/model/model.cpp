#include "model/model.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <ATen/detail/CUDAHooksInterface.h>

#include <cmath>
#include <limits>
#include <sstream>

#include "base/error.h"
#include "base/sha256.h"

namespace cushion {

namespace {

at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
    return b.defined() ? at::linear(x, w, b) : at::linear(x, w);
}

// RMSNorm as Hugging Face computes it: statistics in float32, result cast back, then scaled.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w, double eps) {
    at::Tensor xf = x.to(at::kFloat);
    at::Tensor r = xf * xf.pow(2).mean(-1, /*keepdim=*/true).add_(eps).rsqrt_();
    return w * r.to(x.scalar_type());
}

at::Tensor layer_norm(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, double eps) {
    return at::layer_norm(x, {x.size(-1)}, w, b, eps);
}

// Hugging Face rotate-half RoPE. x: (B, H, T, D); cos/sin: (T, D) float32.
at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
    const int64_t half = x.size(-1) / 2;
    at::Tensor xf = x.to(at::kFloat);
    at::Tensor x1 = xf.narrow(-1, 0, half), x2 = xf.narrow(-1, half, half);
    at::Tensor rot = at::cat({-x2, x1}, -1);
    return (xf * cos + rot * sin).to(x.scalar_type());
}

// RoPE inverse frequencies (D/2, float32), with the config's scaling, computed as transformers computes them
// (modeling_rope_utils: default, linear, llama3; the same ATen operations in float32: `1.0 / t` is reciprocal(t),
// as Python's Tensor.__rtruediv__), so that the angles, and cos/sin, are bit for bit those of transformers (and of
// llama.cpp and vLLM, which also compute the angles in float32).
at::Tensor rope_inv_freq(const ModelConfig& c) {
    const int64_t D = c.head_dim;
    const at::Tensor inv_freq =
        at::reciprocal(at::pow(c.rope_theta, at::arange(0, D, 2, at::TensorOptions().dtype(at::kLong)).to(at::kFloat) / D));
    if (c.rope_type == "linear") return inv_freq / c.rope_factor;
    if (c.rope_type == "llama3") {
        const double old_len = double(c.rope_original_max_pos);
        const double low_wavelen = old_len / c.rope_low_freq_factor, high_wavelen = old_len / c.rope_high_freq_factor;
        const at::Tensor wavelen = at::reciprocal(inv_freq) * (2 * M_PI);
        // Long wavelengths are divided by the factor, short ones kept, the band between interpolated.
        const at::Tensor scaled = at::where(wavelen > low_wavelen, inv_freq / c.rope_factor, inv_freq);
        const at::Tensor smooth =
            (at::reciprocal(wavelen) * old_len - c.rope_low_freq_factor) / (c.rope_high_freq_factor - c.rope_low_freq_factor);
        const at::Tensor smoothed = (1 - smooth) * scaled / c.rope_factor + smooth * scaled;
        const at::Tensor medium = at::logical_not(wavelen < high_wavelen) * at::logical_not(wavelen > low_wavelen);
        return at::where(medium, smoothed, scaled);
    }
    return inv_freq;
}

// Causal attention of q (B, H, T, D) over keys/values (B, H, P+T, D). libtorch's fused
// scaled_dot_product_attention, called as transformers' default ("sdpa") attention calls it (keys/values repeated to
// H heads, no dropout): with is_causal and no mask when there is no prefix (`add_mask` undefined), else with
// `add_mask` (T, P+T), 0 where a key is visible and -inf where it is hidden, the float mask libtorch makes from
// transformers' boolean one (made once per forward here, not once per layer). Both run the same kernel on the same
// operands; measured on this libtorch, is_causal, the boolean and the float mask give the same bits.
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& add_mask, double scale) {
    if (!add_mask.defined()) return at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true, scale);
    return at::scaled_dot_product_attention(q, k, v, add_mask, 0.0, false, scale);
}

// A block linear, through args.kernels when set.
at::Tensor block_linear(const ForwardArgs& args, int layer, LinearId id, const at::Tensor& x, const at::Tensor& w,
                        const at::Tensor& b) {
    return args.kernels ? args.kernels->linear(layer, id, x, w, b) : linear(x, w, b);
}

void call_hook(ActivationHook* hook, int layer, Site site, at::Tensor& x, const at::Tensor& valid) {
    if (hook) hook->on_activation(layer, site, x, valid);
}

}  // namespace

const char* linear_name(LinearId id) {
    static const char* names[] = {"q", "k", "v", "o", "gate", "up", "down"};
    const int i = static_cast<int>(id);
    return i >= 0 && i < kLinearCount ? names[i] : "?";
}

c10::Device Model::device() const { return weights.tok_emb.device(); }
at::ScalarType Model::dtype() const { return weights.tok_emb.scalar_type(); }

void Model::to(c10::Device dev, at::ScalarType dt) {
    if (dev.is_cuda() && !at::hasCUDA())
        throw Error("CUDA was requested but no CUDA GPU is available in this build/machine; use --device cpu");
    if (fingerprint_.empty()) fingerprint();
    // Not every libtorch build has every kernel (libtorch 1.13's CPU matmul has no fp16): say so now,
    // not in the middle of a forward pass.
    try {
        at::Tensor a = at::ones({2, 2}, at::TensorOptions().dtype(dt).device(dev));
        (void)at::linear(a, a);
    } catch (const c10::Error&) {
        throw Error("dtype " + dtype_name(dt) + " is not supported on " + dev.str() +
                    " by this libtorch (matrix products missing); use " +
                    (dev.is_cpu() ? "fp32 or bf16 on the CPU" : "fp32"));
    }
    weights.for_each(config, [&](const std::string&, at::Tensor& t) {
        if (t.is_floating_point()) t = t.to(dev, dt).contiguous();
    });
    if (config.tied_embeddings) weights.lm_head = weights.tok_emb;
    weights.pack_qkv();
}

at::Tensor Model::forward(const at::Tensor& tokens_in, const ForwardArgs& args) const {
    const ModelConfig& c = config;
    if (tokens_in.dim() != 2) throw Error("forward: tokens must be (B, T)");
    const auto dev = device();
    const at::Tensor tokens = tokens_in.to(dev, at::kLong);
    const int64_t B = tokens.size(0), T = tokens.size(1);
    const int64_t P = args.prefix ? args.prefix->length() : 0;
    if (args.position_gap < 0) throw Error("forward: the position gap must not be negative");
    if (P + args.position_gap + T > c.max_seq_len)
        throw Error("sequence of " + std::to_string(P + args.position_gap + T) + " positions (prefix " + std::to_string(P) +
                    ") exceeds the model's maximum context of " + std::to_string(c.max_seq_len));
    if (args.prefix && !args.prefix->empty()) {
        if ((int64_t)args.prefix->k.size() != c.n_layers)
            throw Error("prefix cache has " + std::to_string(args.prefix->k.size()) + " layers, model has " +
                        std::to_string(c.n_layers));
        const int64_t pb = args.prefix->batch();
        if (pb != 1 && pb != B) throw Error("prefix cache batch must be 1 or match the input batch");
    }
    const int64_t H = c.n_heads, KVH = c.n_kv_heads, D = c.head_dim, rep = H / KVH;
    const bool opt = c.arch == Arch::OPT;
    const at::Tensor valid = args.valid.defined() ? args.valid.to(dev) : at::Tensor();
    if (tokens.numel() > 0) {
        const auto [lo, hi] = at::aminmax(tokens);
        if (lo.item<int64_t>() < 0 || hi.item<int64_t>() >= c.vocab_size)
            throw Error("token id out of range [0, " + std::to_string(c.vocab_size) + ")");
    }

    // Key indices of the new tokens P .. P+T-1; their positions are those plus the gap (ForwardArgs::position_gap).
    const at::Tensor idx = at::arange(P, P + T, at::TensorOptions().dtype(at::kLong).device(dev));
    at::Tensor pos = idx + args.position_gap;
    at::Tensor x = at::embedding(weights.tok_emb, tokens);  // (B, T, C)
    at::Tensor cos, sin;
    if (opt) {
        x = x + at::embedding(weights.pos_emb, pos + c.pos_offset).unsqueeze(0);
    } else {
        const at::Tensor inv_freq = rope_inv_freq(c);
        // (T, D/2) angles in float32, as transformers' LlamaRotaryEmbedding.forward
        at::Tensor freqs = pos.cpu().to(at::kFloat).unsqueeze(-1) * inv_freq;
        at::Tensor emb = at::cat({freqs, freqs}, -1);
        cos = emb.cos().to(dev);
        sin = emb.sin().to(dev);
    }
    // Causal mask over [prefix | new]: query t may see key j when j <= P + t. Without a prefix on the CPU that is
    // is_causal (no mask); else the additive float mask (T, P+T) in the activations' dtype: 0 visible, -inf hidden.
    // (On CUDA is_causal may choose another SDPA kernel than a mask does: not checked, so the mask stays.)
    at::Tensor add_mask;
    if (P > 0 || !dev.is_cpu()) {
        const at::Tensor key_pos = at::arange(P + T, at::TensorOptions().dtype(at::kLong).device(dev));
        const at::Tensor hidden = key_pos.unsqueeze(0) > idx.unsqueeze(1);
        add_mask = at::zeros({T, P + T}, at::TensorOptions().dtype(x.scalar_type()).device(dev))
                       .masked_fill_(hidden, -std::numeric_limits<double>::infinity());
    }
    const double scale = 1.0 / std::sqrt(double(D));

    if (args.present) {
        args.present->k.assign(c.n_layers, at::Tensor());
        args.present->v.assign(c.n_layers, at::Tensor());
    }
    const bool grad = at::GradMode::is_enabled();
    for (int64_t l = 0; l < c.n_layers; ++l) {
        const LayerWeights& L = weights.layers[l];
        const int li = static_cast<int>(l);
        // --- attention ---
        at::Tensor h = opt ? (c.do_layer_norm_before ? layer_norm(x, L.attn_norm, L.attn_norm_bias, c.norm_eps) : x)
                           : rms_norm(x, L.attn_norm, c.norm_eps);
        call_hook(args.hook, li, Site::AttnIn, h, valid);
        at::Tensor q, k, v;
        at::Tensor w_qkv, b_qkv;
        if (!args.kernels && !grad && packed_qkv(L, &w_qkv, &b_qkv)) {
            // One product for q, k and v (ModelWeights::pack_qkv): the same values as three (each output is the
            // same dot product), a third of the calls, and a wider product, where the small-N k and v ran slowly.
            // Not under autograd: the backward of one product sums the input's gradient over q, k and v in another
            // order than three products do (rounding-level differences), and tuning keeps its gradients as they were.
            const std::vector<at::Tensor> parts = linear(h, w_qkv, b_qkv).split_with_sizes({H * D, KVH * D, KVH * D}, -1);
            q = parts[0].contiguous();
            k = parts[1].contiguous();
            v = parts[2].contiguous();
        } else {
            q = block_linear(args, li, LinearId::Q, h, L.wq, L.bq);
            k = block_linear(args, li, LinearId::K, h, L.wk, L.bk);
            v = block_linear(args, li, LinearId::V, h, L.wv, L.bv);
        }
        q = q.view({B, T, H, D}).transpose(1, 2);    // (B, H, T, D)
        k = k.view({B, T, KVH, D}).transpose(1, 2);  // (B, KVH, T, D)
        v = v.view({B, T, KVH, D}).transpose(1, 2);
        if (!opt) {
            q = apply_rope(q, cos, sin);
            k = apply_rope(k, cos, sin);
        }
        if (args.hook) args.hook->on_kv(li, k, v, valid);
        if (P > 0) {
            const at::Tensor& pk = args.prefix->k[l];
            const at::Tensor& pv = args.prefix->v[l];
            k = at::cat({pk.to(dev, k.scalar_type()).expand({B, KVH, P, D}), k}, 2);
            v = at::cat({pv.to(dev, v.scalar_type()).expand({B, KVH, P, D}), v}, 2);
        }
        if (args.present) {
            args.present->k[l] = k;
            args.present->v[l] = v;
        }
        if (l == args.stop_after_kv) return at::Tensor();
        if (args.hook) args.hook->on_attention(li, q, k, v, scale);
        at::Tensor kr = rep == 1 ? k : k.unsqueeze(2).expand({B, KVH, rep, P + T, D}).reshape({B, H, P + T, D});
        at::Tensor vr = rep == 1 ? v : v.unsqueeze(2).expand({B, KVH, rep, P + T, D}).reshape({B, H, P + T, D});
        at::Tensor attn = attention(q, kr, vr, add_mask, scale).transpose(1, 2).reshape({B, T, H * D});  // (B, T, C)
        call_hook(args.hook, li, Site::OIn, attn, valid);
        x = x + block_linear(args, li, LinearId::O, attn, L.wo, L.bo);
        if (opt && !c.do_layer_norm_before) x = layer_norm(x, L.attn_norm, L.attn_norm_bias, c.norm_eps);
        // --- feed-forward ---
        h = opt ? (c.do_layer_norm_before ? layer_norm(x, L.ffn_norm, L.ffn_norm_bias, c.norm_eps) : x)
                : rms_norm(x, L.ffn_norm, c.norm_eps);
        call_hook(args.hook, li, Site::MlpIn, h, valid);
        at::Tensor g = opt ? at::relu(block_linear(args, li, LinearId::Up, h, L.w_up, L.b_up))
                           : at::silu(block_linear(args, li, LinearId::Gate, h, L.w_gate, at::Tensor())) *
                                 block_linear(args, li, LinearId::Up, h, L.w_up, at::Tensor());
        call_hook(args.hook, li, Site::DownIn, g, valid);
        x = x + block_linear(args, li, LinearId::Down, g, L.w_down, L.b_down);
        if (opt && !c.do_layer_norm_before) x = layer_norm(x, L.ffn_norm, L.ffn_norm_bias, c.norm_eps);
        call_hook(args.hook, li, Site::Residual, x, valid);
    }
    if (args.skip_logits) return at::Tensor();
    if (args.last_logits_only) x = x.narrow(1, T - 1, 1);
    x = opt ? (c.do_layer_norm_before ? layer_norm(x, weights.final_norm, weights.final_norm_bias, c.norm_eps) : x)
            : rms_norm(x, weights.final_norm, c.norm_eps);
    return args.final_hidden ? x : lm_logits(x);
}

at::Tensor Model::lm_logits(const at::Tensor& hidden) const {
    return at::linear(hidden, weights.lm_head).to(at::kFloat);
}

std::string Model::fingerprint() const {
    if (!fingerprint_.empty()) return fingerprint_;
    Sha256 h;
    h.update(config.describe());
    weights.for_each(config, [&](const std::string& name, const at::Tensor& t) {
        h.update(name);
        for (auto s : t.sizes()) h.update(std::to_string(s) + ",");
        // A strided sample of at most 4096 values, in float32: cheap even for 7B models.
        at::Tensor flat = t.reshape({-1});
        const int64_t n = flat.numel(), step = std::max<int64_t>(1, n / 4096);
        at::Tensor sample = flat.slice(0, 0, n, step).to(at::kCPU, at::kFloat).contiguous();
        h.update(sample.data_ptr<float>(), sample.numel() * sizeof(float));
    });
    fingerprint_ = h.hex_digest().substr(0, 16);
    return fingerprint_;
}

c10::Device parse_device(const std::string& name) {
    if (name == "cpu") return c10::Device(c10::kCPU);
    if (name.rfind("cuda", 0) == 0) {
        if (!at::hasCUDA())
            throw Error("device '" + name + "' requested, but CUDA is not available (" +
                        std::string("no GPU found or this build of libtorch has no CUDA); use --device cpu"));
        int index = 0;
        if (name.size() > 4) {
            if (name[4] != ':') throw Error("bad device '" + name + "': use cpu, cuda or cuda:N");
            try {
                index = std::stoi(name.substr(5));
            } catch (...) {
                throw Error("bad device '" + name + "': use cpu, cuda or cuda:N");
            }
        }
        const int n = at::detail::getCUDAHooks().getNumGPUs();
        if (index < 0 || index >= n)
            throw Error("device '" + name + "' does not exist: " + std::to_string(n) + " CUDA device(s) found");
        return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
    }
    throw Error("unknown device '" + name + "': use cpu, cuda or cuda:N");
}

at::ScalarType parse_dtype(const std::string& n) {
    if (n == "fp32" || n == "float32" || n == "f32") return at::kFloat;
    if (n == "fp16" || n == "float16" || n == "f16" || n == "half") return at::kHalf;
    if (n == "bf16" || n == "bfloat16") return at::kBFloat16;
    throw Error("unknown dtype '" + n + "': use fp32, fp16 or bf16");
}

std::string dtype_name(at::ScalarType t) {
    switch (t) {
        case at::kFloat: return "fp32";
        case at::kHalf: return "fp16";
        case at::kBFloat16: return "bf16";
        default: return c10::toString(t);
    }
}

}  // namespace cushion
