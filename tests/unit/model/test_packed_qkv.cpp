// q, k and v as one product (ModelWeights::pack_qkv, issue 13 item 8): the loaders and Model::to make each layer's
// wq, wk, wv (and q/k/v biases) row views of one tensor and the forward pass computes them with one matrix product.
// The packed model must give the same bits as the three products (logits, K/V, hooks, gradients), keep the tensors'
// names, shapes, values and fingerprint, see an in-place change of one tensor, and fall back to three products when
// one is replaced (fake-quantized weights, SmoothQuant) or when int8 kernels compute the linears.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include "formats/model_loader.h"
#include "model/model.h"
#include "test_support.h"
#include "tiny_models.h"

using namespace cushion;
using namespace cushion::test;

namespace {

std::string shape_of(const at::Tensor& t) { return c10::str(t.sizes()); }

// A copy of `m` whose q/k/v tensors are separate (clones): the forward pass runs three products on it.
Model unpacked(const Model& m) {
    Model u = m;
    for (auto& L : u.weights.layers)
        for (at::Tensor* t : {&L.wq, &L.wk, &L.wv, &L.bq, &L.bk, &L.bv})
            if (t->defined()) *t = t->clone();
    return u;
}

bool all_packed(const Model& m) {
    for (const auto& L : m.weights.layers) {
        at::Tensor w, b;
        if (!packed_qkv(L, &w, &b)) return false;
    }
    return true;
}

at::Tensor tokens(int64_t B, int64_t T, int64_t vocab, int64_t seed) {
    at::manual_seed(seed);
    return at::randint(1, vocab, {B, T}, at::kLong);
}

// Logits without and with a prefix (the K/V of a 5-token run), and the present K/V of the prefixed run.
struct Run {
    at::Tensor logits, logits_prefixed;
    KVCache present;
};
Run run(const Model& m, const at::Tensor& ids) {
    Run r;
    r.logits = m.forward(ids);
    KVCache prefix;
    ForwardArgs pa;
    pa.present = &prefix;
    (void)m.forward(tokens(1, 5, m.config.vocab_size, 9), pa);
    ForwardArgs a;
    a.prefix = &prefix;
    a.present = &r.present;
    r.logits_prefixed = m.forward(ids, a);
    return r;
}

void expect_same_bits(const Run& a, const Run& b) {
    EXPECT_TRUE(at::equal(a.logits, b.logits)) << (a.logits - b.logits).abs().max().item<double>();
    EXPECT_TRUE(at::equal(a.logits_prefixed, b.logits_prefixed))
        << (a.logits_prefixed - b.logits_prefixed).abs().max().item<double>();
    ASSERT_EQ(a.present.k.size(), b.present.k.size());
    for (size_t l = 0; l < a.present.k.size(); ++l) {
        EXPECT_TRUE(at::equal(a.present.k[l], b.present.k[l])) << "layer " << l;
        EXPECT_TRUE(at::equal(a.present.v[l], b.present.v[l])) << "layer " << l;
    }
}

}  // namespace

TEST(PackedQkv, LoadedModelIsPackedAndGivesTheSameBits) {
    auto m = load_model_file(stories_gguf());
    ASSERT_TRUE(all_packed(*m));
    const Model u = unpacked(*m);
    ASSERT_FALSE(all_packed(u));
    // Same names, shapes and values, the same fingerprint, no extra storage: wk starts where wq ends.
    std::vector<std::string> names_m, names_u;
    m->weights.for_each(m->config, [&](const std::string& n, const at::Tensor& t) { names_m.push_back(n + shape_of(t)); });
    u.weights.for_each(u.config, [&](const std::string& n, const at::Tensor& t) { names_u.push_back(n + shape_of(t)); });
    EXPECT_EQ(names_m, names_u);
    const auto& L0 = m->weights.layers[0];
    EXPECT_TRUE(L0.wq.is_contiguous() && L0.wk.is_contiguous() && L0.wv.is_contiguous());
    EXPECT_EQ((const char*)L0.wk.data_ptr(), (const char*)L0.wq.data_ptr() + L0.wq.nbytes());
    EXPECT_TRUE(at::equal(L0.wv, u.weights.layers[0].wv));
    Model fresh_m = *m, fresh_u = u;
    fresh_m.set_fingerprint("");
    fresh_u.set_fingerprint("");
    EXPECT_EQ(fresh_m.fingerprint(), fresh_u.fingerprint());

    at::NoGradGuard ng;
    const at::Tensor ids = tokens(2, 40, m->config.vocab_size, 1);
    expect_same_bits(run(*m, ids), run(u, ids));
}

TEST(PackedQkv, BiasesAndOptArePackedAndGiveTheSameBits) {
    for (bool opt : {false, true}) {
        TinySpec s;
        s.opt = opt;
        s.qkv_bias = !opt;
        auto m = make_tiny(s).first;
        const Model u = unpacked(*m);
        m->to(c10::Device(c10::kCPU), at::kFloat);  // packs
        ASSERT_TRUE(all_packed(*m)) << "opt " << opt;
        at::Tensor w, b;
        ASSERT_TRUE(packed_qkv(m->weights.layers[1], &w, &b));
        ASSERT_TRUE(b.defined());
        EXPECT_TRUE(at::equal(b, at::cat({u.weights.layers[1].bq, u.weights.layers[1].bk, u.weights.layers[1].bv})));
        at::NoGradGuard ng;
        const at::Tensor ids = tokens(2, 12, s.vocab, 2);
        expect_same_bits(run(*m, ids), run(u, ids));
    }
}

TEST(PackedQkv, InPlaceChangeIsSeenAndReplacementUnpacks) {
    auto m = load_model_file(stories_gguf());
    Model u = unpacked(*m);
    at::NoGradGuard ng;
    const at::Tensor ids = tokens(1, 30, m->config.vocab_size, 3);
    const at::Tensor before = m->forward(ids);
    // An in-place change of wv (as a test or a tool may make) reaches the packed product.
    m->weights.layers[2].wv[3].add_(0.5);
    u.weights.layers[2].wv[3].add_(0.5);
    ASSERT_TRUE(all_packed(*m));
    const at::Tensor changed = m->forward(ids);
    EXPECT_FALSE(at::equal(before, changed));
    EXPECT_TRUE(at::equal(changed, u.forward(ids)));
    // A replaced tensor (fake quantization assigns new ones) ends that layer's packing: three products, same result.
    m->weights.layers[1].wk = (m->weights.layers[1].wk * 2).div_(2);
    at::Tensor w, b;
    EXPECT_FALSE(packed_qkv(m->weights.layers[1], &w, &b));
    EXPECT_TRUE(packed_qkv(m->weights.layers[0], &w, &b));
    EXPECT_TRUE(at::equal(changed, m->forward(ids)));
    // Model::to packs again, in the new dtype too.
    m->to(c10::Device(c10::kCPU), at::kFloat);
    EXPECT_TRUE(all_packed(*m));
    EXPECT_TRUE(at::equal(changed, m->forward(ids)));
    m->to(c10::Device(c10::kCPU), at::kBFloat16);
    u.to(c10::Device(c10::kCPU), at::kBFloat16);
    EXPECT_TRUE(all_packed(*m));
    EXPECT_EQ(m->weights.layers[0].wq.scalar_type(), at::kBFloat16);
    EXPECT_TRUE(at::equal(m->forward(ids), unpacked(u).forward(ids)));
}

TEST(PackedQkv, GradientsThroughThePrefixAreTheSame) {
    // Prefix tuning differentiates the loss with respect to the prefix K/V through the forward pass. Under autograd
    // the forward runs three products (one product's backward sums over q, k and v in another order: measured, the
    // gradients then differ at the rounding level), so the gradients are those of the unpacked model, bit for bit.
    auto m = load_model_file(stories_gguf());
    const Model u = unpacked(*m);
    KVCache prefix;
    {
        at::NoGradGuard ng;
        ForwardArgs pa;
        pa.present = &prefix;
        (void)m->forward(tokens(1, 4, m->config.vocab_size, 5), pa);
    }
    const at::Tensor ids = tokens(2, 25, m->config.vocab_size, 6);
    std::vector<at::Tensor> grads[2];
    int i = 0;
    for (const Model* mm : {static_cast<const Model*>(m.get()), &u}) {
        KVCache p;
        for (size_t l = 0; l < prefix.k.size(); ++l) {
            p.k.push_back(prefix.k[l].detach().clone().requires_grad_(true));
            p.v.push_back(prefix.v[l].detach().clone().requires_grad_(true));
        }
        ForwardArgs a;
        a.prefix = &p;
        const at::Tensor loss = at::log_softmax(mm->forward(ids, a), -1).select(-1, 7).mean();
        loss.backward();
        for (size_t l = 0; l < p.k.size(); ++l) {
            grads[i].push_back(p.k[l].grad());
            grads[i].push_back(p.v[l].grad());
        }
        ++i;
    }
    ASSERT_EQ(grads[0].size(), grads[1].size());
    for (size_t j = 0; j < grads[0].size(); ++j) {
        ASSERT_TRUE(grads[0][j].defined());
        EXPECT_TRUE(at::equal(grads[0][j], grads[1][j])) << j;
        EXPECT_GT(grads[0][j].abs().max().item<double>(), 0) << j;
    }
}

TEST(PackedQkv, IntKernelsSeeEveryLinear) {
    // With LinearKernels set, q, k and v go through them one by one (the int8 path quantizes each on its own).
    struct Counting : LinearKernels {
        mutable int calls[kLinearCount] = {};
        at::Tensor linear(int, LinearId id, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) const override {
            ++calls[static_cast<int>(id)];
            return b.defined() ? at::linear(x, w, b) : at::linear(x, w);
        }
    } k;
    auto m = load_model_file(stories_gguf());
    ASSERT_TRUE(all_packed(*m));
    at::NoGradGuard ng;
    const at::Tensor ids = tokens(1, 10, m->config.vocab_size, 4);
    ForwardArgs a;
    a.kernels = &k;
    EXPECT_TRUE(at::equal(m->forward(ids, a), m->forward(ids)));
    for (LinearId id : {LinearId::Q, LinearId::K, LinearId::V, LinearId::O})
        EXPECT_EQ(k.calls[static_cast<int>(id)], m->config.n_layers) << linear_name(id);
}
