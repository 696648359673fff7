// The forward pass against the naive double-precision reference, and its invariants
// (prefix KV == running the prefix, right padding changes nothing, dtypes).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "model/activation_probe.h"
#include "model/generation.h"
#include "model/perplexity.h"
#include "tiny_models.h"

using namespace cushion;
using namespace cushion::test;

namespace {

at::Tensor ids(const std::vector<int>& v) {
    return at::tensor(std::vector<int64_t>(v.begin(), v.end()), at::kLong).unsqueeze(0);
}

double max_diff(const at::Tensor& ours /*(T,V)*/, const naive::Mat& ref) {
    double d = 0;
    auto a = ours.to(at::kDouble).contiguous();
    for (size_t t = 0; t < ref.size(); ++t)
        for (size_t v = 0; v < ref[t].size(); ++v) d = std::max(d, std::fabs(a[t][v].item<double>() - ref[t][v]));
    return d;
}

void check_against_naive(const TinySpec& s) {
    auto [m, n] = make_tiny(s);
    std::vector<int> toks{1, 5, 3, 7, 7, 4, 9, 10, 3, 6, 8, 2, 5};
    at::Tensor logits = m->forward(ids(toks))[0];
    naive::Mat ref = naive::forward(n, toks);
    // float32 engine vs double reference on O(1) logits: 1e-4 absolute is ~1000 float ulps of slack.
    EXPECT_LT(max_diff(logits, ref), 1e-4);
}

}  // namespace

TEST(ForwardNaive, LlamaGqaMatchesReference) { check_against_naive({}); }
TEST(ForwardNaive, LlamaMhaTiedMatchesReference) {
    TinySpec s;
    s.kv_heads = 4;
    s.tied = true;
    s.seed = 7;
    check_against_naive(s);
}
TEST(ForwardNaive, Qwen2StyleBiasAndThetaMatchesReference) {
    TinySpec s;
    s.qkv_bias = true;
    s.theta = 1e6;
    s.kv_heads = 1;
    s.seed = 3;
    check_against_naive(s);
}
TEST(ForwardNaive, OptMatchesReference) {
    TinySpec s;
    s.opt = true;
    s.kv_heads = 4;
    s.seed = 5;
    check_against_naive(s);
}

TEST(ForwardInvariants, PrefixCacheEqualsRunningThePrefix) {
    for (bool opt : {false, true}) {
        TinySpec s;
        s.opt = opt;
        if (opt) s.kv_heads = s.heads;
        auto [m, n] = make_tiny(s);
        std::vector<int> all{1, 4, 6, 8, 3, 9, 5, 7};
        at::Tensor full = m->forward(ids(all))[0];
        KVCache prefix;
        ForwardArgs a1;
        a1.present = &prefix;
        m->forward(ids({1, 4, 6}), a1);
        ASSERT_EQ(prefix.length(), 3);
        ForwardArgs a2;
        a2.prefix = &prefix;
        at::Tensor rest = m->forward(ids({8, 3, 9, 5, 7}), a2)[0];
        EXPECT_LT((rest - full.narrow(0, 3, 5)).abs().max().item<double>(), 1e-5) << "opt=" << opt;
        // A batch of 2 with a batch-1 prefix broadcast.
        at::Tensor two = at::cat({ids({8, 3, 9, 5, 7}), ids({8, 3, 9, 5, 7})}, 0);
        at::Tensor rest2 = m->forward(two, a2);
        EXPECT_LT((rest2[1] - full.narrow(0, 3, 5)).abs().max().item<double>(), 1e-5);
    }
}

TEST(ForwardInvariants, RightPaddingDoesNotChangeRealTokens) {
    auto [m, n] = make_tiny({});
    std::vector<std::vector<int32_t>> docs{{1, 4, 6, 8, 3, 9}, {1, 7, 5}};
    at::Tensor tokens, valid;
    pad_batch(docs, &tokens, &valid);
    ForwardArgs a;
    a.valid = valid;
    at::Tensor batched = m->forward(tokens, a);
    at::Tensor single = m->forward(ids({1, 7, 5}))[0];
    EXPECT_LT((batched[1].narrow(0, 0, 3) - single).abs().max().item<double>(), 1e-5);
}

TEST(ForwardInvariants, Bf16CloseToFp32) {
    auto [m, n] = make_tiny({});
    std::vector<int> toks{1, 5, 3, 7, 7, 4};
    at::Tensor ref = m->forward(ids(toks))[0];
    m->to(c10::Device(c10::kCPU), at::kBFloat16);
    EXPECT_EQ(m->dtype(), at::kBFloat16);
    at::Tensor lo = m->forward(ids(toks))[0];
    EXPECT_EQ(lo.scalar_type(), at::kFloat);
    // bf16 keeps 8 bits of mantissa: logits of magnitude ~3 agree to a few 1e-2.
    EXPECT_LT((lo - ref).abs().max().item<double>(), 0.15);
}

TEST(ForwardInvariants, CudaWithoutGpuIsAClearError) {
    if (at::hasCUDA()) GTEST_SKIP() << "a GPU is present";
    auto [m, n] = make_tiny({});
    try {
        m->to(c10::Device(c10::kCUDA), at::kFloat);
        FAIL() << "expected an error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("CUDA"), std::string::npos);
    }
    EXPECT_THROW(parse_device("cuda"), Error);
    EXPECT_THROW(parse_device("tpu"), Error);
    EXPECT_THROW(parse_dtype("fp8"), Error);
}

TEST(ForwardInvariants, SequenceLongerThanContextIsAnError) {
    TinySpec s;
    s.max_seq = 8;
    auto [m, n] = make_tiny(s);
    EXPECT_THROW(m->forward(ids({1, 2, 3, 4, 5, 6, 7, 8, 9})), Error);
    EXPECT_THROW(m->forward(ids({1, 99})), Error);  // token id out of range
}

TEST(Perplexity, MatchesNaiveNll) {
    auto [m, n] = make_tiny({});
    std::vector<std::vector<int32_t>> docs{{1, 4, 6, 8, 3, 9}, {1, 7, 5}, {1, 10, 10, 3}};
    double nll = 0;
    int count = 0;
    for (auto& d : docs) {
        std::vector<int> di(d.begin(), d.end());
        naive::Mat lg = naive::forward(n, di);
        for (size_t t = 0; t + 1 < d.size(); ++t) {
            double mx = -1e300, z = 0;
            for (double v : lg[t]) mx = std::max(mx, v);
            for (double v : lg[t]) z += std::exp(v - mx);
            nll -= lg[t][d[t + 1]] - mx - std::log(z);
            ++count;
        }
    }
    PerplexityOptions o;
    o.max_batch_tokens = 7;  // forces several batches
    auto r = perplexity(*m, docs, o);
    EXPECT_EQ(r.tokens, count);
    EXPECT_EQ(r.docs, 3);
    EXPECT_NEAR(r.mean_nll, nll / count, 1e-5);
    EXPECT_NEAR(r.ppl, std::exp(nll / count), 1e-4 * r.ppl);
}

TEST(Perplexity, PrefixOfBosEqualsPlainBos) {
    // A cushion that is just <bos> must give exactly the plain protocol's numbers.
    auto [m, n] = make_tiny({});
    std::vector<std::vector<int32_t>> docs{{1, 4, 6, 8, 3, 9}, {1, 7, 5}};
    auto plain = perplexity(*m, docs);
    KVCache prefix;
    ForwardArgs a;
    a.present = &prefix;
    at::Tensor last = m->forward(ids({1}), a)[0][0];
    PerplexityOptions o;
    o.prefix = &prefix;
    o.prefix_last_logits = last;
    auto with = perplexity(*m, docs, o);
    EXPECT_EQ(with.tokens, plain.tokens);
    EXPECT_NEAR(with.mean_nll, plain.mean_nll, 1e-6);
}

TEST(Generation, GreedyIsArgmaxOfFullRecompute) {
    auto [m, n] = make_tiny({});
    GenerateOptions o;
    o.max_new_tokens = 10;
    o.stop_at_eos = false;
    auto out = generate(*m, {1, 4}, o);
    ASSERT_EQ(out.size(), 10u);
    std::vector<int> seq{1, 4};
    for (int i = 0; i < 10; ++i) {
        naive::Mat lg = naive::forward(n, seq);
        const auto& last = lg.back();
        int best = std::max_element(last.begin(), last.end()) - last.begin();
        EXPECT_EQ(out[i], best) << "step " << i;
        seq.push_back(out[i]);
    }
}

TEST(Generation, SamplingIsSeededAndDeterministic) {
    auto [m, n] = make_tiny({});
    GenerateOptions o;
    o.max_new_tokens = 12;
    o.temperature = 1.0;
    o.stop_at_eos = false;
    o.seed = 123;
    auto a = generate(*m, {1}, o);
    auto b = generate(*m, {1}, o);
    EXPECT_EQ(a, b);
    o.seed = 124;
    auto c = generate(*m, {1}, o);
    EXPECT_NE(a, c);
}

TEST(Probe, SummariesMatchFullTensors) {
    auto [m, n] = make_tiny({});
    std::vector<std::vector<int32_t>> docs{{1, 4, 6, 8, 3, 9}, {1, 7, 5}};
    at::Tensor tokens, valid;
    pad_batch(docs, &tokens, &valid);
    ProbeOptions po;
    po.keep_full = true;
    po.top_k = 5;
    ActivationProbe probe(2, po);
    ForwardArgs a;
    a.hook = &probe;
    a.valid = valid;
    m->forward(tokens, a);
    auto r = probe.take();
    for (int l = 0; l < 2; ++l)
        for (int s = 0; s < kSiteCount; ++s) {
            const SiteSummary& S = r->at(l, static_cast<Site>(s));
            ASSERT_TRUE(S.defined());
            at::Tensor ax = S.full.abs();  // (B, T, C)
            const int64_t C = ax.size(2);
            // Per-token max over channels, zero on padding.
            for (int64_t b = 0; b < 2; ++b)
                for (int64_t t = 0; t < 6; ++t) {
                    const bool real = t < (int64_t)docs[b].size();
                    const float want = real ? ax[b][t].max().item<float>() : 0.f;
                    EXPECT_FLOAT_EQ(S.token_max[b][t].item<float>(), want);
                    if (real) {  // the channel of that max and the signed value there
                        const int64_t ch = S.token_channel[b][t].item<int64_t>();
                        EXPECT_FLOAT_EQ(ax[b][t][ch].item<float>(), want);
                        EXPECT_FLOAT_EQ(S.token_value[b][t].item<float>(), S.full[b][t][ch].item<float>());
                    }
                }
            // Per-channel max over real tokens only.
            for (int64_t c = 0; c < C; ++c) {
                float want = 0;
                for (int64_t b = 0; b < 2; ++b)
                    for (int64_t t = 0; t < (int64_t)docs[b].size(); ++t) want = std::max(want, ax[b][t][c].item<float>());
                EXPECT_FLOAT_EQ(S.channel_max[c].item<float>(), want);
            }
            // The top outlier is the largest |x| among real tokens, with its signed value.
            ASSERT_FALSE(S.top.empty());
            const Outlier& o = S.top[0];
            EXPECT_LT(o.token, (int64_t)docs[o.batch].size());
            EXPECT_FLOAT_EQ(std::fabs(o.value), S.channel_max.max().item<float>());
            EXPECT_FLOAT_EQ(o.value, S.full[o.batch][o.token][o.channel].item<float>());
            for (size_t i = 1; i < S.top.size(); ++i) EXPECT_GE(std::fabs(S.top[i - 1].value), std::fabs(S.top[i].value));
        }
    EXPECT_EQ(r->layer_token_map(Site::DownIn, 0).sizes(), at::IntArrayRef({2, 6}));
}
