// NaN and Inf reported with the tensor and the layer (issue "hardening"): a model whose weights overflow float32
// in one layer, a model with a NaN weight, a quantizer that makes NaN, a prefix holding Inf. perplexity, the
// probe, the greedy search and prefix tuning name the first layer and site, and the weights that hold NaN/Inf,
// instead of returning "nan".
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "cushion/cushion.h"
#include "cushion/greedy_search.h"
#include "cushion/prefix_tuner.h"
#include "model/activation_probe.h"
#include "model/non_finite.h"
#include "model/perplexity.h"
#include "test_support.h"
#include "tiny_models.h"

using namespace cushion;
using namespace cushion::test;

namespace {

std::shared_ptr<Model> tiny(uint64_t seed = 3) {
    TinySpec s;
    s.seed = seed;
    s.vocab = 13;
    return make_tiny(s).first;
}

// Layer 1's gate and up projections scaled by 1e30: every weight is finite, but silu(gate) * up is about 1e60,
// beyond float32's 3.4e38, at layer 1's down_in; layer 0 and everything before down_in of layer 1 stay finite.
std::shared_ptr<Model> overflowing() {
    auto m = tiny();
    m->weights.layers[1].w_gate = m->weights.layers[1].w_gate * 1e30;
    m->weights.layers[1].w_up = m->weights.layers[1].w_up * 1e30;
    return m;
}

const std::vector<std::vector<int32_t>> kDocs = {{1, 5, 7, 3, 9, 4}, {1, 8, 6, 6, 10, 11, 12, 3}, {1, 4, 4}};

bool has(const std::string& s, const std::string& needle) { return s.find(needle) != std::string::npos; }

at::Tensor row(const std::vector<int32_t>& v) {
    return at::tensor(std::vector<int64_t>(v.begin(), v.end()), at::kLong).unsqueeze(0);
}

// Turns the activation at (layer, site) into NaN: a quantizer whose scales are NaN does this.
struct NanAt : ActivationHook {
    int layer;
    Site site;
    NanAt(int l, Site s) : layer(l), site(s) {}
    void on_activation(int l, Site s, at::Tensor& x, const at::Tensor&) override {
        if (l == layer && s == site) x = x * std::nan("");
    }
};

}  // namespace

TEST(NonFinite, FiniteModelRunsAsBefore) {
    auto m = tiny();
    const auto r = perplexity(*m, kDocs);
    EXPECT_TRUE(std::isfinite(r.ppl));
    EXPECT_EQ(locate_non_finite(*m, row(kDocs[1]), {}).kind, NonFiniteSpot::None);
    EXPECT_TRUE(describe_non_finite_weights(*m).empty());
}

TEST(NonFinite, OverflowInFloat32NamesTheLayerAndSite) {
    auto m = overflowing();
    EXPECT_TRUE(describe_non_finite_weights(*m).empty());
    const NonFiniteSpot s = locate_non_finite(*m, row(kDocs[0]), {});
    EXPECT_EQ(s.kind, NonFiniteSpot::Activation);
    EXPECT_EQ(s.layer, 1);
    EXPECT_EQ(s.site, Site::DownIn);
    const std::string e = error_of([&] { perplexity(*m, kDocs); });
    EXPECT_TRUE(has(e, "perplexity: the activations are NaN or Inf from layer 1 on: first at down_in (the input of "
                       "down_proj: after the gate/up projections and the activation function), document "))
        << e;
    EXPECT_TRUE(has(e, "every weight is finite: the values overflowed fp32")) << e;
}

TEST(NonFinite, NanWeightIsNamedWithItsLayer) {
    auto m = tiny();
    m->weights.layers[0].wv[2][3] = std::nan("");
    const auto bad = describe_non_finite_weights(*m);
    ASSERT_EQ(bad.size(), 1u);
    EXPECT_EQ(bad[0], "model.layers.0.self_attn.v_proj.weight (layer 0; 1 of " +
                          std::to_string(m->weights.layers[0].wv.numel()) + " values)");
    const std::string e = error_of([&] { perplexity(*m, kDocs); });
    // v feeds the attention output: o_in of layer 0 is the first site that sees it.
    EXPECT_TRUE(has(e, "from layer 0 on: first at o_in")) << e;
    EXPECT_TRUE(has(e, "weights holding NaN or Inf: model.layers.0.self_attn.v_proj.weight (layer 0; 1 of")) << e;
    // A loader's description (the file's name) is used when it has one.
    m->non_finite_weights = {"blk.0.attn_v.weight (layer 0, model.layers.0.self_attn.v_proj.weight; 1 of 32 values)"};
    EXPECT_TRUE(has(error_of([&] { perplexity(*m, kDocs); }), "weights holding NaN or Inf: blk.0.attn_v.weight (layer 0"));
}

TEST(NonFinite, QuantizerThatMakesNanIsNamed) {
    auto m = tiny();
    NanAt hook(1, Site::MlpIn);
    PerplexityOptions o;
    o.hook = &hook;
    const std::string e = error_of([&] { perplexity(*m, kDocs, o); });
    EXPECT_TRUE(has(e, "the activation hook (the quantizer) at layer 1, mlp_in, made NaN or Inf out of finite values")) << e;
}

TEST(NonFinite, PrefixHoldingInfIsNamed) {
    auto m = tiny();
    Cushion c = make_cushion(*m, {1, 6});
    c.kv.v[1] = c.kv.v[1].clone();
    c.kv.v[1][0][0][1][2] = INFINITY;
    PerplexityOptions o;
    o.prefix = &c.kv;
    o.prefix_last_logits = c.last_logits;
    const std::string e = error_of([&] { perplexity(*m, kDocs, o); });
    EXPECT_TRUE(has(e, "the prefix (cushion) keys/values of layer 1 hold NaN or Inf")) << e;
}

TEST(NonFinite, ProbeResultKnowsWhenItIsNotFinite) {
    ActivationProbe fine(2), bad(2);
    ForwardArgs fa;
    fa.skip_logits = true;
    fa.hook = &fine;
    tiny()->forward(row(kDocs[1]), fa);
    EXPECT_TRUE(fine.take()->all_finite());
    fa.hook = &bad;
    overflowing()->forward(row(kDocs[1]), fa);
    EXPECT_FALSE(bad.take()->all_finite());
}

TEST(NonFinite, GreedySearchAndTuningNameTheLayer) {
    std::shared_ptr<const Model> m = overflowing();
    GreedySearchOptions o;
    o.max_prefix = 2;
    const std::string e = error_of([&] { GreedySearch(m, {5, 7, 3, 9, 4, 8, 6}, o); });
    EXPECT_TRUE(has(e, "greedy search: L_q of the start prefix and the sample is not finite: the activations are NaN "
                       "or Inf from layer 1 on: first at down_in"))
        << e;
    // Tuning: the cushion's K/V are finite (layer 1's attention comes before its overflow), its loss is not.
    const Cushion c = make_cushion(*m, {1});
    PrefixTuneOptions to;
    to.batch_size = 3;
    const std::string t = error_of([&] {
        PrefixTuner tuner(m, c, kDocs, to);
        tuner.step();
    });
    EXPECT_TRUE(has(t, "prefix tuning: the loss is not finite: the activations are NaN or Inf from layer 1 on: first "
                       "at down_in"))
        << t;
}
