// The fast greedy step's candidate screen (core/cushion/candidate_screen.h) and the fast step of GreedySearch on tiny
// random models: the screen's attention weights against a plain forward pass of prefix + candidate + sample, the
// fast step's re-scoring against the exhaustive step, the step-kind choice, progress and cancellation.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "cushion/candidate_screen.h"
#include "cushion/greedy_search.h"
#include "tiny_models.h"

using namespace cushion;
using namespace cushion::test;

namespace {

std::shared_ptr<Model> tiny(uint64_t seed = 3, int vocab = 13) {
    TinySpec s;
    s.seed = seed;
    s.vocab = vocab;
    s.heads = 4;
    s.kv_heads = 2;  // grouped heads: head h reads KV head h / 2
    return make_tiny(s).first;
}

std::vector<int32_t> tiny_sample(int n, int vocab, uint64_t seed = 7) {
    std::vector<int32_t> s;
    uint64_t x = seed;
    for (int i = 0; i < n; ++i) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        s.push_back(3 + static_cast<int32_t>((x >> 33) % (vocab - 3)));
    }
    return s;
}

at::Tensor ids(const std::vector<int32_t>& v) {
    return at::tensor(std::vector<int64_t>(v.begin(), v.end()), at::kLong).unsqueeze(0);
}

// Captures block 0's queries and keys of a forward pass.
struct Block0Attention : ActivationHook {
    at::Tensor q, k;
    double scale = 0;
    void on_activation(int, Site, at::Tensor&, const at::Tensor&) override {}
    void on_attention(int layer, const at::Tensor& qi, const at::Tensor& ki, const at::Tensor&, double s) override {
        if (layer == 0) q = qi.clone(), k = ki.clone(), scale = s;
    }
};

KVCache prefix_kv(const Model& m, const std::vector<int32_t>& prefix) {
    at::NoGradGuard ng;
    KVCache kv;
    ForwardArgs fa;
    fa.present = &kv;
    fa.skip_logits = true;
    m.forward(ids(prefix), fa);
    return kv;
}

}  // namespace

// Block 0's queries do not depend on the prefix, so there the screen's weight of the candidate slot is exactly the
// attention a plain forward pass of (prefix + t) then the sample gives t: checks the gap positions (RoPE), the
// log-normalisers over prefix and causal sample, and the grouped-head mapping. Computed here from the plain pass's
// queries and keys with an independent softmax.
TEST(CandidateScreen, SlotWeightsEqualThePlainForwardAttentionInBlock0) {
    auto m = tiny();
    const auto sample = tiny_sample(12, 13);
    const std::vector<int32_t> prefix{1, 4};
    const KVCache kv = prefix_kv(*m, prefix);
    CandidateScreen screen(*m, kv, sample, QuantLossOptions{}, /*head=*/0);
    for (int32_t t : {3, 7, 12}) {
        const at::Tensor w = screen.slot_weights(t);  // (layers, H, n)
        ASSERT_EQ(w.size(0), m->config.n_layers);
        ASSERT_EQ(w.size(2), (int64_t)sample.size());
        std::vector<int32_t> pt = prefix;
        pt.push_back(t);
        const KVCache kvt = prefix_kv(*m, pt);
        Block0Attention cap;
        ForwardArgs fa;
        fa.prefix = &kvt;
        fa.hook = &cap;
        fa.skip_logits = true;
        {
            at::NoGradGuard ng;
            m->forward(ids(sample), fa);
        }
        const int64_t H = cap.q.size(1), n = cap.q.size(2), S = cap.k.size(2), P = S - n, rep = H / cap.k.size(1);
        ASSERT_EQ(P, 3);
        for (int64_t h = 0; h < H; ++h)
            for (int64_t i = 0; i < n; ++i) {
                // softmax over the keys query i sees (0 .. P + i); the candidate is key P - 1.
                std::vector<double> s;
                for (int64_t j = 0; j <= P + i; ++j)
                    s.push_back(cap.scale * at::dot(cap.q[0][h][i], cap.k[0][h / rep][j]).item<double>());
                double mx = -INFINITY, z = 0;
                for (double x : s) mx = std::max(mx, x);
                for (double x : s) z += std::exp(x - mx);
                const double want = std::exp(s[P - 1] - mx) / z;
                EXPECT_NEAR(w[0][h][i].item<double>(), want, 1e-5 + 1e-4 * want) << "t " << t << " head " << h << " token " << i;
            }
        EXPECT_TRUE(at::isfinite(w).all().item<bool>());
        EXPECT_TRUE((w >= 0).all().item<bool>() && (w <= 1).all().item<bool>());
    }
    // An exact head drops those tokens from the first-order part.
    CandidateScreen h4(*m, kv, sample, QuantLossOptions{}, 4);
    EXPECT_EQ(h4.slot_weights(3).size(2), (int64_t)sample.size() - 4);
    EXPECT_THROW(CandidateScreen(*m, kv, sample, QuantLossOptions{}, -1), Error);
    EXPECT_THROW(CandidateScreen(*m, kv, {}, QuantLossOptions{}), Error);
}

// The estimate is the same whatever the batch of candidates, with no exact head, a short one and the whole sample.
TEST(CandidateScreen, EstimatesDoNotDependOnTheBatch) {
    auto m = tiny(5, 17);
    const auto sample = tiny_sample(10, 17, 11);
    const KVCache kv = prefix_kv(*m, {1});
    std::vector<int32_t> cand;
    for (int32_t t = 3; t < 17; ++t) cand.push_back(t);
    for (int64_t head : {int64_t(0), int64_t(2), int64_t(10)}) {
        CandidateScreen s(*m, kv, sample, QuantLossOptions{}, head);
        const auto a = s.estimate(cand, 1), b = s.estimate(cand, 5), c = s.estimate(cand, 100);
        ASSERT_EQ(a.size(), cand.size());
        for (size_t i = 0; i < cand.size(); ++i) {
            EXPECT_TRUE(std::isfinite(a[i]));
            EXPECT_NEAR(a[i], b[i], 1e-6 * (1 + std::fabs(a[i])));
            EXPECT_NEAR(a[i], c[i], 1e-6 * (1 + std::fabs(a[i])));
        }
        EXPECT_TRUE(std::isfinite(s.surrogate()));
    }
}

// ForwardArgs::stop_after_kv gives the same keys and values as a whole forward pass up to its block and nothing
// after; the screen at a depth uses exactly the first blocks' slot weights; its products go in column slices of
// kProductColumns candidates, which must not change the estimate (300 candidates in one batch against batches of 7).
TEST(CandidateScreen, DepthStopsTheForwardAndSlicesKeepTheEstimate) {
    TinySpec spec;
    spec.seed = 9;
    spec.vocab = 303;
    spec.layers = 3;
    auto m = make_tiny(spec).first;
    const KVCache kv = prefix_kv(*m, {1, 5});
    {
        at::NoGradGuard ng;
        const at::Tensor t = at::tensor(std::vector<int64_t>{7, 8, 9}, at::kLong).view({3, 1});
        KVCache all, part;
        ForwardArgs fa;
        fa.prefix = &kv;
        fa.present = &all;
        fa.skip_logits = true;
        m->forward(t, fa);
        fa.present = &part;
        fa.stop_after_kv = 1;
        EXPECT_FALSE(m->forward(t, fa).defined());
        ASSERT_EQ(part.k.size(), 3u);
        for (int l = 0; l < 2; ++l) {
            EXPECT_TRUE(at::equal(part.k[l], all.k[l])) << "block " << l;
            EXPECT_TRUE(at::equal(part.v[l], all.v[l])) << "block " << l;
        }
        EXPECT_FALSE(part.k[2].defined());
    }
    const auto sample = tiny_sample(20, 303, 5);
    CandidateScreen screen(*m, kv, sample, QuantLossOptions{}, 0);
    EXPECT_EQ(screen.depth(), 3);
    const at::Tensor w3 = screen.slot_weights(42);
    std::vector<int32_t> cand;
    for (int32_t t = 3; t < 303; ++t) cand.push_back(t);
    const auto full = screen.estimate(cand, 300), one = screen.estimate(cand, 7);
    for (size_t i = 0; i < cand.size(); ++i) EXPECT_NEAR(full[i], one[i], 1e-6 * (1 + std::fabs(one[i]))) << cand[i];
    screen.set_depth(2);
    EXPECT_EQ(screen.depth(), 2);
    const at::Tensor w2 = screen.slot_weights(42);
    ASSERT_EQ(w2.size(0), 2);
    EXPECT_TRUE(at::allclose(w2, w3.narrow(0, 0, 2), 1e-6, 1e-7));
    const auto shallow = screen.estimate(cand, 300);
    double differ = 0;
    for (size_t i = 0; i < cand.size(); ++i) {
        EXPECT_TRUE(std::isfinite(shallow[i]));
        differ = std::max(differ, std::fabs(shallow[i] - full[i]));
    }
    EXPECT_GT(differ, 0) << "the third block's terms must count in the full estimate";
    screen.set_depth(0);
    EXPECT_EQ(screen.depth(), 3);
    EXPECT_THROW(screen.set_depth(4), Error);
    EXPECT_THROW(screen.set_depth(-1), Error);
}

// The fast step re-scores the screen's best `screen_keep` exactly: with every candidate kept it is the exhaustive
// step; with fewer it never beats it, its re-scored losses are the exhaustive ones, and every candidate has an
// estimate. step() follows step_kind; Auto is exhaustive for a problem this small.
TEST(GreedySearchFast, ReScoresTheShortlistExactly) {
    auto m = tiny();
    const auto sample = tiny_sample(20, 13);
    GreedySearchOptions o;
    o.max_prefix = 4;
    GreedySearch s(m, sample, o);
    const auto ex = s.score(StepKind::Exhaustive);
    EXPECT_EQ(s.default_kind(), StepKind::Exhaustive);

    GreedySearchOptions all = o;
    all.screen_keep = 100;
    const auto fa = GreedySearch(m, sample, all).score(StepKind::Fast);
    EXPECT_EQ(fa.kind, StepKind::Fast);
    EXPECT_EQ(fa.best_token, ex.best_token);
    EXPECT_NEAR(fa.best_loss, ex.best_loss, 1e-6 * ex.best_loss);
    EXPECT_EQ(fa.shortlist.size(), 10u);

    GreedySearchOptions few = o;
    few.screen_keep = 3;
    few.step_kind = StepChoice::Fast;
    GreedySearch f(m, sample, few);
    EXPECT_EQ(f.default_kind(), StepKind::Fast);
    const auto r = f.score(StepKind::Fast);
    ASSERT_EQ(r.shortlist.size(), 3u);
    EXPECT_EQ(r.evaluated, 3);
    EXPECT_GE(r.best_loss, ex.best_loss * (1 - 1e-6));
    int scored = 0;
    for (int32_t t = 0; t < 13; ++t) {
        const double l = r.candidate_loss[t].item<double>();
        const double est = r.window_loss[t].item<double>();
        EXPECT_EQ(std::isfinite(est), t >= 3) << t;  // special tokens are no candidates
        if (std::isfinite(l)) {
            ++scored;
            EXPECT_NEAR(l, ex.candidate_loss[t].item<double>(), 1e-6 * l) << t;
            // The shortlist is the screen's best three.
            int better = 0;
            for (int32_t u = 3; u < 13; ++u) better += r.window_loss[u].item<double>() < est;
            EXPECT_LT(better, 3) << t;
        }
    }
    EXPECT_EQ(scored, 3);
    // step() runs the chosen kind and the history says so.
    const auto st = f.step();
    EXPECT_EQ(st.kind, StepKind::Fast);
    ASSERT_EQ(f.history().size(), 1u);
    EXPECT_EQ(f.history()[0].kind, StepKind::Fast);
    const auto j = nlohmann::json::parse(f.settings_json());
    EXPECT_EQ(j.at("step_kind"), "fast");
    EXPECT_EQ(j.at("screen_keep"), 3);
    EXPECT_EQ(nlohmann::json::parse(f.history_json()).at("steps")[0].at("kind"), "fast");

    GreedySearchOptions bad = o;
    bad.screen_keep = 0;
    EXPECT_THROW(GreedySearch(m, sample, bad), Error);
    StepChoice c;
    EXPECT_TRUE(parse_step_choice("fast", &c) && c == StepChoice::Fast);
    EXPECT_FALSE(parse_step_choice("quick", &c));
}

// Progress through the screen and the re-scoring; a cancel in the screen leaves the search as it was.
TEST(GreedySearchFast, ProgressAndCancel) {
    auto m = tiny(4, 29);
    const auto sample = tiny_sample(16, 29);
    GreedySearchOptions o;
    o.screen_batch = 4;  // 26 candidates: 7 screening batches
    o.screen_keep = 4;
    GreedySearch s(m, sample, o);
    std::vector<double> fractions;
    std::vector<std::string> what;
    const auto r = s.score(StepKind::Fast, [&](double f, const std::string& w) {
        fractions.push_back(f);
        what.push_back(w);
        return true;
    });
    ASSERT_GE(fractions.size(), 8u);
    for (size_t i = 1; i < fractions.size(); ++i) EXPECT_GE(fractions[i], fractions[i - 1] - 1e-12);
    EXPECT_DOUBLE_EQ(fractions.back(), 1.0);
    int screen = 0, rescore = 0;
    for (const auto& w : what) screen += w.find("(screen)") != std::string::npos, rescore += w.find("(re-score)") != std::string::npos;
    EXPECT_GE(screen, 7);
    EXPECT_GE(rescore, 1);

    const std::string before = s.state_json();
    const double loss = s.loss();
    int calls = 0;
    EXPECT_THROW(s.step(StepKind::Fast, [&](double, const std::string& w) {
        return !(w.find("(screen)") != std::string::npos && ++calls == 3);
    }),
                 Cancelled);
    EXPECT_EQ(s.state_json(), before);
    EXPECT_EQ(s.loss(), loss);
    EXPECT_TRUE(s.history().empty());
    // And it runs to the end afterwards, with the same result as before.
    const auto again = s.score(StepKind::Fast);
    EXPECT_EQ(again.best_token, r.best_token);
    EXPECT_EQ(again.shortlist, r.shortlist);
}

// A cancel inside one screening batch (issue 14: with 1024-candidate batches a cancel waited for a whole batch, ~4 s
// on SmolLM2): estimate() reports progress before the batch, as each block's forward makes its K/V and before each
// block's products, so a cancel is seen within one block's work; the reported fractions move forward through the
// batch; with and without progress the estimates are the same.
TEST(CandidateScreen, CancelIsSeenInsideABatch) {
    TinySpec spec;
    spec.seed = 5;
    spec.vocab = 40;
    spec.layers = 3;
    auto m = make_tiny(spec).first;
    const KVCache kv = prefix_kv(*m, {1, 5});
    const auto sample = tiny_sample(12, 40, 3);
    CandidateScreen screen(*m, kv, sample, QuantLossOptions{}, 0);
    std::vector<int32_t> cand;
    for (int32_t t = 3; t < 40; ++t) cand.push_back(t);
    const auto plain = screen.estimate(cand, 1000);  // one batch
    std::vector<double> fractions;
    const auto seen = screen.estimate(cand, 1000, [&](double f, const std::string&) {
        fractions.push_back(f);
        return true;
    });
    for (size_t i = 0; i < cand.size(); ++i) EXPECT_EQ(plain[i], seen[i]) << cand[i];
    // Before the batch, blocks 1 and 2's K/V, the 3 blocks' products, and the end.
    ASSERT_EQ(fractions.size(), 1u + 2u + 3u + 1u);
    for (size_t i = 1; i < fractions.size(); ++i) EXPECT_GT(fractions[i], fractions[i - 1]) << i;
    EXPECT_DOUBLE_EQ(fractions.front(), 0.0);
    EXPECT_DOUBLE_EQ(fractions.back(), 1.0);
    // Cancelled at each of the in-batch reports: the call that said stop is the last one.
    for (int stop_at = 2; stop_at <= 6; ++stop_at) {
        int calls = 0;
        EXPECT_THROW(screen.estimate(cand, 1000, [&](double, const std::string&) { return ++calls < stop_at; }), Cancelled)
            << stop_at;
        EXPECT_EQ(calls, stop_at);
    }
    // With an exact head the forward runs every block; the in-batch reports still come.
    CandidateScreen headed(*m, kv, sample, QuantLossOptions{}, 2);
    int calls = 0;
    (void)headed.estimate(cand, 1000, [&](double, const std::string&) { return ++calls > 0; });
    EXPECT_GE(calls, 1 + 2 + 3 + 1);
}
