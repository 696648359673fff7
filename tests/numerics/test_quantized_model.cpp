// The simulated quantized model on tiny random models and stories260K: activation ranges (prefix
// excluded, padding ignored), SmoothQuant folding, weight/activation/KV fake quantization, and the
// quantization loss L_q with its stop-gradient derivative.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>

#include "model/activation_probe.h"
#include "quant/activation_ranges.h"
#include "base/error.h"
#include "package/open_target.h"
#include "model/perplexity.h"
#include "quant/quant_loss.h"
#include "quant/quantized_model.h"
#include "quant/quantizer.h"
#include "quant/smoothquant.h"
#include "test_support.h"
#include "tiny_models.h"

using namespace cushion;
using namespace cushion::test;

namespace {

using Docs = std::vector<std::vector<int32_t>>;

at::Tensor ids(const std::vector<int32_t>& v) {
    return at::tensor(std::vector<int64_t>(v.begin(), v.end()), at::kLong).unsqueeze(0);
}

double max_abs(const at::Tensor& t) { return t.abs().max().item<double>(); }

const Docs kDocs = {{1, 4, 5, 6, 7, 8, 3}, {1, 9, 3}, {1, 5, 5, 5, 10, 2, 4, 6, 8}, {1, 7, 7, 3, 4}};

// The prefix KV of running `toks` (and the logits at its last position).
KVCache make_prefix(const Model& m, const std::vector<int32_t>& toks, at::Tensor* last_logits = nullptr) {
    at::NoGradGuard g;
    KVCache kv;
    ForwardArgs a;
    a.present = &kv;
    at::Tensor logits = m.forward(ids(toks), a);
    if (last_logits) *last_logits = logits[0][-1];
    return kv;
}

// Full activations of one forward pass: [layer][site] (B, T, C).
std::shared_ptr<const ProbeResult> probe_full(const Model& m, const at::Tensor& tokens, const KVCache* prefix = nullptr) {
    ProbeOptions po;
    po.keep_full = true;
    ActivationProbe probe(static_cast<int>(m.config.n_layers), po);
    ForwardArgs a;
    a.hook = &probe;
    a.prefix = prefix;
    a.skip_logits = true;
    m.forward(tokens, a);
    return probe.take();
}

TinySpec llama_spec() { return TinySpec{}; }
TinySpec opt_spec() {
    TinySpec s;
    s.opt = true;
    s.kv_heads = 4;
    s.seed = 5;
    return s;
}

}  // namespace

// ------------------------------------------------------------------------------ activation ranges

TEST(CollectActivationRanges, RangesAreMinMaxOverRealTokensWhateverTheBatching) {
    auto [m, n] = make_tiny(llama_spec());
    ActivationRanges batched = collect_activation_ranges(*m, kDocs);  // one padded batch
    ActivationRangeOptions one;
    one.max_batch_tokens = 1;                          // every document alone
    ActivationRanges single = collect_activation_ranges(*m, kDocs, one);
    EXPECT_EQ(batched.tokens, 7 + 3 + 9 + 5);
    EXPECT_EQ(batched.docs, 4);
    EXPECT_EQ(batched.prefix_length, 0);
    // Direct: min / max of every document's activations.
    for (int l = 0; l < m->config.n_layers; ++l)
        for (int si = 0; si < kSiteCount; ++si) {
            double mn = INFINITY, mx = -INFINITY;
            at::Tensor cm;
            for (const auto& d : kDocs) {
                at::Tensor x = probe_full(*m, ids(d))->at(l, static_cast<Site>(si)).full;
                mn = std::min(mn, x.min().item<double>());
                mx = std::max(mx, x.max().item<double>());
                at::Tensor c = x.abs().reshape({-1, x.size(-1)}).amax(0);
                cm = cm.defined() ? at::maximum(cm, c) : c;
            }
            const SiteRange& b = batched.at(l, static_cast<Site>(si));
            const SiteRange& s = single.at(l, static_cast<Site>(si));
            EXPECT_NEAR(b.min, mn, 1e-5) << l << " " << si;
            EXPECT_NEAR(b.max, mx, 1e-5) << l << " " << si;
            EXPECT_NEAR(s.min, mn, 1e-5);
            EXPECT_NEAR(s.max, mx, 1e-5);
            EXPECT_LT(max_abs(b.channel_absmax - cm), 1e-5);
        }
}

TEST(CollectActivationRanges, StaticRangesExcludeThePrefix) {
    auto [m, n] = make_tiny(llama_spec());
    // Token 10 becomes a one-hot embedding of size 100: after RMSNorm it is sqrt(C) = 4 in channel 0, far
    // above anything the ordinary Gaussian tokens reach. It lives only in the prefix.
    at::Tensor e = at::zeros({m->config.dim}, at::kFloat);
    e[0] = 100.0;
    m->weights.tok_emb[10].copy_(e);
    const std::vector<int32_t> prefix_toks{1, 10};
    const Docs docs = {{1, 4, 5, 6, 7, 8, 3}, {1, 9, 3, 6}};
    KVCache prefix = make_prefix(*m, prefix_toks);

    // Reference: run [prefix tokens + text] in full and split the activations into prefix / text positions.
    double prefix_max_attn = -INFINITY, text_max_attn = -INFINITY, prefix_max_res = -INFINITY,
           text_max_res = -INFINITY;
    for (const auto& d : docs) {
        std::vector<int32_t> all = prefix_toks;
        all.insert(all.end(), d.begin() + 1, d.end());
        auto pr = probe_full(*m, ids(all));
        for (auto [site, pmax, tmax] : {std::make_tuple(Site::AttnIn, &prefix_max_attn, &text_max_attn),
                                        std::make_tuple(Site::Residual, &prefix_max_res, &text_max_res)}) {
            at::Tensor x = pr->at(0, site).full[0];  // (T, C)
            *pmax = std::max(*pmax, x.narrow(0, 0, 2).max().item<double>());
            *tmax = std::max(*tmax, x.narrow(0, 2, x.size(0) - 2).max().item<double>());
        }
    }
    ASSERT_GT(prefix_max_attn, text_max_attn + 0.5) << "precondition: the prefix alone holds the maximum";
    ASSERT_GT(prefix_max_res, 10 * text_max_res);

    ActivationRangeOptions co;
    co.prefix = &prefix;
    ActivationRanges r = collect_activation_ranges(*m, docs, co);
    EXPECT_EQ(r.prefix_length, 2);
    EXPECT_EQ(r.tokens, 6 + 3);  // each document without its <bos>
    EXPECT_NEAR(r.at(0, Site::AttnIn).max, text_max_attn, 1e-5);
    EXPECT_LT(r.at(0, Site::AttnIn).max, prefix_max_attn - 0.5);
    EXPECT_NEAR(r.at(0, Site::Residual).max, text_max_res, 1e-4);
    // Without the prefix the collected range is that of [<bos> + text]: a different set of tokens.
    ActivationRanges r0 = collect_activation_ranges(*m, docs);
    EXPECT_EQ(r0.tokens, 7 + 4);
}

TEST(CollectActivationRanges, ClearErrorsAndCancellation) {
    auto [m, n] = make_tiny(llama_spec());
    EXPECT_NE(error_of([&] { collect_activation_ranges(*m, {}); }).find("activation ranges: no documents"), std::string::npos);
    KVCache prefix = make_prefix(*m, {1, 4});
    ActivationRangeOptions co;
    co.prefix = &prefix;
    const std::string e = error_of([&] { collect_activation_ranges(*m, {{1}, {1}}, co); });
    EXPECT_NE(e.find("activation ranges: no tokens"), std::string::npos) << e;
    ActivationRangeOptions cancel;
    cancel.max_batch_tokens = 1;
    int calls = 0;
    cancel.progress = [&](double, const std::string&) { return ++calls < 2; };
    EXPECT_THROW(collect_activation_ranges(*m, kDocs, cancel), Cancelled);
    QuantConfig cfg;
    cfg.abits = 8;  // per-tensor-static by default
    const std::string e2 = error_of([&] { QuantizedModel q(*m, cfg, {}); });
    EXPECT_NE(e2.find("needs documents (--calib)"), std::string::npos) << e2;
    cfg.abits = 7;
    EXPECT_NE(error_of([&] { QuantizedModel q(*m, cfg, kDocs); }).find("activation bits 7"), std::string::npos);
}

// ------------------------------------------------------------------------------------ SmoothQuant

TEST(QuantSmooth, FoldedModelEqualsTheOriginalInFullPrecision) {
    TinySpec qwen;
    qwen.qkv_bias = true;
    qwen.seed = 3;
    TinySpec tied;
    tied.tied = true;
    tied.kv_heads = 4;
    tied.seed = 9;
    for (const TinySpec& spec : {llama_spec(), opt_spec(), qwen, tied}) {
        auto [m, n] = make_tiny(spec);
        at::Tensor norm_before = m->weights.layers[0].attn_norm.clone();
        at::Tensor wq_before = m->weights.layers[1].wq.clone();
        ActivationRanges r = collect_activation_ranges(*m, kDocs);
        SmoothFactors f = smoothquant_factors(*m, r, 0.8);
        // The formula, channel by channel, for layer 0's q/k/v input.
        const auto& L0 = m->weights.layers[0];
        at::Tensor wmax = at::cat({L0.wq, L0.wk, L0.wv}, 0).abs().amax(0).to(at::kDouble);
        at::Tensor amax = r.at(0, Site::AttnIn).channel_absmax.to(at::kDouble);
        at::Tensor expect = (amax.pow(0.8) / wmax.pow(0.2)).clamp_min(1e-5).to(at::kFloat);
        EXPECT_TRUE(at::allclose(f.attn[0], expect, 1e-6, 0));
        EXPECT_GT((f.attn[0].max() / f.attn[0].min()).item<double>(), 1.5) << "factors should be non-trivial";

        auto sm = smoothquant_model(*m, f);
        at::Tensor tokens = ids({1, 5, 3, 7, 7, 4, 9, 10, 3, 6, 8, 2, 5});
        at::Tensor a = m->forward(tokens), b = sm->forward(tokens);
        EXPECT_LT(max_abs(a - b), 1e-5) << "opt=" << spec.opt << " bias=" << spec.qkv_bias;
        // Only the folded tensors are new; the original is untouched.
        EXPECT_TRUE(at::equal(m->weights.layers[0].attn_norm, norm_before));
        EXPECT_TRUE(at::equal(m->weights.layers[1].wq, wq_before));
        EXPECT_EQ(sm->weights.tok_emb.data_ptr(), m->weights.tok_emb.data_ptr());
        EXPECT_EQ(sm->weights.layers[0].wo.data_ptr(), m->weights.layers[0].wo.data_ptr());
        EXPECT_NE(sm->weights.layers[0].wq.data_ptr(), m->weights.layers[0].wq.data_ptr());
        // After folding, the activation channel maxima are divided by s.
        ActivationRanges r2 = collect_activation_ranges(*sm, kDocs);
        for (int l = 0; l < m->config.n_layers; ++l) {
            EXPECT_TRUE(at::allclose(r2.at(l, Site::AttnIn).channel_absmax, r.at(l, Site::AttnIn).channel_absmax / f.attn[l],
                                     1e-4, 1e-6));
            EXPECT_TRUE(at::allclose(r2.at(l, Site::MlpIn).channel_absmax, r.at(l, Site::MlpIn).channel_absmax / f.mlp[l],
                                     1e-4, 1e-6));
        }
    }
}

TEST(QuantSmooth, RejectsBadAlphaAndPostLayerNormOpt) {
    auto [m, n] = make_tiny(opt_spec());
    ActivationRanges r = collect_activation_ranges(*m, kDocs);
    EXPECT_NE(error_of([&] { smoothquant_factors(*m, r, 1.5); }).find("alpha"), std::string::npos);
    m->config.do_layer_norm_before = false;
    EXPECT_NE(error_of([&] { smoothquant_factors(*m, r, 0.8); }).find("do_layer_norm_before"), std::string::npos);
}

// ------------------------------------------------------------------------------------ quantized model

TEST(QuantModel, DisabledQuantizationEqualsThePlainForward) {
    for (const TinySpec& spec : {llama_spec(), opt_spec()}) {
        auto [m, n] = make_tiny(spec);
        QuantizedModel q(*m, QuantConfig{});
        EXPECT_EQ(q.hook(), nullptr);
        at::Tensor tokens, valid;
        pad_batch(kDocs, &tokens, &valid);
        at::Tensor last;
        KVCache prefix = make_prefix(*m, {1, 4, 6}, &last);
        ForwardArgs a;
        a.valid = valid;
        a.prefix = &prefix;
        EXPECT_TRUE(at::equal(q.forward(tokens, a), m->forward(tokens, a)));
        PerplexityOptions po;
        po.prefix = &prefix;
        po.prefix_last_logits = last;
        EXPECT_EQ(q.perplexity(kDocs, po).ppl, perplexity(*m, kDocs, po).ppl);

        // 16-bit activations (every granularity, all four sites) with full-precision weights: near-identical.
        // (Without the prefix: static ranges are collected on exactly these documents.)
        a.prefix = nullptr;
        for (auto g : {ActGranularity::PerToken, ActGranularity::PerTensorDynamic, ActGranularity::PerTensorStatic}) {
            QuantConfig c;
            c.abits = 16;
            c.act = g;
            QuantizedModel q16(*m, c, kDocs);
            ASSERT_NE(q16.hook(), nullptr);
            // Real positions only: padding positions' logits are meaningless (their activations are clamped to
            // ranges they did not take part in).
            at::Tensor real = valid.unsqueeze(-1);
            at::Tensor d = (q16.forward(tokens, a) - m->forward(tokens, a)).masked_fill(at::logical_not(real), 0);
            EXPECT_LT(max_abs(d), 2e-3) << granularity_name(g);
        }
    }
}

TEST(QuantModel, WeightsAreFakeQuantizedInAShallowCopy) {
    auto [m, n] = make_tiny(llama_spec());  // dim 16, hidden 24
    QuantConfig c;
    c.wbits = 4;
    c.group = 8;
    QuantizedModel q(*m, c);
    EXPECT_EQ(q.hook(), nullptr);
    EXPECT_TRUE(q.notes().empty());
    const Model& qm = q.model();
    for (int l = 0; l < m->config.n_layers; ++l) {
        const auto& A = m->weights.layers[l];
        const auto& B = qm.weights.layers[l];
        for (auto [a, b] : {std::make_pair(&A.wq, &B.wq), std::make_pair(&A.wk, &B.wk), std::make_pair(&A.wv, &B.wv),
                            std::make_pair(&A.wo, &B.wo), std::make_pair(&A.w_gate, &B.w_gate),
                            std::make_pair(&A.w_up, &B.w_up), std::make_pair(&A.w_down, &B.w_down)}) {
            EXPECT_TRUE(at::equal(*b, fake_quant_weight(*a, 4, 8)));
            EXPECT_FALSE(at::equal(*a, *b));
        }
        EXPECT_EQ(B.attn_norm.data_ptr(), A.attn_norm.data_ptr());
    }
    EXPECT_EQ(qm.weights.tok_emb.data_ptr(), m->weights.tok_emb.data_ptr());
    EXPECT_EQ(qm.weights.lm_head.data_ptr(), m->weights.lm_head.data_ptr());
    EXPECT_EQ(qm.fingerprint(), m->fingerprint());
    // group 16 divides dim 16 (q/k/v/o, gate/up) but not hidden 24 (down): a note says so.
    c.group = 16;
    QuantizedModel q16(*m, c);
    ASSERT_EQ(q16.notes().size(), 1u);
    EXPECT_NE(q16.notes()[0].find("down_proj (24 inputs)"), std::string::npos) << q16.notes()[0];
    EXPECT_TRUE(at::equal(q16.model().weights.layers[0].w_down, fake_quant_weight(m->weights.layers[0].w_down, 4, 0)));
}

TEST(QuantModel, PerTokenBeatsPerTensorOnAnOutlierToken) {
    at::manual_seed(11);
    at::Tensor x = at::randn({1, 16, 64}, at::kFloat);
    x[0][0].mul_(1000.0);  // one outlier token, as an attention sink
    auto run = [&](ActGranularity g) {
        QuantConfig c;
        c.abits = 8;
        c.act = g;
        ActQuantHook h(c, 1);
        at::Tensor y = x.clone();
        h.on_activation(0, Site::AttnIn, y, at::Tensor());
        return (y - x).narrow(1, 1, 15).pow(2).sum().item<double>();  // error on the ordinary tokens
    };
    const double per_token = run(ActGranularity::PerToken), per_tensor = run(ActGranularity::PerTensorDynamic);
    EXPECT_GT(per_tensor, 1e4 * per_token) << per_tensor << " vs " << per_token;
}

TEST(QuantModel, PaddingNeverInfluencesDynamicRanges) {
    at::manual_seed(12);
    at::Tensor x = at::randn({2, 5, 8}, at::kFloat);
    x[1].narrow(0, 3, 2).fill_(1e4);  // garbage in the padding of row 1
    at::Tensor valid = at::ones({2, 5}, at::kBool);
    valid[1].narrow(0, 3, 2).fill_(false);
    for (auto g : {ActGranularity::PerTensorDynamic, ActGranularity::PerToken}) {
        QuantConfig c;
        c.abits = 4;
        c.act = g;
        ActQuantHook h(c, 1);
        at::Tensor y = x.clone();
        h.on_activation(0, Site::DownIn, y, valid);
        at::Tensor row1 = x[1].narrow(0, 0, 3).unsqueeze(0).clone(), row0 = x[0].unsqueeze(0).clone();
        h.on_activation(0, Site::DownIn, row1, at::Tensor());
        h.on_activation(0, Site::DownIn, row0, at::Tensor());
        EXPECT_TRUE(at::equal(y[1].narrow(0, 0, 3), row1[0])) << granularity_name(g);
        EXPECT_TRUE(at::equal(y[0], row0[0]));
        h.on_activation(0, Site::Residual, y, valid);  // not a chosen site: untouched
    }
    // Whole model: a padded batch gives every document the logits it gets alone.
    auto [m, n] = make_tiny(llama_spec());
    QuantConfig c;
    c.wbits = 8;
    c.abits = 8;
    c.act = ActGranularity::PerTensorDynamic;
    c.kv_bits = 8;
    QuantizedModel q(*m, c);
    at::Tensor tokens, v;
    pad_batch(kDocs, &tokens, &v);
    ForwardArgs a;
    a.valid = v;
    at::Tensor batched = q.forward(tokens, a);
    for (size_t b = 0; b < kDocs.size(); ++b) {
        at::Tensor alone = q.forward(ids(kDocs[b]))[0];
        EXPECT_LT(max_abs(batched[b].narrow(0, 0, kDocs[b].size()) - alone), 1e-5) << b;
    }
}

TEST(QuantModel, StaticRangesClampAndStraightThroughGradient) {
    ActivationRanges r;
    r.layers.resize(1);
    r.layers[0][static_cast<int>(Site::OIn)].min = -1.0;
    r.layers[0][static_cast<int>(Site::OIn)].max = 1.0;
    QuantConfig c;
    c.abits = 8;
    c.sites = parse_sites("o_in");
    EXPECT_NE(error_of([&] { ActQuantHook h(c, 1); }).find("needs activation ranges"), std::string::npos);
    c.sites = parse_sites("o_in,down_in");
    auto rp = std::make_shared<ActivationRanges>(r);
    EXPECT_NE(error_of([&] { ActQuantHook h(c, 1, rp); }).find("layer 0 down_in"), std::string::npos);
    c.sites = parse_sites("o_in");
    ActQuantHook h(c, 1, rp);
    at::Tensor x = at::tensor(std::vector<float>{-5, -0.5, 0, 0.25, 3}, at::kFloat).view({1, 5, 1});
    at::Tensor y = x.clone();
    h.on_activation(0, Site::OIn, y, at::Tensor());
    const float s = 2.0f / 255;
    // The grid spans [-1, 1] up to the rounding of the zero point (at most s/2 at either end).
    EXPECT_NEAR(y.min().item<float>(), -1.0f, s / 2 + 1e-6);
    EXPECT_NEAR(y.max().item<float>(), 1.0f, s / 2 + 1e-6);
    EXPECT_NEAR(y[0][4][0].item<float>(), 1.0f, s / 2 + 1e-6);
    EXPECT_TRUE(at::equal(y, fake_quant_act(x, act_params(-1.0, 1.0, 8, x))));
    // Straight-through: a grad-requiring activation gets the quantized value and an identity gradient.
    at::Tensor xg = x.clone().requires_grad_(true);
    at::Tensor z = xg;
    h.on_activation(0, Site::OIn, z, at::Tensor());
    EXPECT_LT(max_abs(z.detach() - y), 1e-6);
    z.sum().backward();
    EXPECT_TRUE(at::equal(xg.grad(), at::ones_like(x)));
}

TEST(QuantModel, KvQuantizationLeavesThePrefixAndQuantizesNewKeysPerHeadPerToken) {
    auto [m, n] = make_tiny(llama_spec());
    KVCache prefix = make_prefix(*m, {1, 4, 6});
    QuantConfig c;
    c.kv_bits = 4;
    QuantizedModel q(*m, c);
    ASSERT_NE(q.hook(), nullptr);
    at::Tensor tokens = ids({8, 3, 9, 5, 7});
    KVCache plain, quant;
    ForwardArgs a;
    a.prefix = &prefix;
    a.present = &plain;
    m->forward(tokens, a);
    a.present = &quant;
    at::Tensor lq = q.forward(tokens, a);
    for (int l = 0; l < m->config.n_layers; ++l) {
        EXPECT_TRUE(at::equal(quant.k[l].narrow(2, 0, 3), prefix.k[l]));
        EXPECT_TRUE(at::equal(quant.v[l].narrow(2, 0, 3), prefix.v[l]));
    }
    // Layer 0's new K/V are computed from unquantized inputs: they must be exactly the per-token Q of plain.
    EXPECT_TRUE(at::equal(quant.k[0].narrow(2, 3, 5), fake_quant_act_per_token(plain.k[0].narrow(2, 3, 5), 4)));
    EXPECT_TRUE(at::equal(quant.v[0].narrow(2, 3, 5), fake_quant_act_per_token(plain.v[0].narrow(2, 3, 5), 4)));
    EXPECT_FALSE(at::equal(quant.k[0], plain.k[0]));
    a.present = nullptr;
    EXPECT_GT(max_abs(lq - m->forward(tokens, a)), 1e-4);
}

TEST(QuantModel, StaticCalibratedWithPrefixAndUsableByPerplexity) {
    auto [m, n] = make_tiny(llama_spec());
    at::Tensor last;
    KVCache prefix = make_prefix(*m, {1, 4}, &last);
    QuantConfig c;
    c.wbits = 8;
    c.group = 8;
    c.abits = 8;
    c.smoothquant_alpha = 0.8;
    QuantizeOptions qo;
    qo.prefix = &prefix;
    std::vector<double> fractions;
    qo.progress = [&](double f, const std::string&) { fractions.push_back(f); return true; };
    auto q = make_quantized_model(*m, c, kDocs, qo);
    ASSERT_TRUE(q->ranges());
    EXPECT_EQ(q->ranges()->prefix_length, 2);
    ASSERT_NE(q->smooth(), nullptr);
    ASSERT_FALSE(fractions.empty());
    EXPECT_DOUBLE_EQ(fractions.back(), 1.0);
    for (size_t i = 1; i < fractions.size(); ++i) EXPECT_GE(fractions[i], fractions[i - 1]);
    PerplexityOptions po;
    po.prefix = &prefix;
    po.prefix_last_logits = last;
    const double fp = perplexity(*m, kDocs, po).ppl;
    po.hook = q->hook();
    const double viaHook = perplexity(q->model(), kDocs, po).ppl;
    po.hook = nullptr;
    const double viaClass = q->perplexity(kDocs, po).ppl;
    EXPECT_EQ(viaHook, viaClass);
    EXPECT_TRUE(std::isfinite(viaHook));
    EXPECT_NEAR(viaHook / fp, 1.0, 0.05) << fp << " -> " << viaHook;
}

// ------------------------------------------------------------------------------------ quantization loss

TEST(QuantLoss, PerRowSumOfSquaredErrorsOverRealTokens) {
    at::manual_seed(13);
    at::Tensor x = at::randn({2, 3, 4}, at::kDouble);
    x[1][2].fill_(1e3);  // padding: must not count, nor widen the range
    at::Tensor valid = at::ones({2, 3}, at::kBool);
    valid[1][2] = false;
    at::Tensor l = quant_loss_rows(x, valid, 8);
    ASSERT_EQ(l.scalar_type(), at::kDouble);
    at::Tensor a0 = x[0], a1 = x[1].narrow(0, 0, 2);
    EXPECT_NEAR(l[0].item<double>(), (a0 - fake_quant_act_per_tensor(a0, 8)).pow(2).sum().item<double>(), 1e-15);
    EXPECT_NEAR(l[1].item<double>(), (a1 - fake_quant_act_per_tensor(a1, 8)).pow(2).sum().item<double>(), 1e-15);
    EXPECT_GT(quant_loss_rows(x, valid, 4)[0].item<double>(), 10 * l[0].item<double>());
    // An outlier inflates the loss of its own row only.
    at::Tensor y = x.clone();
    y[0][1][2] = 50.0;
    at::Tensor ly = quant_loss_rows(y, valid, 8);
    EXPECT_GT(ly[0].item<double>(), 100 * l[0].item<double>());
    EXPECT_EQ(ly[1].item<double>(), l[1].item<double>());
}

TEST(QuantLoss, GradientIsTheStopGradientFormAndMatchesFiniteDifferences) {
    at::manual_seed(14);
    at::Tensor x0 = at::randn({1, 4, 3}, at::kDouble);
    at::Tensor x = x0.clone().requires_grad_(true);
    at::Tensor loss = quant_loss_rows(x, at::Tensor(), 4).sum();
    loss.backward();
    at::Tensor g = x.grad();
    // Documented derivative: 2 (A - Q(A)) everywhere, Q's scale/zero/rounding held constant.
    at::Tensor q = fake_quant_act_per_tensor(x0, 4);
    EXPECT_LT(max_abs(g - 2 * (x0 - q)), 1e-12);
    // Central finite differences on the true loss: Q is locally constant in every element that is
    // neither the minimum nor the maximum (those set the scale), so there the derivatives agree.
    const int64_t imin = x0.argmin().item<int64_t>(), imax = x0.argmax().item<int64_t>();
    const double eps = 1e-7;
    int checked = 0;
    for (int64_t i = 0; i < x0.numel(); ++i) {
        if (i == imin || i == imax) continue;
        at::Tensor xp = x0.clone(), xm = x0.clone();
        xp.view({-1})[i] += eps;
        xm.view({-1})[i] -= eps;
        const double fd = (quant_loss_rows(xp, at::Tensor(), 4).item<double>() -
                           quant_loss_rows(xm, at::Tensor(), 4).item<double>()) / (2 * eps);
        EXPECT_NEAR(fd, g.view({-1})[i].item<double>(), 1e-6) << i;
        ++checked;
    }
    EXPECT_EQ(checked, 10);
}

TEST(QuantLoss, HookMatchesPerDocumentRunsAndBreakdownSums) {
    auto [m, n] = make_tiny(llama_spec());
    at::Tensor tokens, valid;
    pad_batch(kDocs, &tokens, &valid);
    QuantLossOptions lo;
    lo.breakdown = true;
    QuantLossHook hook(lo);
    ForwardArgs a;
    a.valid = valid;
    at::Tensor plain = m->forward(tokens, a);
    a.hook = &hook;
    at::Tensor with_hook = m->forward(tokens, a);
    EXPECT_TRUE(at::equal(plain, with_hook)) << "the loss hook only observes";
    at::Tensor l = hook.loss();
    ASSERT_EQ(l.sizes(), (std::vector<int64_t>{4}));
    EXPECT_EQ(l.scalar_type(), at::kDouble);
    for (size_t b = 0; b < kDocs.size(); ++b) {
        const double alone = quantization_loss(*m, ids(kDocs[b]))[0].item<double>();
        EXPECT_NEAR(l[b].item<double>(), alone, 1e-4 * alone) << b;
    }
    at::Tensor bd = hook.breakdown();  // (L, S, B)
    ASSERT_EQ(bd.sizes(), (std::vector<int64_t>{m->config.n_layers, kSiteCount, 4}));
    EXPECT_LT(max_abs(bd.sum(std::vector<int64_t>{0, 1}) - l.cpu()), 1e-9 * l.max().item<double>());
    EXPECT_EQ(bd.select(1, static_cast<int>(Site::Residual)).abs().max().item<double>(), 0.0);
    EXPECT_TRUE(at::equal(hook.site_loss(1, Site::DownIn), bd[1][static_cast<int>(Site::DownIn)]));
    // One site only equals that slice of the breakdown.
    QuantLossOptions down;
    down.sites = parse_sites("down_in");
    a.hook = nullptr;
    at::Tensor ld = quantization_loss(*m, tokens, a, down);
    EXPECT_LT(max_abs(ld - bd.select(1, static_cast<int>(Site::DownIn)).sum(0)), 1e-9 * ld.max().item<double>());
    hook.reset();
    EXPECT_FALSE(hook.loss().defined());
    QuantLossOptions bad;
    bad.bits = 3;
    EXPECT_THROW(QuantLossHook h(bad), Error);
    QuantLossHook nob;
    EXPECT_THROW(nob.breakdown(), Error);
}

TEST(QuantLoss, PrefixIsNeverInTheLossAndGradientsReachThePrefixKV) {
    auto [m, n] = make_tiny(llama_spec());
    KVCache prefix = make_prefix(*m, {1, 10, 4});
    at::Tensor tokens = ids({5, 6, 7, 8, 3, 9});
    // The loss equals L_q over the hooked activations, which hold the text tokens only (T = 6).
    ForwardArgs a;
    a.prefix = &prefix;
    const double l = quantization_loss(*m, tokens, a)[0].item<double>();
    auto pr = probe_full(*m, tokens, &prefix);
    double manual = 0;
    for (int L = 0; L < m->config.n_layers; ++L)
        for (Site s : {Site::AttnIn, Site::OIn, Site::MlpIn, Site::DownIn}) {
            at::Tensor x = pr->at(L, s).full;
            ASSERT_EQ(x.size(1), 6);
            manual += quant_loss_rows(x, at::Tensor(), 8)[0].item<double>();
        }
    EXPECT_NEAR(l, manual, 1e-6 * manual);

    // Candidate prefixes in one batch: each row's loss equals its prefix run alone.
    KVCache p2 = make_prefix(*m, {1, 7, 9}), p3 = make_prefix(*m, {1, 3, 3});
    KVCache batch;
    for (int L = 0; L < m->config.n_layers; ++L) {
        batch.k.push_back(at::cat({prefix.k[L], p2.k[L], p3.k[L]}, 0));
        batch.v.push_back(at::cat({prefix.v[L], p2.v[L], p3.v[L]}, 0));
    }
    ForwardArgs ab;
    ab.prefix = &batch;
    at::Tensor lb = quantization_loss(*m, tokens.expand({3, 6}), ab);
    int r = 0;
    for (const KVCache* p : {&prefix, &p2, &p3}) {
        ForwardArgs a1;
        a1.prefix = p;
        const double alone = quantization_loss(*m, tokens, a1)[0].item<double>();
        EXPECT_NEAR(lb[r++].item<double>(), alone, 1e-5 * alone);
    }

    // Prefix tuning: the KV tensors are trainable; the gradient of L_q reaches them.
    at::AutoGradMode grad(true);
    KVCache train;
    for (int L = 0; L < m->config.n_layers; ++L) {
        train.k.push_back(prefix.k[L].clone().requires_grad_(true));
        train.v.push_back(prefix.v[L].clone().requires_grad_(true));
    }
    ForwardArgs at_;
    at_.prefix = &train;
    at::Tensor lt = quantization_loss(*m, tokens, at_);
    ASSERT_TRUE(lt.requires_grad());
    EXPECT_NEAR(lt[0].item<double>(), l, 1e-6 * l);
    lt.sum().backward();
    for (int L = 0; L < m->config.n_layers; ++L) {
        ASSERT_TRUE(train.v[L].grad().defined()) << L;
        EXPECT_TRUE(at::isfinite(train.v[L].grad()).all().item<bool>());
        EXPECT_GT(max_abs(train.v[L].grad()), 0.0) << L;
    }
    EXPECT_GT(max_abs(train.k[0].grad()), 0.0);
}

// ------------------------------------------------------------------------------------ stories260K

TEST(SlowQuantStories, PerplexityTable) {
    auto m = load_model(stories_bin());
    const Docs eval = tokenize_documents(*m, read_documents(eval_text()), m->config.max_seq_len);
    const Docs calib = tokenize_documents(*m, read_documents(calib_text()), m->config.max_seq_len);
    auto t0 = std::chrono::steady_clock::now();
    const double fp = perplexity(*m, eval).ppl;
    const double fp_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    struct Row {
        const char* label;
        int w, a;
        ActGranularity g;
        double alpha;
    };
    const Row rows[] = {
        {"W8A8 per-token", 8, 8, ActGranularity::PerToken, -1},
        {"W8A8 per-tensor-dynamic", 8, 8, ActGranularity::PerTensorDynamic, -1},
        {"W8A8 per-tensor-static", 8, 8, ActGranularity::PerTensorStatic, -1},
        {"W8A8 per-token + SQ0.8", 8, 8, ActGranularity::PerToken, 0.8},
        {"W8A8 per-tensor-dynamic + SQ0.8", 8, 8, ActGranularity::PerTensorDynamic, 0.8},
        {"W8A8 per-tensor-static + SQ0.8", 8, 8, ActGranularity::PerTensorStatic, 0.8},
        {"W8A6 per-tensor-static", 8, 6, ActGranularity::PerTensorStatic, -1},
        {"W8A6 per-tensor-static + SQ0.8", 8, 6, ActGranularity::PerTensorStatic, 0.8},
        {"W8A4 per-tensor-static", 8, 4, ActGranularity::PerTensorStatic, -1},
        {"W8A4 per-tensor-static + SQ0.8", 8, 4, ActGranularity::PerTensorStatic, 0.8},
    };
    std::printf("stories260K eval perplexity (%zu docs), calibration %zu docs\n", eval.size(), calib.size());
    std::printf("  %-52s %10.4f   (%.2f s)\n", "FP32", fp, fp_s);
    double per_token = 0;
    for (const Row& r : rows) {
        QuantConfig c;
        c.wbits = r.w;
        c.abits = r.a;
        c.act = r.g;
        c.smoothquant_alpha = r.alpha;
        t0 = std::chrono::steady_clock::now();
        QuantizedModel q(*m, c, calib);
        const double build_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        PerplexityOptions po;
        po.hook = q.hook();
        t0 = std::chrono::steady_clock::now();
        const double p = perplexity(q.model(), eval, po).ppl;
        const double ppl_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::printf("  %-52s %10.4f   (build %.2f s, ppl %.2f s)\n", r.label, p, build_s, ppl_s);
        EXPECT_TRUE(std::isfinite(p)) << r.label;
        EXPECT_GE(p, fp * 0.97) << r.label;
        if (std::string(r.label) == "W8A8 per-token") per_token = p;
    }
    EXPECT_NEAR(per_token / fp, 1.0, 0.05);
}
