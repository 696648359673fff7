// llama2.c checkpoints: the version-1 header loads the same weights as the legacy one, and every
// broken file gets a clear error (never a crash or a huge allocation).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <iterator>

#include "package/open_target.h"
#include "test_support.h"

using namespace cushion;
using namespace cushion::test;

namespace {

std::string slurp(const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}
void spit(const std::string& p, const std::string& s) { std::ofstream(p, std::ios::binary).write(s.data(), s.size()); }

// A copy of stories260K.bin, edited, with the tokenizer beside it.
std::string broken(const std::string& tag, const std::function<void(std::string&)>& edit) {
    const std::string dir = temp_dir("l2c-" + tag);
    std::string data = slurp(stories_bin());
    edit(data);
    spit(dir + "/model.bin", data);
    spit(dir + "/tok512.model", slurp(stories_tok_model()));
    return dir + "/model.bin";
}

std::string error_of(const std::string& path) {
    try {
        load_model(path);
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

void put_i32(std::string& d, size_t off, int32_t v) { std::memcpy(&d[off], &v, 4); }

}  // namespace

TEST(Llama2c, LegacyLoadsWithSentencePieceTokenizer) {
    auto m = load_model(stories_bin());
    EXPECT_EQ(m->format, "llama2c");
    EXPECT_EQ(m->config.hidden_dim, 172);
    EXPECT_TRUE(m->config.tied_embeddings);
    EXPECT_TRUE(m->warnings.empty());
}

TEST(Llama2c, Version1HeaderGivesTheSameModel) {
    // Rebuild the file in the version-1 layout: magic, version, params, shared flag, pad to 256, then
    // norms first, embeddings, then the matrices; no freq_cis tables.
    const std::string legacy = slurp(stories_bin());
    const int64_t C = 64, Hd = 172, L = 5, V = 512, KV = 32, S = 512, hs = 8;
    std::vector<std::pair<size_t, size_t>> parts;  // (offset, bytes) in the legacy file
    size_t off = 28;
    auto take = [&](int64_t floats) {
        parts.push_back({off, size_t(floats) * 4});
        off += floats * 4;
        return parts.size() - 1;
    };
    size_t emb = take(V * C), rms_att = take(L * C), wq = take(L * C * C), wk = take(L * KV * C), wv = take(L * KV * C),
           wo = take(L * C * C), rms_ffn = take(L * C), w1 = take(L * Hd * C), w2 = take(L * C * Hd),
           w3 = take(L * Hd * C), rms_final = take(C);
    std::string v1(256, '\0');
    const uint32_t magic = 0x616b3432;
    const int32_t version = 1;
    std::memcpy(&v1[0], &magic, 4);
    std::memcpy(&v1[4], &version, 4);
    std::memcpy(&v1[8], legacy.data(), 28);
    v1[36] = 1;  // shared classifier
    for (size_t i : {rms_att, rms_ffn, rms_final, emb, wq, wk, wv, wo, w1, w2, w3})
        v1 += legacy.substr(parts[i].first, parts[i].second);
    (void)S;
    (void)hs;
    const std::string dir = temp_dir("l2c-v1");
    spit(dir + "/model.bin", v1);
    spit(dir + "/tok512.model", slurp(stories_tok_model()));
    auto a = load_model(stories_bin());
    auto b = load_model(dir + "/model.bin");
    at::Tensor toks = at::tensor(std::vector<int64_t>{1, 403, 407, 261, 378}, at::kLong).unsqueeze(0);
    EXPECT_TRUE(at::equal(a->forward(toks), b->forward(toks)));
    EXPECT_EQ(a->fingerprint(), b->fingerprint());
}

TEST(Llama2c, BrokenFilesGetClearErrors) {
    EXPECT_NE(error_of(broken("trunc", [](std::string& d) { d.resize(d.size() - 100); })).find("truncated"), std::string::npos);
    EXPECT_NE(error_of(broken("header", [](std::string& d) { d.resize(10); })).find("past the end"), std::string::npos);
    EXPECT_NE(error_of(broken("trailing", [](std::string& d) { d += "xxxx"; })).find("trailing"), std::string::npos);
    EXPECT_NE(error_of(broken("dim", [](std::string& d) { put_i32(d, 0, 1 << 30); })).find("dim"), std::string::npos);
    EXPECT_NE(error_of(broken("layers", [](std::string& d) { put_i32(d, 8, -5); })).find("not a llama2.c checkpoint"),
              std::string::npos);
    EXPECT_NE(error_of(broken("heads", [](std::string& d) { put_i32(d, 16, 3); })).find("n_kv_heads"), std::string::npos);
    EXPECT_NE(error_of(broken("vocab", [](std::string& d) { put_i32(d, 20, 1 << 30); })).find("vocab_size"), std::string::npos);
    EXPECT_NE(error_of(broken("v2", [](std::string& d) {
                  std::string h(8, '\0');
                  const uint32_t magic = 0x616b3432;
                  const int32_t v = 2;
                  std::memcpy(&h[0], &magic, 4);
                  std::memcpy(&h[4], &v, 4);
                  d = h + d;
              })).find("version 2"),
              std::string::npos);
    EXPECT_NE(error_of("/nonexistent/x.bin").find("no such file"), std::string::npos);
    // A tokenizer of the wrong size.
    const std::string dir = temp_dir("l2c-tok");
    spit(dir + "/model.bin", slurp(stories_bin()));
    EXPECT_NE(error_of(dir + "/model.bin").find("no tokenizer"), std::string::npos);
}

TEST(Llama2c, NanWeightsWarnNamingTheTensor) {
    auto path = broken("nan", [](std::string& d) {
        const float nan = std::numeric_limits<float>::quiet_NaN();
        std::memcpy(&d[28 + 512 * 64 * 4 + 8], &nan, 4);  // inside rms_att of layer 0
    });
    auto m = load_model(path);
    ASSERT_EQ(m->warnings.size(), 1u);
    EXPECT_NE(m->warnings[0].find("model.layers.0.input_layernorm.weight"), std::string::npos) << m->warnings[0];
    EXPECT_NE(m->warnings[0].find("rms_att_weight[0] (layer 0, model.layers.0.input_layernorm.weight; 1 of 64 values)"),
              std::string::npos)
        << m->warnings[0];
}
