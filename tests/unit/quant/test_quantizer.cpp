// Quantizer primitives (core/quantizer.h) on hand-worked cases, error bounds and invariants, and the
// quantization settings (core/quant_config.h).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>

#include "base/error.h"
#include "quant/quant_config.h"
#include "quant/quantizer.h"
#include "test_support.h"

using namespace cushion;
using namespace cushion::test;

namespace {

at::Tensor vec(std::vector<float> v) { return at::tensor(v, at::kFloat); }

void expect_equal(const at::Tensor& a, const at::Tensor& b) {
    ASSERT_EQ(a.sizes(), b.sizes());
    EXPECT_TRUE(at::equal(a, b)) << "got\n" << a << "\nexpected\n" << b;
}

double max_abs(const at::Tensor& t) { return t.abs().max().item<double>(); }

}  // namespace

// ------------------------------------------------------------------------------------ activations

TEST(QuantizerAct, RoundsHalvesToEven) {
    // Range [0, 255] with 8 bits: s = 1, z = 0, so Q is plain rounding.
    at::Tensor x = vec({0, 0.5f, 1.5f, 2.5f, 3.5f, 254.5f, 255});
    expect_equal(fake_quant_act_per_tensor(x, 8), vec({0, 0, 2, 2, 4, 254, 255}));
    // Range [-128, 127]: s = 1, z = 128; negative halves round to even as well (-2.5 -> -2, -1.5 -> -2).
    at::Tensor y = vec({-128, -2.5f, -1.5f, -0.5f, 0.5f, 127});
    expect_equal(fake_quant_act_per_tensor(y, 8), vec({-128, -2, -2, 0, 0, 127}));
    ActQuantParams p = act_params_per_tensor(y, 8);
    EXPECT_EQ(p.scale.item<float>(), 1.0f);
    EXPECT_EQ(p.zero.item<float>(), 128.0f);
}

TEST(QuantizerAct, ClampsOutsideTheRange) {
    // A static range [0, 15] with 4 bits: s = 1, z = 0; values outside clamp to the ends.
    ActQuantParams p = act_params(0.0, 15.0, 4, vec({0}));
    expect_equal(fake_quant_act(vec({-3, 20, 7.2f, 15.4f, -0.4f}), p), vec({0, 15, 7, 15, 0}));
    QuantizedActivation q = quantize_act(vec({-3, 20, 7.2f}), p);
    expect_equal(q.q, at::tensor(std::vector<int32_t>{0, 15, 7}, at::kInt));
}

TEST(QuantizerAct, ZeroPointHandWorked) {
    // [-1, 3], 4 bits: s = 4/15, z = round(1 / (4/15)) = round(3.75) = 4.
    at::Tensor x = vec({-1, 0, 1, 3});
    ActQuantParams p = act_params_per_tensor(x, 4);
    const float s = 4.0f / 15.0f;
    EXPECT_FLOAT_EQ(p.scale.item<float>(), s);
    EXPECT_EQ(p.zero.item<float>(), 4.0f);
    QuantizedActivation q = quantize_act(x, p);
    // codes: round(-3.75)+4 = 0, 0+4 = 4, round(3.75)+4 = 8, round(11.25)+4 = 15
    expect_equal(q.q, at::tensor(std::vector<int32_t>{0, 4, 8, 15}, at::kInt));
    EXPECT_EQ(q.zero.item<int64_t>(), 4);
    at::Tensor fq = fake_quant_act(x, p);
    EXPECT_TRUE(at::allclose(fq, vec({-4 * s, 0, 4 * s, 11 * s}), 0, 1e-6));
    EXPECT_EQ(fq[1].item<float>(), 0.0f);  // 0 is exactly representable when it is inside the range
    expect_equal(q.dequantize(), fq);
}

TEST(QuantizerAct, ConstantTensorsAreReturnedExactly) {
    for (float c : {3.3f, -2.7f, 0.0f, 1e-30f, -6.5e4f}) {
        at::Tensor x = at::full({3, 5}, c, at::kFloat);
        for (int bits : {4, 6, 8, 16}) {
            at::Tensor q = fake_quant_act_per_tensor(x, bits);
            expect_equal(q, x);
            ActQuantParams p = act_params_per_tensor(x, bits);
            EXPECT_GT(p.scale.item<float>(), 0.0f) << c;
            QuantizedActivation qa = quantize_act(x, p);
            expect_equal(qa.dequantize(), x);
        }
    }
    // Per token: one constant row among ordinary ones.
    at::Tensor x = at::stack({vec({1, 2, 3, 4}), vec({5, 5, 5, 5}), vec({-1, -1, -1, -1})});
    at::Tensor q = fake_quant_act_per_token(x, 4);
    expect_equal(q[1], x[1]);
    expect_equal(q[2], x[2]);
    // A range whose scale underflows (max - min is one denormal step) still gives a finite, tiny error.
    const float d = std::numeric_limits<float>::denorm_min();
    at::Tensor t = vec({0, d, 0});
    at::Tensor qt = fake_quant_act_per_tensor(t, 8);
    EXPECT_TRUE(at::isfinite(qt).all().item<bool>());
    EXPECT_LE(max_abs(qt - t), d);
}

TEST(QuantizerAct, SingleHugeOutlierSwampsPerTensorScale) {
    at::Tensor small = at::linspace(0.1, 1.0, 10, at::kFloat);
    at::Tensor x = at::cat({small, vec({1000})});
    ActQuantParams p = act_params_per_tensor(x, 8);
    const float s = p.scale.item<float>();
    EXPECT_NEAR(s, (1000.0 - 0.1) / 255.0, 1e-4);
    at::Tensor q = fake_quant_act(x, p);
    // Every small value is below s/2 above the minimum: they all collapse onto the level nearest 0.
    EXPECT_EQ(q.narrow(0, 0, 10).abs().max().item<float>(), 0.0f);
    EXPECT_LE(std::fabs(q[10].item<float>() - 1000.0f), s / 2);
    // Per token (two rows: the outlier's and the rest), the small values keep their resolution.
    at::Tensor rows = at::stack({small, at::full({10}, 1000.0f)});
    at::Tensor qr = fake_quant_act_per_token(rows, 8);
    EXPECT_LT(max_abs(qr[0] - small), 0.9 / 255.0);
}

TEST(QuantizerAct, NegativeOnlyAndPositiveOnlyRangesDoNotIncludeZero) {
    // [-10, -2], 8 bits: s = 8/255, z = round(318.75) = 319 (outside [0, 255]): codes still 0 .. 255.
    at::Tensor neg = at::linspace(-10.0, -2.0, 101, at::kFloat);
    ActQuantParams pn = act_params_per_tensor(neg, 8);
    EXPECT_EQ(pn.zero.item<float>(), 319.0f);
    QuantizedActivation qn = quantize_act(neg, pn);
    EXPECT_EQ(qn.q.min().item<int>(), 0);
    EXPECT_EQ(qn.q.max().item<int>(), 255);
    at::Tensor fn = fake_quant_act(neg, pn);
    EXPECT_LT(fn.max().item<float>(), 0.0f);  // no level wasted on 0
    EXPECT_LE(max_abs(fn - neg), pn.scale.item<float>() / 2 * (1 + 1e-4) + 4e-7 * 10);
    // [2, 10]: z = round(-63.75) = -64.
    at::Tensor pos = at::linspace(2.0, 10.0, 101, at::kFloat);
    ActQuantParams pp = act_params_per_tensor(pos, 8);
    EXPECT_EQ(pp.zero.item<float>(), -64.0f);
    at::Tensor fp = fake_quant_act(pos, pp);
    EXPECT_GT(fp.min().item<float>(), 0.0f);
    EXPECT_LE(max_abs(fp - pos), pp.scale.item<float>() / 2 * (1 + 1e-4) + 4e-7 * 10);
}

TEST(QuantizerAct, ErrorAtMostHalfAStepInsideTheRange) {
    at::manual_seed(3);
    for (int bits : {4, 6, 8, 16}) {
        at::Tensor x = at::randn({6, 40}, at::kFloat) * 3 + 0.7;
        // per tensor
        ActQuantParams p = act_params_per_tensor(x, bits);
        const double s = p.scale.item<double>();
        at::Tensor err = (fake_quant_act(x, p) - x).abs().to(at::kDouble);
        // s/2 plus float32 rounding of x/s and s*(q-z) (a few ulps of |x|)
        EXPECT_LE(err.max().item<double>(), s / 2 * (1 + 1e-4) + 4e-7 * max_abs(x)) << bits;
        // per token
        ActQuantParams pt = act_params_per_token(x, bits);
        at::Tensor errt = (fake_quant_act(x, pt) - x).abs().to(at::kDouble);
        at::Tensor bound = pt.scale.to(at::kDouble) / 2 * (1 + 1e-4) + 4e-7 * max_abs(x);
        EXPECT_TRUE((errt <= bound).all().item<bool>()) << bits;
        // every code within [0, 2^b - 1] and the extremes used
        QuantizedActivation q = quantize_act(x, p);
        EXPECT_EQ(q.q.min().item<int>(), 0);
        EXPECT_EQ(q.q.max().item<int>(), act_qmax(bits));
    }
}

TEST(QuantizerAct, Idempotent) {
    at::manual_seed(4);
    for (int bits : {4, 6, 8, 16}) {
        at::Tensor x = at::randn({5, 33}, at::kFloat) * 2;
        ActQuantParams p = act_params_per_tensor(x, bits);
        at::Tensor q1 = fake_quant_act(x, p);
        expect_equal(fake_quant_act(q1, p), q1);  // same parameters: bitwise
        ActQuantParams pt = act_params_per_token(x, bits);
        at::Tensor qt = fake_quant_act(x, pt);
        expect_equal(fake_quant_act(qt, pt), qt);
        // Recomputing min-max on Q(x): the range is [-s z, s (2^b-1-z)], the same grid up to rounding.
        at::Tensor q2 = fake_quant_act_per_tensor(q1, bits);
        EXPECT_LE(max_abs(q2 - q1), 1e-5 * p.scale.item<double>() + 1e-6 * max_abs(x)) << bits;
    }
}

TEST(QuantizerAct, DequantizedCodesEqualFakeQuantAndDtypesArePreserved) {
    at::manual_seed(5);
    at::Tensor x = at::randn({4, 7}, at::kFloat);
    for (int bits : {4, 8, 16}) {
        ActQuantParams p = act_params_per_token(x, bits);
        QuantizedActivation q = quantize_act(x, p);
        EXPECT_EQ(q.q.scalar_type(), at::kInt);
        EXPECT_EQ(q.zero.scalar_type(), at::kLong);
        expect_equal(q.dequantize(), fake_quant_act(x, p));
    }
    at::Tensor xh = x.to(at::kBFloat16);
    EXPECT_EQ(fake_quant_act_per_tensor(xh, 8).scalar_type(), at::kBFloat16);
    at::Tensor xd = x.to(at::kDouble);
    EXPECT_EQ(fake_quant_act_per_tensor(xd, 8).scalar_type(), at::kDouble);
}

TEST(QuantizerAct, RowMinMaxIgnoresPadding) {
    at::Tensor x = at::zeros({2, 3, 2}, at::kFloat);
    x[0] = vec({1.f, -2.f, 3.f, 4.f, 500.f, -500.f}).view({3, 2});  // last token is padding
    x[1] = vec({7.f, 7.f, 9.f, 9.f, 9.f, 9.f}).view({3, 2});        // all padding
    at::Tensor valid = at::tensor(std::vector<uint8_t>{1, 1, 0, 0, 0, 0}).to(at::kBool).view({2, 3});
    at::Tensor mn, mx;
    row_minmax(x, valid, &mn, &mx);
    EXPECT_EQ(mn.sizes(), (std::vector<int64_t>{2, 1, 1}));
    EXPECT_EQ(mn[0].item<float>(), -2.0f);
    EXPECT_EQ(mx[0].item<float>(), 4.0f);
    EXPECT_EQ(mn[1].item<float>(), 0.0f);  // no real token: degenerate 0 range
    EXPECT_EQ(mx[1].item<float>(), 0.0f);
}

TEST(QuantizerAct, RejectsUnsupportedBits) {
    for (int b : {0, 1, 3, 5, 7, 9, 32}) EXPECT_NE(error_of([&] { act_qmax(b); }).find("bits"), std::string::npos) << b;
    EXPECT_EQ(act_qmax(4), 15);
    EXPECT_EQ(act_qmax(6), 63);
    EXPECT_EQ(act_qmax(8), 255);
    EXPECT_EQ(act_qmax(16), 65535);
}

// ------------------------------------------------------------------------------------ weights

TEST(QuantizerWeight, SymmetricHandWorkedWithHalvesToEven) {
    // max|w| = 127 with 8 bits: s = 1. Halves to even: -2.5 -> -2, 3.5 -> 4, 0.5 -> 0.
    at::Tensor w = vec({127, -2.5f, 3.5f, -127, 0.4f, 0.5f}).view({1, 6});
    QuantizedWeight q = quantize_weight(w, 8, 0);
    expect_equal(q.q, at::tensor(std::vector<int8_t>{127, -2, 4, -127, 0, 0}).view({1, 6}));
    EXPECT_EQ(q.scale.item<float>(), 1.0f);
    EXPECT_EQ(q.group_size, 6);
    // 4 bits: qmax = 7.
    at::Tensor w4 = vec({7, -7, 3.5f, -0.5f}).view({1, 4});
    expect_equal(quantize_weight(w4, 4, 0).q, at::tensor(std::vector<int8_t>{7, -7, 4, 0}).view({1, 4}));
    expect_equal(fake_quant_weight(w4, 4, 0), vec({7, -7, 4, 0}).view({1, 4}));
}

TEST(QuantizerWeight, RestrictedSymmetricRangeAndErrorBound) {
    at::manual_seed(6);
    for (int bits : {4, 8}) {
        const int64_t qmax = weight_qmax(bits);
        at::Tensor w = at::randn({16, 64}, at::kFloat);
        QuantizedWeight q = quantize_weight(w, bits, 0);
        // -2^(b-1) is never used; every row reaches +-qmax at its abs-max element.
        EXPECT_GE(q.q.min().item<int>(), -qmax);
        EXPECT_LE(q.q.max().item<int>(), qmax);
        EXPECT_TRUE((q.q.to(at::kInt).abs().amax(1) == qmax).all().item<bool>());
        at::Tensor s = q.scale;  // (16, 1)
        EXPECT_EQ(s.sizes(), (std::vector<int64_t>{16, 1}));
        EXPECT_TRUE(at::allclose(s.squeeze(1), w.abs().amax(1) / double(qmax)));
        at::Tensor err = (fake_quant_weight(w, bits, 0) - w).abs();
        EXPECT_TRUE((err <= s / 2 * (1 + 1e-5)).all().item<bool>());
        expect_equal(q.dequantize(), fake_quant_weight(w, bits, 0));
    }
}

TEST(QuantizerWeight, GroupWiseAndFallbackToPerChannel) {
    EXPECT_EQ(effective_group(256, 128), 128);
    EXPECT_EQ(effective_group(172, 128), 172);  // does not divide: per-channel
    EXPECT_EQ(effective_group(128, 128), 128);  // one group == per-channel
    EXPECT_EQ(effective_group(64, 128), 64);    // group larger than the row: per-channel
    EXPECT_EQ(effective_group(64, 0), 64);      // 0 asks for per-channel
    EXPECT_NE(error_of([] { effective_group(64, -1); }).find("negative"), std::string::npos);

    // Two groups of 4 per row: an outlier in one group leaves the other group's resolution intact.
    at::Tensor w = vec({0.1f, -0.2f, 0.3f, 0.4f, 100, 1, -1, 2, 1, 2, 3, 4, 5, 6, 7, -8}).view({2, 8});
    QuantizedWeight g = quantize_weight(w, 8, 4);
    EXPECT_EQ(g.group_size, 4);
    EXPECT_EQ(g.scale.sizes(), (std::vector<int64_t>{2, 2}));
    EXPECT_FLOAT_EQ(g.scale[0][0].item<float>(), 0.4f / 127);
    EXPECT_FLOAT_EQ(g.scale[0][1].item<float>(), 100.0f / 127);
    EXPECT_FLOAT_EQ(g.scale[1][1].item<float>(), 8.0f / 127);
    at::Tensor fq = fake_quant_weight(w, 8, 4);
    EXPECT_LT(max_abs(fq.narrow(1, 0, 4)[0] - w.narrow(1, 0, 4)[0]), 0.4 / 127);
    expect_equal(g.dequantize(), fq);
    // Per-channel on the same matrix: the first row's small values collapse.
    at::Tensor pc = fake_quant_weight(w, 8, 0);
    EXPECT_GT(max_abs(pc.narrow(1, 0, 4)[0] - w.narrow(1, 0, 4)[0]), 0.1);
    // Fallback: group 3 does not divide 8, the result equals per-channel.
    QuantizedWeight f = quantize_weight(w, 8, 3);
    EXPECT_EQ(f.group_size, 8);
    expect_equal(fake_quant_weight(w, 8, 3), pc);
}

TEST(QuantizerWeight, ZeroRowsAndDtypes) {
    at::Tensor w = at::zeros({3, 8}, at::kFloat);
    w[1] = at::arange(8, at::kFloat);
    QuantizedWeight q = quantize_weight(w, 4, 4);
    expect_equal(q.dequantize().narrow(0, 0, 1), w.narrow(0, 0, 1));
    EXPECT_TRUE(at::isfinite(q.scale).all().item<bool>());
    expect_equal(fake_quant_weight(w, 8, 0)[2], w[2]);
    EXPECT_EQ(fake_quant_weight(w.to(at::kHalf), 8, 4).scalar_type(), at::kHalf);
    EXPECT_NE(error_of([&] { quantize_weight(w, 6, 0); }).find("bits"), std::string::npos);
    EXPECT_NE(error_of([&] { quantize_weight(w.view({-1}), 8, 0); }).find("2-D"), std::string::npos);
}

// ------------------------------------------------------------------------------------ config

TEST(QuantConfig, GranularityNames) {
    EXPECT_STREQ(granularity_name(ActGranularity::PerTensorStatic), "per-tensor-static");
    EXPECT_STREQ(granularity_name(ActGranularity::PerTensorDynamic), "per-tensor-dynamic");
    EXPECT_STREQ(granularity_name(ActGranularity::PerToken), "per-token");
    for (auto g : {ActGranularity::PerTensorStatic, ActGranularity::PerTensorDynamic, ActGranularity::PerToken})
        EXPECT_EQ(parse_granularity(granularity_name(g)), g);
    const std::string e = error_of([] { parse_granularity("per-tensor"); });
    EXPECT_NE(e.find("per-tensor-static, per-tensor-dynamic or per-token"), std::string::npos) << e;
}

TEST(QuantConfig, DefaultsAndDescribe) {
    QuantConfig c;
    EXPECT_EQ(c.wbits, 0);
    EXPECT_EQ(c.abits, 0);
    EXPECT_EQ(c.group, 128);
    EXPECT_FALSE(c.smoothquant_on());
    EXPECT_EQ(c.kv_bits, 0);
    EXPECT_EQ(sites_string(c.sites), "attn_in,o_in,mlp_in,down_in");
    EXPECT_NO_THROW(c.validate());
    EXPECT_EQ(c.describe(), "FP");
    EXPECT_FALSE(c.needs_activation_ranges());
    c.wbits = 8;
    c.abits = 8;
    c.smoothquant_alpha = 0.8;
    c.kv_bits = 8;
    EXPECT_EQ(c.describe(), "W8A8 per-tensor-static g128 SQ0.8 KV8 [attn_in,o_in,mlp_in,down_in]");
    EXPECT_TRUE(c.needs_activation_ranges());
    c.smoothquant_alpha = 0;
    c.act = ActGranularity::PerToken;
    EXPECT_FALSE(c.needs_activation_ranges());
    c.abits = 0;
    c.group = 0;
    c.kv_bits = 0;
    EXPECT_EQ(c.describe(), "W8Afp per-channel");
}

TEST(QuantConfig, ValidateRejectsBadSettings) {
    auto bad = [](std::function<void(QuantConfig&)> set, const std::string& words) {
        QuantConfig c;
        set(c);
        const std::string e = error_of([&] { c.validate(); });
        EXPECT_NE(e.find(words), std::string::npos) << "message: " << e;
    };
    bad([](QuantConfig& c) { c.wbits = 3; }, "weight bits 3");
    bad([](QuantConfig& c) { c.wbits = 16; }, "weight bits 16");
    bad([](QuantConfig& c) { c.abits = 5; }, "activation bits 5");
    bad([](QuantConfig& c) { c.abits = -8; }, "activation bits -8");
    bad([](QuantConfig& c) { c.kv_bits = 6; }, "KV-cache bits 6");
    bad([](QuantConfig& c) { c.group = -1; }, "negative");
    bad([](QuantConfig& c) { c.smoothquant_alpha = 1.5; }, "outside [0, 1]");
    bad([](QuantConfig& c) { c.smoothquant_alpha = std::nan(""); }, "outside [0, 1]");
    bad([](QuantConfig& c) { c.sites[static_cast<int>(Site::Residual)] = true; }, "residual");
    bad([](QuantConfig& c) { c.abits = 8; c.sites = {}; }, "no activation site");
    // Accepted corners.
    QuantConfig ok;
    ok.group = 0;
    ok.abits = 16;
    ok.smoothquant_alpha = -1;
    EXPECT_NO_THROW(ok.validate());
    ok.smoothquant_alpha = 1;
    ok.wbits = 4;
    ok.kv_bits = 4;
    EXPECT_NO_THROW(ok.validate());
    ok.sites = {};  // no sites with activations on is an error...
    EXPECT_THROW(ok.validate(), Error);
    ok.abits = 0;   // ...but fine with activations off
    EXPECT_NO_THROW(ok.validate());
}

TEST(QuantConfig, ParseSites) {
    auto s = parse_sites("o_in,down_in");
    EXPECT_EQ(sites_string(s), "o_in,down_in");
    EXPECT_EQ(sites_string(parse_sites("all")), "attn_in,o_in,mlp_in,down_in");
    EXPECT_NE(error_of([] { parse_sites("attn_in,qkv"); }).find("'qkv'"), std::string::npos);
}
