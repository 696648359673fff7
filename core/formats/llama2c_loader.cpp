// llama2.c checkpoints: the legacy 28-byte header and the versioned ("ak42", version 1) header.
#include <ATen/ATen.h>

#include <filesystem>

#include "tokenizer/tokenizer_files.h"
#include "base/mapped_file.h"
#include "formats/model_loader.h"
#include "formats/weight_names.h"

namespace cushion {

namespace fs = std::filesystem;

namespace {

constexpr uint32_t kMagic = 0x616b3432;  // "ak42"

struct Cursor {
    const MappedFile& f;
    uint64_t pos;
    at::Tensor take(const std::string& what, std::vector<int64_t> shape) {
        int64_t n = 1;
        for (auto s : shape) n *= s;
        f.check_range(pos, uint64_t(n) * 4, what.c_str());
        at::Tensor t = at::from_blob(const_cast<uint8_t*>(f.data() + pos), shape, at::kFloat).clone();
        pos += uint64_t(n) * 4;
        return t;
    }
    // One (L, ...) block split per layer.
    std::vector<at::Tensor> take_layers(const std::string& what, int64_t L, std::vector<int64_t> shape) {
        std::vector<int64_t> full{L};
        full.insert(full.end(), shape.begin(), shape.end());
        at::Tensor all = take(what, full);
        std::vector<at::Tensor> out;
        for (int64_t l = 0; l < L; ++l) out.push_back(all[l].clone());
        return out;
    }
};

std::shared_ptr<Tokenizer> find_tokenizer(const std::string& path, const LoadOptions& opts, int64_t vocab) {
    auto load = [&](const std::string& p) -> std::shared_ptr<Tokenizer> {
        return load_tokenizer_file(p, static_cast<int32_t>(vocab));
    };
    if (!opts.tokenizer_path.empty()) return load(opts.tokenizer_path);
    const fs::path dir = fs::path(path).parent_path();
    const std::string v = std::to_string(vocab);
    for (const std::string name : {"tok" + v + ".model", std::string("tokenizer.model"), "tok" + v + ".bin",
                                   std::string("tokenizer.bin")}) {
        fs::path p = dir / name;
        if (fs::exists(p)) return load(p.string());
    }
    throw Error(path + ": no tokenizer found beside the checkpoint (looked for tok" + v +
                ".model, tokenizer.model, tok" + v + ".bin, tokenizer.bin); pass one with --tokenizer");
}

}  // namespace

std::shared_ptr<Model> load_llama2c(const std::string& path, const LoadOptions& opts) {
    MappedFile f(path);
    ByteReader r(f);
    auto model = std::make_shared<Model>();
    ModelConfig& c = model->config;
    uint64_t data_start = 28;
    bool shared = true;
    int version = 0;
    uint32_t first = r.read<uint32_t>("header");
    if (first == kMagic) {
        version = r.read<int32_t>("version");
        if (version != 1)
            throw Error(path + ": llama2.c checkpoint version " + std::to_string(version) +
                        " is not supported (only the legacy header and version 1, float32)");
        data_start = 256;
    } else {
        r.seek(0);
    }
    int32_t h[7];
    for (auto& v : h) v = r.read<int32_t>("header");
    if (version == 1) shared = r.read<uint8_t>("shared_classifier flag") != 0;
    else {
        shared = h[5] > 0;
        h[5] = std::abs(h[5]);
    }
    c.arch = Arch::Llama;
    c.arch_name = "llama";
    c.dim = h[0];
    c.hidden_dim = h[1];
    c.n_layers = h[2];
    c.n_heads = h[3];
    c.n_kv_heads = h[4];
    c.vocab_size = h[5];
    c.max_seq_len = h[6];
    c.head_dim = c.n_heads > 0 ? c.dim / c.n_heads : 0;
    c.rope_theta = 10000.0;
    c.norm_eps = 1e-5;
    c.tied_embeddings = shared;
    if (first != kMagic && (c.dim <= 0 || c.n_layers <= 0))
        throw Error(path + ": not a llama2.c checkpoint (bad header: dim " + std::to_string(c.dim) + ", layers " +
                    std::to_string(c.n_layers) + ")");
    c.validate(path);
    if (c.dim % c.n_heads != 0) throw Error(path + ": dim is not a multiple of n_heads");

    // Expected size, computed before reading anything.
    const int64_t C = c.dim, Hd = c.hidden_dim, L = c.n_layers, V = c.vocab_size, KV = c.kv_dim();
    int64_t floats = V * C + L * (2 * C + C * C * 2 + 2 * KV * C + 3 * C * Hd) + C;
    if (version == 0) floats += c.max_seq_len * c.head_dim;  // freq_cis real + imag
    if (!shared) floats += V * C;
    const uint64_t expected = data_start + uint64_t(floats) * 4;
    if (f.size() < expected)
        throw Error(path + ": file is truncated: " + std::to_string(f.size()) + " bytes, the header implies " +
                    std::to_string(expected));
    if (f.size() > expected)
        throw Error(path + ": file has " + std::to_string(f.size() - expected) +
                    " unexpected trailing bytes (header and size disagree)");

    report_progress(opts.progress, 0.0, "reading weights");
    Cursor cur{f, data_start};
    ModelWeights& w = model->weights;
    w.layers.resize(L);
    std::vector<at::Tensor> rms_att, rms_ffn, wq, wk, wv, wo, w1, w2, w3;
    if (version == 0) {
        w.tok_emb = cur.take("token_embedding_table", {V, C});
        rms_att = cur.take_layers("rms_att_weight", L, {C});
        wq = cur.take_layers("wq", L, {C, C});
        wk = cur.take_layers("wk", L, {KV, C});
        wv = cur.take_layers("wv", L, {KV, C});
        wo = cur.take_layers("wo", L, {C, C});
        rms_ffn = cur.take_layers("rms_ffn_weight", L, {C});
        w1 = cur.take_layers("w1", L, {Hd, C});
        w2 = cur.take_layers("w2", L, {C, Hd});
        w3 = cur.take_layers("w3", L, {Hd, C});
        w.final_norm = cur.take("rms_final_weight", {C});
        cur.pos += uint64_t(c.max_seq_len * c.head_dim) * 4;  // freq_cis_real/imag: recomputed, not used
    } else {
        rms_att = cur.take_layers("attention_norm", L, {C});
        rms_ffn = cur.take_layers("ffn_norm", L, {C});
        w.final_norm = cur.take("norm", {C});
        w.tok_emb = cur.take("tok_embeddings", {V, C});
        wq = cur.take_layers("wq", L, {C, C});
        wk = cur.take_layers("wk", L, {KV, C});
        wv = cur.take_layers("wv", L, {KV, C});
        wo = cur.take_layers("wo", L, {C, C});
        w1 = cur.take_layers("w1", L, {Hd, C});
        w2 = cur.take_layers("w2", L, {C, Hd});
        w3 = cur.take_layers("w3", L, {Hd, C});
    }
    w.lm_head = shared ? w.tok_emb : cur.take("wcls", {V, C});
    for (int64_t l = 0; l < L; ++l) {
        LayerWeights& lw = w.layers[l];
        lw.attn_norm = rms_att[l];
        lw.ffn_norm = rms_ffn[l];
        lw.wq = interleaved_to_half(wq[l], c.n_heads);
        lw.wk = interleaved_to_half(wk[l], c.n_kv_heads);
        lw.wv = wv[l];
        lw.wo = wo[l];
        lw.w_gate = w1[l];
        lw.w_down = w2[l];
        lw.w_up = w3[l];
        report_progress(opts.progress, double(l + 1) / L, "reading weights");
    }
    check_shapes(c, w, path);
    note_non_finite_weights(*model, path, llama2c_tensor_name);
    model->tokenizer = find_tokenizer(path, opts, V);
    if (model->tokenizer->vocab_size() != V)
        throw Error(path + ": tokenizer has " + std::to_string(model->tokenizer->vocab_size()) +
                    " tokens, the model " + std::to_string(V));
    model->source = path;
    model->format = "llama2c";
    return model;
}

}  // namespace cushion
