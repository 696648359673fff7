// The greedy prefix search and prefix tuning engines (core/greedy_search.h, core/prefix_tuner.h) on tiny
// random models: scores against a direct computation, batching, ties, the stop rule, pruning, overrides,
// cancellation, checkpoints, the cushion file, and the tuning gradient against finite differences.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <nlohmann/json.hpp>

#include "cushion/calib_checkpoint.h"
#include "cushion/cushion.h"
#include "base/error.h"
#include "cushion/greedy_search.h"
#include "model/perplexity.h"
#include "cushion/prefix_tuner.h"
#include "quant/quant_loss.h"
#include "quant/quantizer.h"
#include "formats/safetensors.h"
#include "test_support.h"
#include "tiny_models.h"

using namespace cushion;
using namespace cushion::test;

namespace {

at::Tensor ids(const std::vector<int32_t>& v) {
    return at::tensor(std::vector<int64_t>(v.begin(), v.end()), at::kLong).unsqueeze(0);
}

std::shared_ptr<Model> tiny(uint64_t seed = 3, int vocab = 13) {
    TinySpec s;
    s.seed = seed;
    s.vocab = vocab;
    return make_tiny(s).first;
}

// A sample of n ordinary tokens (3 .. V-1), deterministic.
std::vector<int32_t> tiny_sample(int n, int vocab, uint64_t seed = 7) {
    std::vector<int32_t> s;
    uint64_t x = seed;
    for (int i = 0; i < n; ++i) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        s.push_back(3 + static_cast<int32_t>((x >> 33) % (vocab - 3)));
    }
    return s;
}

// L_q of the sample after the prefix, computed from scratch (the prefix's KV from one forward pass).
double direct_lq(const Model& m, const std::vector<int32_t>& prefix, const std::vector<int32_t>& sample, int bits = 8) {
    at::NoGradGuard ng;
    KVCache kv;
    ForwardArgs fa;
    fa.present = &kv;
    m.forward(ids(prefix), fa);
    ForwardArgs la;
    la.prefix = &kv;
    QuantLossOptions o;
    o.bits = bits;
    return quantization_loss(m, ids(sample), la, o).item<double>();
}

double rel(double a, double b) { return std::fabs(a - b) / std::max(1e-30, std::max(std::fabs(a), std::fabs(b))); }

}  // namespace

// ------------------------------------------------------------------------------------ greedy search

TEST(GreedySearch, CandidateLossesEqualTheDirectComputation) {
    auto m = tiny();
    const auto sample = tiny_sample(20, 13);
    GreedySearchOptions o;
    o.max_prefix = 4;
    GreedySearch s(m, sample, o);
    EXPECT_NEAR(s.loss(), direct_lq(*m, {1}, sample), 1e-6 * s.loss());
    auto r = s.score(StepKind::Exhaustive);
    ASSERT_EQ(r.candidate_loss.size(0), 13);
    for (int32_t t = 0; t < 13; ++t) {
        const double got = r.candidate_loss[t].item<double>();
        if (t < 3) {
            EXPECT_TRUE(std::isnan(got)) << "special token " << t << " was scored";
            continue;
        }
        EXPECT_LT(rel(got, direct_lq(*m, {1, t}, sample)), 1e-5) << t;
    }
    // The best is the minimum, and score() changed nothing.
    double mn = INFINITY;
    for (int32_t t = 3; t < 13; ++t) mn = std::min(mn, r.candidate_loss[t].item<double>());
    EXPECT_EQ(r.best_loss, mn);
    EXPECT_EQ(r.candidate_loss[r.best_token].item<double>(), mn);
    EXPECT_EQ(s.prefix(), std::vector<int32_t>{1});
    EXPECT_TRUE(s.history().empty());
    // evaluate() scores any tokens, special ones included, in the order given.
    auto ev = s.evaluate({5, 1, 4});
    // (Other batch sizes: equal up to float rounding.)
    EXPECT_LT(rel(ev[0], r.candidate_loss[5].item<double>()), 1e-5);
    EXPECT_LT(rel(ev[1], direct_lq(*m, {1, 1}, sample)), 1e-5);
    EXPECT_LT(rel(ev[2], r.candidate_loss[4].item<double>()), 1e-5);
    // Other bits: the objective follows.
    GreedySearchOptions o4 = o;
    o4.loss.bits = 4;
    GreedySearch s4(m, sample, o4);
    EXPECT_LT(rel(s4.loss(), direct_lq(*m, {1}, sample, 4)), 1e-6);
    EXPECT_GT(s4.loss(), s.loss());
}

TEST(GreedySearch, BatchingAndRepetitionGiveTheSameResult) {
    auto m = tiny();
    const auto sample = tiny_sample(24, 13);
    std::vector<at::Tensor> losses;
    std::vector<int32_t> best;
    for (int64_t mb : {1, 3, 0}) {
        GreedySearchOptions o;
        o.max_batch = mb;
        GreedySearch s(m, sample, o);
        auto r = s.score(StepKind::Exhaustive);
        EXPECT_EQ(r.batch_size, mb == 0 ? 10 : mb);
        losses.push_back(r.candidate_loss);
        best.push_back(r.best_token);
    }
    for (size_t i = 1; i < losses.size(); ++i) {
        const double d = ((losses[i].narrow(0, 3, 10) - losses[0].narrow(0, 3, 10)).abs() / losses[0].narrow(0, 3, 10))
                             .max().item<double>();
        std::printf("batch %zu vs 1: max relative L_q difference %.3g\n", i, d);
        // Float rounding only: BLAS blocks its products by batch shape (1.4e-6 here with libtorch 2.12's MKL; the
        // old libtorch 1.13 + OpenBLAS build also exceeds 1e-6 on this Intel machine). 1e-5 as for evaluate() above;
        // the chosen token must not move.
        EXPECT_LT(d, 1e-5);
        EXPECT_EQ(best[i], best[0]);
    }
    // Same settings twice: identical to the last bit.
    GreedySearch a(m, sample), b(m, sample);
    EXPECT_TRUE(at::equal(a.score(StepKind::Exhaustive).candidate_loss.narrow(0, 3, 10),
                          b.score(StepKind::Exhaustive).candidate_loss.narrow(0, 3, 10)));
    // A memory budget smaller than one row still runs one candidate at a time.
    GreedySearchOptions small;
    small.memory_budget = 1;
    EXPECT_EQ(GreedySearch(m, sample, small).batch_size(24), 1);
    EXPECT_GT(search_bytes_per_candidate(m->config, 3, 24, at::kFloat), 0);
    EXPECT_GT(search_flops_per_candidate(m->config, 3, 24), search_flops_per_candidate(m->config, 3, 12));
}

TEST(GreedySearch, ThreadCountChangesNothingButSpeed) {
    auto m = tiny();
    const auto sample = tiny_sample(24, 13);
    const c10::Device cpu(c10::kCPU);
    GreedySearchOptions o;
    EXPECT_EQ(search_threads(o, m->config, cpu), 1);  // automatic: a narrow model scores on one thread
    ModelConfig wide = m->config;
    wide.dim = 4096;
    EXPECT_EQ(search_threads(o, wide, cpu), 0);  // wide: the process's setting
    o.threads = -1;
    EXPECT_EQ(search_threads(o, m->config, cpu), 0);
    o.threads = 3;
    EXPECT_EQ(search_threads(o, m->config, cpu), 3);
    EXPECT_EQ(search_threads(o, m->config, c10::Device(c10::kCUDA, 0)), 0);
    // Scoring on 1 or 2 threads: the same losses (up to the reduction order), and the process's thread
    // count is back afterwards.
    const int before = at::get_num_threads();
    std::vector<at::Tensor> losses;
    for (int t : {1, 2}) {
        GreedySearchOptions ot;
        ot.threads = t;
        losses.push_back(GreedySearch(m, sample, ot).score(StepKind::Exhaustive).candidate_loss.narrow(0, 3, 10));
        EXPECT_EQ(at::get_num_threads(), before);
    }
    EXPECT_TRUE(at::allclose(losses[0], losses[1], 1e-6, 0));
}

TEST(GreedySearch, CandidateSets) {
    auto m = tiny();
    const auto sample = tiny_sample(16, 13);
    GreedySearch all(m, sample);
    EXPECT_EQ(all.candidates(), (std::vector<int32_t>{3, 4, 5, 6, 7, 8, 9, 10, 11, 12}));  // <unk> <s> </s> excluded
    GreedySearchOptions o;
    o.candidates = {9, 4, 4, 2};  // a user's subset: sorted, deduplicated, special tokens allowed
    GreedySearch sub(m, sample, o);
    EXPECT_EQ(sub.candidates(), (std::vector<int32_t>{2, 4, 9}));
    auto r = sub.score(StepKind::Exhaustive);
    EXPECT_EQ(r.evaluated, 3);
    EXPECT_TRUE(std::isnan(r.candidate_loss[3].item<double>()));
    EXPECT_FALSE(std::isnan(r.candidate_loss[2].item<double>()));
    EXPECT_TRUE(r.best_token == 2 || r.best_token == 4 || r.best_token == 9);
}

TEST(GreedySearch, TiesGoToTheLowestId) {
    auto m = tiny();
    // The sample uses tokens 6..10 only, the candidates are the others: changing a candidate's embedding
    // leaves the sample alone.
    std::vector<int32_t> sample;
    for (int32_t t : tiny_sample(16, 13)) sample.push_back(6 + t % 5);
    GreedySearchOptions o;
    o.max_batch = 1;  // every row alone: identical inputs give identical losses
    o.candidates = {3, 4, 5, 11, 12};
    const int32_t best = GreedySearch(m, sample, o).score(StepKind::Exhaustive).best_token;
    // Give the lowest and the highest other candidate the winner's embedding: a three-way tie.
    const int32_t lo = best == 3 ? 4 : 3, hi = best == 12 ? 11 : 12;
    auto m2 = std::make_shared<Model>(*m);
    m2->weights.tok_emb = m->weights.tok_emb.clone();
    m2->weights.tok_emb[lo].copy_(m->weights.tok_emb[best]);
    m2->weights.tok_emb[hi].copy_(m->weights.tok_emb[best]);
    auto r = GreedySearch(m2, sample, o).score(StepKind::Exhaustive);
    ASSERT_EQ(r.candidate_loss[lo].item<double>(), r.candidate_loss[best].item<double>());
    ASSERT_EQ(r.candidate_loss[hi].item<double>(), r.candidate_loss[best].item<double>());
    EXPECT_EQ(r.best_token, std::min(lo, best)) << r.candidate_loss;
    // The pruned step's shortlist breaks ties the same way.
    GreedySearchOptions p = o;
    p.prune_keep = 1;
    p.prune_window = 16;
    EXPECT_EQ(GreedySearch(m2, sample, p).score(StepKind::Pruned).best_token, std::min(lo, best));
}

TEST(GreedySearch, AcceptedStepsDecreaseLqAndTheStopRules) {
    auto m = tiny();
    const auto sample = tiny_sample(24, 13);
    GreedySearchOptions o;
    o.tau = 1.0;  // accept any improvement
    o.max_prefix = 5;
    GreedySearch s(m, sample, o);
    int accepted = 0;
    double prev = s.loss();
    while (!s.done()) {
        auto r = s.step();
        EXPECT_EQ(r.step, (int)s.history().size());
        EXPECT_EQ(r.loss_before, prev);
        if (r.accepted) {
            ++accepted;
            EXPECT_EQ(r.chosen_token, r.best_token);
            EXPECT_LT(r.best_loss, r.loss_before);
            EXPECT_LT(r.loss_after, r.loss_before);
            EXPECT_LT(rel(r.loss_after, r.best_loss), 1e-5);  // recomputed from the whole prefix
            EXPECT_LT(rel(r.loss_after, direct_lq(*m, s.prefix(), sample)), 1e-9);
            EXPECT_EQ(r.prefix, s.prefix());
            EXPECT_EQ(r.stop, StopReason::None);
            prev = r.loss_after;
        } else {
            EXPECT_NE(r.stop, StopReason::None);
            EXPECT_FALSE(r.reason.empty());
        }
    }
    EXPECT_GE(accepted, 1) << "the tiny model should accept at least one token with tau = 1";
    EXPECT_EQ(s.loss(), prev);
    EXPECT_LT(s.loss(), s.initial_loss());
    // After a stop, step() repeats the stop without work.
    const size_t h = s.history().size();
    auto again = s.step();
    EXPECT_EQ(again.stop, s.stop_reason());
    EXPECT_EQ(s.history().size(), h);
    if (s.stop_reason() == StopReason::MaxLength) {
        EXPECT_EQ((int)s.prefix().size(), 5);
    }

    // tau tiny: the first step stops (no improvement), the prefix stays the start.
    GreedySearchOptions strict;
    strict.tau = 1e-9;
    GreedySearch t(m, sample, strict);
    auto r = t.step();
    EXPECT_FALSE(r.accepted);
    EXPECT_EQ(r.stop, StopReason::NoImprovement);
    EXPECT_NE(r.reason.find("not below tau"), std::string::npos) << r.reason;
    EXPECT_EQ(t.prefix(), std::vector<int32_t>{1});
    EXPECT_TRUE(t.done());
    // max_prefix equal to the start length: stops at once, scoring nothing.
    GreedySearchOptions full;
    full.start_tokens = {1, 5};
    full.max_prefix = 2;
    GreedySearch u(m, sample, full);
    auto ru = u.step();
    EXPECT_EQ(ru.stop, StopReason::MaxLength);
    EXPECT_EQ(ru.evaluated, 0);
    EXPECT_STREQ(stop_reason_name(ru.stop), "max-length");
}

TEST(GreedySearch, PrunedStep) {
    auto m = tiny();
    const auto sample = tiny_sample(32, 13);
    GreedySearch s(m, sample);
    auto ex = s.score(StepKind::Exhaustive);
    // Keeping every candidate: the same choice and the same full-sample losses.
    GreedySearchOptions keep_all;
    keep_all.prune_window = 8;
    keep_all.prune_keep = 100;
    auto pa = GreedySearch(m, sample, keep_all).score(StepKind::Pruned);
    EXPECT_EQ(pa.best_token, ex.best_token);
    EXPECT_EQ(pa.shortlist.size(), 10u);
    EXPECT_EQ(pa.evaluated, 20);
    // Window = whole sample: the shortlist is the exhaustive top-k, best first.
    GreedySearchOptions whole;
    whole.prune_window = 32;
    whole.prune_keep = 3;
    whole.pruned = true;
    GreedySearch w(m, sample, whole);
    auto pw = w.score(StepKind::Pruned);
    std::vector<std::pair<double, int32_t>> ranked;
    for (int32_t t = 3; t < 13; ++t) ranked.push_back({ex.candidate_loss[t].item<double>(), t});
    std::stable_sort(ranked.begin(), ranked.end());
    ASSERT_EQ(pw.shortlist.size(), 3u);
    for (int i = 0; i < 3; ++i) EXPECT_EQ(pw.shortlist[i], ranked[i].second);
    EXPECT_EQ(pw.best_token, ex.best_token);
    EXPECT_TRUE(std::isnan(pw.candidate_loss[ranked[5].second].item<double>()));  // not re-scored
    EXPECT_FALSE(std::isnan(pw.window_loss[ranked[5].second].item<double>()));
    // A short window: its losses are those of the sample's first tokens.
    GreedySearchOptions shortw;
    shortw.prune_window = 8;
    shortw.prune_keep = 2;
    auto ps = GreedySearch(m, sample, shortw).score(StepKind::Pruned);
    const std::vector<int32_t> head(sample.begin(), sample.begin() + 8);
    EXPECT_LT(rel(ps.window_loss[6].item<double>(), direct_lq(*m, {1, 6}, head)), 1e-5);
    // step() follows opts.pruned.
    auto st = w.step();
    EXPECT_EQ(st.kind, StepKind::Pruned);
    EXPECT_TRUE(w.history()[0].pruned);
}

TEST(GreedySearch, CancelledStepLeavesTheSearchUnchanged) {
    auto m = tiny();
    const auto sample = tiny_sample(24, 13);
    GreedySearchOptions o;
    o.tau = 1.0;
    o.max_batch = 2;
    GreedySearch s(m, sample, o);
    int calls = 0;
    ProgressFn cancel_later = [&](double, const std::string&) { return ++calls < 3; };
    EXPECT_THROW(s.step(cancel_later), Cancelled);
    EXPECT_EQ(calls, 3);
    EXPECT_EQ(s.prefix(), std::vector<int32_t>{1});
    EXPECT_TRUE(s.history().empty());
    EXPECT_FALSE(s.done());
    // The step then runs as if nothing had happened.
    GreedySearch fresh(m, sample, o);
    std::vector<double> fractions;
    auto r1 = s.step([&](double f, const std::string& what) {
        fractions.push_back(f);
        EXPECT_NE(what.find("candidates"), std::string::npos);
        return true;
    });
    auto r2 = fresh.step();
    EXPECT_EQ(r1.best_token, r2.best_token);
    EXPECT_EQ(r1.step, 1);
    EXPECT_EQ(s.prefix(), fresh.prefix());
    ASSERT_FALSE(fractions.empty());
    EXPECT_EQ(fractions.back(), 1.0);
    for (size_t i = 1; i < fractions.size(); ++i) EXPECT_GE(fractions[i], fractions[i - 1]);
}

TEST(GreedySearch, OverrideAppendsTheCallersToken) {
    auto m = tiny();
    const auto sample = tiny_sample(24, 13);
    GreedySearchOptions o;
    o.tau = 1e-9;
    o.max_prefix = 3;
    GreedySearch s(m, sample, o);
    auto stop = s.step();
    ASSERT_TRUE(s.done());
    // The worst candidate, chosen by the user: appended whatever tau says, and the search resumes.
    int32_t worst = 3;
    for (int32_t t = 3; t < 13; ++t)
        if (stop.candidate_loss[t].item<double>() > stop.candidate_loss[worst].item<double>()) worst = t;
    auto r = s.override_step(worst);
    EXPECT_TRUE(r.accepted && r.overridden);
    EXPECT_EQ(r.chosen_token, worst);
    EXPECT_EQ(s.prefix(), (std::vector<int32_t>{1, worst}));
    EXPECT_FALSE(s.done());
    EXPECT_LT(rel(s.loss(), direct_lq(*m, {1, worst}, sample)), 1e-9);
    EXPECT_LT(rel(r.best_loss, stop.candidate_loss[worst].item<double>()), 1e-5);
    EXPECT_EQ(s.history().size(), 2u);
    EXPECT_TRUE(s.history()[1].overridden);
    EXPECT_EQ(r.step, 2);
    s.override_step(4);
    EXPECT_NE(error_of([&] { s.override_step(5); }).find("maximum length"), std::string::npos);
    GreedySearch t(m, sample, o);
    EXPECT_NE(error_of([&] { t.override_step(13); }).find("out of range"), std::string::npos);
    EXPECT_NE(error_of([&] { t.override_step(-1); }).find("out of range"), std::string::npos);
}

TEST(GreedySearch, CheckpointRestoreContinuesIdentically) {
    auto m = tiny();
    const auto sample = tiny_sample(24, 13);
    GreedySearchOptions o;
    o.tau = 1.0;
    o.max_prefix = 4;
    GreedySearch a(m, sample, o);
    a.step();
    ASSERT_EQ(a.prefix().size(), 2u) << "precondition: the first step accepts";
    const std::string dir = temp_dir("search-ck");
    save_calib_checkpoint(dir + "/ck", a, nullptr, "{\"x\":1}");
    CalibCheckpoint ck = load_calib_checkpoint(dir + "/ck");
    EXPECT_TRUE(ck.tune_state.empty());
    EXPECT_EQ(ck.settings_json, "{\"x\":1}");
    GreedySearch b(m, sample, o);
    b.restore(ck.search_state);
    EXPECT_EQ(b.prefix(), a.prefix());
    EXPECT_EQ(b.loss(), a.loss());
    EXPECT_EQ(b.initial_loss(), a.initial_loss());
    ASSERT_EQ(b.history().size(), 1u);
    EXPECT_EQ(b.history()[0].token, a.history()[0].token);
    auto ra = a.step(), rb = b.step();
    EXPECT_EQ(ra.best_token, rb.best_token);
    EXPECT_EQ(ra.best_loss, rb.best_loss);
    EXPECT_EQ(ra.step, rb.step);
    auto no_seconds = [](const std::string& s) {
        auto j = nlohmann::json::parse(s);
        for (auto& st : j["steps"]) st.erase("seconds");
        return j;
    };
    EXPECT_EQ(no_seconds(a.history_json()), no_seconds(b.history_json()));
    // A stop at the maximum length does not survive a larger maximum.
    GreedySearchOptions o2 = o;
    o2.max_prefix = 2;
    GreedySearch c(m, sample, o2);
    c.step();
    c.step();
    ASSERT_EQ(c.stop_reason(), StopReason::MaxLength);
    GreedySearchOptions o3 = o;
    o3.max_prefix = 3;
    GreedySearch d(m, sample, o3);
    d.restore(c.state_json());
    EXPECT_FALSE(d.done());
    GreedySearch e(m, sample, o2);
    e.restore(c.state_json());
    EXPECT_TRUE(e.done());
    // Another sample, other bits or another model: refused.
    GreedySearch other_sample(m, tiny_sample(24, 13, 99), o);
    EXPECT_NE(error_of([&] { other_sample.restore(a.state_json()); }).find("sample"), std::string::npos);
    GreedySearchOptions o4 = o;
    o4.loss.bits = 4;
    GreedySearch other_bits(m, sample, o4);
    EXPECT_NE(error_of([&] { other_bits.restore(a.state_json()); }).find("bits"), std::string::npos);
    GreedySearch other_model(tiny(4), sample, o);
    EXPECT_NE(error_of([&] { other_model.restore(a.state_json()); }).find("another model"), std::string::npos);
    EXPECT_NE(error_of([&] { load_calib_checkpoint(dir + "/missing"); }), "<no error>");
    auto c0 = a.cushion();
    save_cushion(c0, dir + "/not-a-checkpoint");
    EXPECT_NE(error_of([&] { load_calib_checkpoint(dir + "/not-a-checkpoint"); }).find("not a calibration checkpoint"),
              std::string::npos);
}

TEST(GreedySearch, UndoRestoresTheStateBeforeTheStep) {
    auto m = tiny();
    GreedySearchOptions o;
    o.tau = 1.0;
    o.max_prefix = 4;
    // A sample on which the first two steps both accept a token (the choice of seed is deterministic).
    std::vector<int32_t> sample;
    for (uint64_t seed = 7; seed < 40 && sample.empty(); ++seed) {
        GreedySearch probe(m, tiny_sample(24, 13, seed), o);
        if (probe.step().accepted && probe.step().accepted) sample = probe.sample();
    }
    ASSERT_FALSE(sample.empty());
    GreedySearch s(m, sample, o);
    const std::string s0 = s.state_json();
    EXPECT_FALSE(s.undo());  // nothing to undo
    s.step();
    ASSERT_EQ(s.prefix().size(), 2u) << "precondition: the first step accepts";
    const std::string s1 = s.state_json();
    const double l1 = s.loss();
    auto r2 = s.step();
    ASSERT_TRUE(r2.accepted) << "precondition: the second step accepts";
    const std::string s2 = s.state_json();
    // step, step, undo == step: the same state, and the next step does exactly what it did before.
    EXPECT_TRUE(s.undo());
    EXPECT_EQ(s.state_json(), s1);
    EXPECT_EQ(s.loss(), l1);
    EXPECT_EQ(s.history().size(), 1u);
    auto r2b = s.step();
    EXPECT_EQ(r2b.step, r2.step);
    EXPECT_EQ(r2b.chosen_token, r2.chosen_token);
    EXPECT_EQ(r2b.best_loss, r2.best_loss);
    EXPECT_EQ(r2b.loss_after, r2.loss_after);
    EXPECT_TRUE(at::equal(r2b.candidate_loss.nan_to_num(-1), r2.candidate_loss.nan_to_num(-1)));
    auto no_seconds = [](const std::string& st) {
        auto j = nlohmann::json::parse(st);
        for (auto& e : j["history"]["steps"]) e.erase("seconds");
        return j;
    };
    EXPECT_EQ(no_seconds(s.state_json()), no_seconds(s2));
    // score() then commit() is step(); a stale scoring is refused.
    GreedySearch c(m, sample, o);
    auto sc = c.score(StepKind::Exhaustive);
    auto rc = c.commit(sc);
    EXPECT_EQ(rc.chosen_token, s.history()[0].token);
    EXPECT_EQ(c.loss(), l1);
    EXPECT_NE(error_of([&] { c.commit(sc); }).find("another prefix"), std::string::npos);
    // Undo back to the start.
    EXPECT_TRUE(s.undo());
    EXPECT_TRUE(s.undo());
    EXPECT_EQ(s.state_json(), s0);
    EXPECT_FALSE(s.undo());

    // A stop is undone (the search goes on), and an override after a stop undone is stopped again.
    GreedySearchOptions strict = o;
    strict.tau = 1e-9;
    GreedySearch t(m, sample, strict);
    const std::string t0 = t.state_json();
    auto stop = t.step();
    ASSERT_TRUE(t.done());
    const std::string t1 = t.state_json();
    t.override_step(5);
    EXPECT_FALSE(t.done());
    EXPECT_TRUE(t.undo());
    EXPECT_EQ(t.state_json(), t1);
    EXPECT_TRUE(t.done());
    EXPECT_EQ(t.step().reason, stop.reason);
    EXPECT_TRUE(t.undo());
    EXPECT_FALSE(t.done());
    EXPECT_EQ(t.state_json(), t0);

    // Steps restored from a checkpoint are undone by recomputing the shorter prefix: the same state.
    GreedySearch u(m, sample, o);
    u.restore(s2);
    EXPECT_TRUE(u.undo());
    EXPECT_EQ(no_seconds(u.state_json()), no_seconds(s1));
    EXPECT_EQ(u.loss(), l1);
    auto r2u = u.step();
    EXPECT_EQ(r2u.chosen_token, r2.chosen_token);
    EXPECT_EQ(r2u.best_loss, r2.best_loss);
    GreedySearch v(m, sample, strict);
    v.step();
    v.override_step(5);
    GreedySearch w(m, sample, strict);
    w.restore(v.state_json());
    EXPECT_TRUE(w.undo());
    EXPECT_TRUE(w.done());  // the override had resumed a stopped search
    EXPECT_EQ(w.prefix(), std::vector<int32_t>{1});
}

TEST(GreedySearch, CushionOfTheSearchAndItsFile) {
    auto m = tiny();
    const auto sample = tiny_sample(24, 13);
    GreedySearchOptions o;
    o.tau = 1.0;
    o.max_prefix = 3;
    GreedySearch s(m, sample, o);
    while (!s.done()) s.step();
    Cushion c = s.cushion();
    EXPECT_EQ(c.prefix_ids, s.prefix());
    Cushion ref = make_cushion(*m, s.prefix());
    for (size_t l = 0; l < c.kv.k.size(); ++l) {
        EXPECT_TRUE(at::equal(c.kv.k[l], ref.kv.k[l]));
        EXPECT_TRUE(at::equal(c.kv.v[l], ref.kv.v[l]));
    }
    auto settings = nlohmann::json::parse(c.settings_json)["search"];
    EXPECT_EQ(settings["tau"], 1.0);
    EXPECT_EQ(settings["bits"], 8);
    EXPECT_EQ(settings["sample_tokens"], 24);
    EXPECT_EQ(settings["candidates"], "non-special");
    auto hist = nlohmann::json::parse(c.history_json)["search"];
    EXPECT_EQ(hist["prefix"].get<std::vector<int32_t>>(), s.prefix());
    EXPECT_EQ(hist["steps"].size(), s.history().size());
    EXPECT_EQ(hist["initial_lq"].get<double>(), s.initial_loss());
    const std::string path = temp_dir("search-cushion") + "/c.cushion";
    save_cushion(c, path);
    Cushion back = load_cushion(path);
    EXPECT_EQ(back.history_json, c.history_json);
    EXPECT_EQ(back.prefix_ids, c.prefix_ids);
    check_cushion_fits(back, *m);
    EXPECT_NE(error_of([&] { check_cushion_fits(back, *tiny(4)); }).find("another model"), std::string::npos);
}

TEST(GreedySearch, BadSettingsAreClearErrors) {
    auto m = tiny();
    const auto sample = tiny_sample(24, 13);
    auto with = [&](std::function<void(GreedySearchOptions&)> f, std::vector<int32_t> smp = {}) {
        GreedySearchOptions o;
        f(o);
        return error_of([&] { GreedySearch(m, smp.empty() ? sample : smp, o); });
    };
    EXPECT_NE(with([](auto& o) { o.tau = 0; }).find("tau"), std::string::npos);
    EXPECT_NE(with([](auto& o) { o.tau = 1.5; }).find("tau"), std::string::npos);
    EXPECT_NE(with([](auto& o) { o.max_prefix = 0; }).find("maximum prefix"), std::string::npos);
    EXPECT_NE(with([](auto& o) { o.start_tokens = {1, 3, 4}; o.max_prefix = 2; }).find("longer than"), std::string::npos);
    EXPECT_NE(with([](auto& o) { o.candidates = {3, 40}; }).find("out of range"), std::string::npos);
    EXPECT_NE(with([](auto& o) { o.loss.bits = 5; }), "<no error>");
    EXPECT_NE(with([](auto& o) { o.max_prefix = 8; }, tiny_sample(60, 13)).find("context"), std::string::npos);
    EXPECT_NE(error_of([&] { GreedySearch(m, {}); }).find("empty"), std::string::npos);
    // The sample helper: documents without their <bos>, concatenated, first n.
    const std::vector<std::vector<int32_t>> docs{{1, 5, 6}, {1, 7}, {8, 9}};
    EXPECT_EQ(make_search_sample(docs, 1, 4), (std::vector<int32_t>{5, 6, 7, 8}));
    EXPECT_NE(error_of([&] { make_search_sample(docs, 1, 6); }).find("fewer"), std::string::npos);
    ModelConfig c;
    c.max_seq_len = 512;
    EXPECT_EQ(default_sample_tokens(c, 4), 508);
    c.max_seq_len = 2048;
    EXPECT_EQ(default_sample_tokens(c, 4), 512);
}

// ------------------------------------------------------------------------------------ prefix tuning

namespace {

const std::vector<std::vector<int32_t>> kTuneDocs = {
    {1, 4, 5, 6, 7, 8, 3, 9}, {1, 9, 3, 10, 11}, {1, 5, 5, 5, 10, 12, 4, 6, 8}, {1, 7, 7, 3, 4}, {1, 11, 12}};

// L_q with Q frozen at the values it had on the first pass: the function whose derivative the
// stop-gradient L_q has (scale, zero point and rounding constant).
struct FrozenQuantLoss : ActivationHook {
    std::map<std::pair<int, int>, at::Tensor> q;  // Q(A) of the first pass
    bool record = true;
    at::Tensor total;  // (B) float64
    void on_activation(int layer, Site site, at::Tensor& x, const at::Tensor& valid) override {
        if (site == Site::Residual) return;
        at::Tensor xd = x.to(at::kDouble);
        auto key = std::make_pair(layer, static_cast<int>(site));
        if (record) {
            at::Tensor mn, mx;
            row_minmax(xd, valid, &mn, &mx);
            q[key] = fake_quant_act(xd, act_params(mn, mx, 8));
        }
        at::Tensor d = (xd - q.at(key)).masked_fill(at::logical_not(valid).unsqueeze(-1), 0.0);
        at::Tensor l = (d * d).sum({1, 2});
        total = total.defined() ? total + l : l;
    }
};

// CE + lambda * frozen L_q of seqs after kv, computed independently of the tuner.
double reference_loss(const Model& m, const KVCache& kv, const std::vector<std::vector<int32_t>>& seqs, double lambda,
                      FrozenQuantLoss* hook) {
    at::NoGradGuard ng;
    at::Tensor tokens, valid;
    pad_batch(seqs, &tokens, &valid);
    hook->total = at::Tensor();
    ForwardArgs fa;
    fa.prefix = &kv;
    fa.hook = hook;
    fa.valid = valid;
    at::Tensor logp = at::log_softmax(m.forward(tokens, fa).to(at::kDouble), -1);
    auto lp = logp.accessor<double, 3>();
    double nll = 0;
    int64_t n = 0;
    for (size_t b = 0; b < seqs.size(); ++b)
        for (size_t t = 0; t + 1 < seqs[b].size(); ++t) {
            nll -= lp[b][t][seqs[b][t + 1]];
            ++n;
        }
    return nll / n + lambda * hook->total.mean().item<double>();
}

// A tiny model and a three-token cushion in double precision, and three documents without their <bos>.
struct TuningCase {
    std::shared_ptr<Model> m;
    Cushion c;
    std::vector<std::vector<int32_t>> seqs;
};
TuningCase double_precision_tuning_case() {
    TuningCase t;
    t.m = tiny(11);
    t.m->to(c10::Device(c10::kCPU), at::kDouble);
    t.c = make_cushion(*t.m, {1, 6, 9});
    for (auto* v : {&t.c.kv.k, &t.c.kv.v})
        for (auto& x : *v) x = x.to(at::kDouble);
    for (size_t i = 0; i < 3; ++i) t.seqs.emplace_back(kTuneDocs[i].begin() + 1, kTuneDocs[i].end());
    return t;
}

}  // namespace

TEST(PrefixTuner, GradientsMatchFiniteDifferences) {
    // Double precision throughout (the forward pass keeps some float32 steps, e.g. RMSNorm statistics),
    // a prefix of three tokens, lambda large enough that both terms matter.
    TuningCase t = double_precision_tuning_case();
    auto& m = t.m;
    auto& c = t.c;
    auto& seqs = t.seqs;
    const double lambda = 0.05;
    QuantLossOptions lo;
    TuneLoss g = prefix_tune_loss(*m, c.kv, seqs, lambda, lo, /*with_grad=*/true);
    FrozenQuantLoss frozen;
    const double ref0 = reference_loss(*m, c.kv, seqs, lambda, &frozen);
    frozen.record = false;
    EXPECT_LT(rel(g.total, ref0), 1e-6) << g.total << " vs " << ref0;
    EXPECT_GT(g.ce, 0);
    EXPECT_GT(g.lq, 0);
    EXPECT_LT(rel(g.total, g.ce + lambda * g.lq), 1e-12);
    ASSERT_EQ(g.grad_k.size(), 2u);
    double sq = 0;
    for (size_t l = 0; l < 2; ++l) sq += g.grad_k[l].pow(2).sum().item<double>() + g.grad_v[l].pow(2).sum().item<double>();
    EXPECT_LT(rel(g.grad_norm, std::sqrt(sq)), 1e-9);
    EXPECT_GT(g.grad_norm, 0);
    // Central differences on individual elements of K and V of every layer and every position.
    const double h = 1e-2;
    int checked = 0;
    for (int l = 0; l < 2; ++l)
        for (int which = 0; which < 2; ++which)
            for (int64_t pos : {0, 1, 2})
                for (int64_t j : {0, 3}) {
                    at::Tensor& p = which ? c.kv.v[l] : c.kv.k[l];
                    const at::Tensor& gr = which ? g.grad_v[l] : g.grad_k[l];
                    const int64_t head = (pos + j) % p.size(1);
                    const double orig = p[0][head][pos][j].item<double>();
                    p[0][head][pos][j] = orig + h;
                    const double up = reference_loss(*m, c.kv, seqs, lambda, &frozen);
                    p[0][head][pos][j] = orig - h;
                    const double dn = reference_loss(*m, c.kv, seqs, lambda, &frozen);
                    p[0][head][pos][j] = orig;
                    const double fd = (up - dn) / (2 * h), an = gr[0][head][pos][j].item<double>();
                    EXPECT_NEAR(an, fd, 2e-6 + 5e-3 * std::fabs(fd))
                        << "layer " << l << (which ? " V" : " K") << " pos " << pos << " j " << j;
                    ++checked;
                }
    EXPECT_EQ(checked, 24);
    // A directional derivative along a random direction over all parameters.
    at::manual_seed(0);
    std::vector<at::Tensor> dirs;
    double dot = 0;
    for (int l = 0; l < 2; ++l)
        for (int which = 0; which < 2; ++which) {
            at::Tensor d = at::randn_like(which ? c.kv.v[l] : c.kv.k[l]);
            dirs.push_back(d);
            dot += (d * (which ? g.grad_v[l] : g.grad_k[l])).sum().item<double>();
        }
    auto shifted = [&](double e) {
        KVCache kv = c.kv;
        for (int l = 0; l < 2; ++l) {
            kv.k[l] = c.kv.k[l] + e * dirs[2 * l];
            kv.v[l] = c.kv.v[l] + e * dirs[2 * l + 1];
        }
        return reference_loss(*m, kv, seqs, lambda, &frozen);
    };
    const double hd = 1e-3;
    const double fd = (shifted(hd) - shifted(-hd)) / (2 * hd);
    EXPECT_NEAR(dot, fd, 1e-3 * std::fabs(fd) + 1e-6);
    // Scale/zero detached: the gradient is NOT that of the true L_q with its range moving.
}

TEST(PrefixTuner, EpochsBatchesAndTheLossGoesDown) {
    auto m = tiny(11);
    Cushion c = make_cushion(*m, {1, 6});
    PrefixTuneOptions o;
    o.batch_size = 2;
    o.epochs = 3;
    o.lr = 0.05;
    PrefixTuner t(m, c, kTuneDocs, o);
    EXPECT_EQ(t.documents(), 5u);
    EXPECT_EQ(t.batches_per_epoch(), 3);
    EXPECT_EQ(t.total_steps(), 9);
    std::vector<size_t> all{0, 1, 2, 3, 4};
    const double before = t.loss_on(all, false).total;
    int epoch_ends = 0;
    std::vector<int64_t> docs_per_epoch(3, 0);
    while (!t.done()) {
        auto r = t.step();
        EXPECT_EQ(r.step, t.steps_done());
        EXPECT_GT(r.grad_norm, 0);
        EXPECT_LT(rel(r.total, r.ce + o.lambda * r.lq), 1e-9);
        docs_per_epoch[r.epoch] += r.docs;
        epoch_ends += r.epoch_end;
        EXPECT_EQ(r.epoch_end, r.batch == 2);
        EXPECT_EQ(r.done, r.step == 9);
    }
    EXPECT_EQ(epoch_ends, 3);
    EXPECT_EQ(docs_per_epoch, (std::vector<int64_t>{5, 5, 5}));  // every document once per epoch
    const double after = t.loss_on(all, false).total;
    EXPECT_LT(after, before);
    EXPECT_NE(error_of([&] { t.step(); }).find("done"), std::string::npos);
    // The tuned cushion: tuned KV, last logits recomputed after the tuned earlier positions, history.
    Cushion tc = t.cushion();
    EXPECT_FALSE(at::equal(tc.kv.k[0], c.kv.k[0]));
    EXPECT_TRUE(at::equal(tc.kv.k[1], t.k()[1]));
    EXPECT_TRUE(at::allclose(tc.last_logits, prefix_last_logits(*m, {1, 6}, tc.kv)));
    EXPECT_EQ(tc.prefix_ids, c.prefix_ids);
    check_cushion_fits(tc, *m);
    auto hist = nlohmann::json::parse(tc.history_json);
    EXPECT_EQ(hist["tuning"]["steps"].size(), 9u);
    EXPECT_EQ(nlohmann::json::parse(tc.settings_json)["tuning"]["lr"], 0.05);
    // last logits: for an untuned prefix they are make_cushion's; for one token, the token alone.
    EXPECT_TRUE(at::allclose(prefix_last_logits(*m, {1, 6}, c.kv), c.last_logits, 1e-5, 1e-5));
    Cushion one = make_cushion(*m, {1});
    EXPECT_TRUE(at::allclose(prefix_last_logits(*m, {1}, one.kv), one.last_logits, 1e-6, 1e-6));
    // Settings.
    PrefixTuneOptions bad = o;
    bad.lr = 0;
    EXPECT_NE(error_of([&] { PrefixTuner(m, c, kTuneDocs, bad); }).find("learning rate"), std::string::npos);
    EXPECT_NE(error_of([&] { PrefixTuner(m, c, {{1}, {1}}, o); }).find("no calibration document"), std::string::npos);
    EXPECT_NE(error_of([&] { PrefixTuner(tiny(4), c, kTuneDocs, o); }).find("another model"), std::string::npos);
}

TEST(PrefixTuner, CancelLeavesStateUnchangedAndCheckpointsResume) {
    auto m = tiny(11);
    Cushion c = make_cushion(*m, {1, 6});
    PrefixTuneOptions o;
    o.batch_size = 2;
    o.epochs = 2;
    o.lr = 0.02;
    PrefixTuner a(m, c, kTuneDocs, o), ref(m, c, kTuneDocs, o);
    a.step();
    ref.step();
    // Cancelled after the forward/backward pass, before the update: nothing changed.
    at::Tensor k0 = a.k()[0].clone();
    int calls = 0;
    EXPECT_THROW(a.step([&](double, const std::string&) { return ++calls < 2; }), Cancelled);
    EXPECT_TRUE(at::equal(a.k()[0], k0));
    EXPECT_EQ(a.steps_done(), 1);
    EXPECT_EQ(a.history().size(), 1u);
    // Checkpoint after step 2, restore into a fresh tuner, finish both: identical.
    a.step();
    ref.step();
    const std::string dir = temp_dir("tune-ck");
    GreedySearch s(m, tiny_sample(16, 13));
    save_calib_checkpoint(dir + "/ck", s, &a);
    CalibCheckpoint ck = load_calib_checkpoint(dir + "/ck");
    ASSERT_FALSE(ck.tune_state.empty());
    PrefixTuner b(m, c, kTuneDocs, o);
    b.restore(ck.tensors, ck.tune_state);
    EXPECT_EQ(b.steps_done(), 2);
    EXPECT_EQ(b.epoch(), a.epoch());
    EXPECT_EQ(b.batch_in_epoch(), a.batch_in_epoch());
    while (!a.done()) {
        auto ra = a.step(), rb = b.step();
        EXPECT_EQ(ra.total, rb.total);
    }
    EXPECT_TRUE(b.done());
    for (size_t l = 0; l < 2; ++l) EXPECT_TRUE(at::equal(a.k()[l], b.k()[l]));
    // The cancelled run agrees with one that never was.
    while (!ref.done()) ref.step();
    EXPECT_TRUE(at::equal(a.v()[1], ref.v()[1]));
    // Other settings refuse the state.
    PrefixTuneOptions o2 = o;
    o2.lr = 0.1;
    PrefixTuner d(m, c, kTuneDocs, o2);
    EXPECT_NE(error_of([&] { d.restore(ck.tensors, ck.tune_state); }).find("lr"), std::string::npos);
}

TEST(PrefixTuner, CrossEntropyInSlicesEqualsOneSlice) {
    // The tuning CE taken one position at a time (as for a large vocabulary) gives the same losses and
    // gradients as taking every position at once: only the summation order differs.
    TuningCase t = double_precision_tuning_case();
    auto& m = t.m;
    auto& c = t.c;
    auto& seqs = t.seqs;
    QuantLossOptions lo;
    const TuneLoss whole = prefix_tune_loss(*m, c.kv, seqs, 0.05, lo, true, int64_t(1) << 40);
    const TuneLoss sliced = prefix_tune_loss(*m, c.kv, seqs, 0.05, lo, true, /*ce_chunk_bytes=*/1);
    EXPECT_GT(whole.ce, 0);
    EXPECT_LT(rel(sliced.ce, whole.ce), 1e-9) << sliced.ce << " vs " << whole.ce;
    EXPECT_LT(rel(sliced.lq, whole.lq), 1e-12);
    EXPECT_LT(rel(sliced.total, whole.total), 1e-9);
    EXPECT_EQ(sliced.tokens, whole.tokens);
    EXPECT_LT(rel(sliced.grad_norm, whole.grad_norm), 1e-6);
    for (size_t l = 0; l < whole.grad_k.size(); ++l) {
        EXPECT_LT((sliced.grad_k[l] - whole.grad_k[l]).abs().max().item<double>(), 1e-6 * whole.grad_norm) << l;
        EXPECT_LT((sliced.grad_v[l] - whole.grad_v[l]).abs().max().item<double>(), 1e-6 * whole.grad_norm) << l;
    }
    // Without gradients: the same losses.
    const TuneLoss eval = prefix_tune_loss(*m, c.kv, seqs, 0.05, lo, false, 1);
    EXPECT_LT(rel(eval.total, whole.total), 1e-9);
    EXPECT_TRUE(eval.grad_k.empty());
}

TEST(PrefixTuner, StateFileResumesTuningExactly) {
    auto m = tiny(11);
    Cushion c = make_cushion(*m, {1, 6});
    PrefixTuneOptions o;
    o.batch_size = 2;
    o.epochs = 2;
    o.lr = 0.02;
    PrefixTuner a(m, c, kTuneDocs, o), straight(m, c, kTuneDocs, o);
    a.step();
    a.step();
    const std::string dir = temp_dir("tuner-state");
    const std::string path = dir + "/session.tuner";
    a.save_state(path);
    // A fresh tuner (a reopened session) loads it and goes on: the same as tuning straight through.
    PrefixTuner b(m, c, kTuneDocs, o);
    b.load_state(path);
    EXPECT_EQ(b.steps_done(), 2);
    EXPECT_EQ(b.epoch(), a.epoch());
    EXPECT_EQ(b.batch_in_epoch(), a.batch_in_epoch());
    EXPECT_EQ(b.history().size(), 2u);
    straight.step();
    straight.step();
    auto max_diff = [](const std::vector<at::Tensor>& x, const std::vector<at::Tensor>& y) {
        double d = 0;
        for (size_t l = 0; l < x.size(); ++l) d = std::max(d, (x[l] - y[l]).abs().max().item<double>());
        return d;
    };
    for (int i = 0; i < 2; ++i) {  // the third batch (the epoch's last), then the first of epoch 2
        auto rb = b.step(), rs = straight.step();
        EXPECT_EQ(rb.step, rs.step);
        EXPECT_EQ(rb.epoch, rs.epoch);
        EXPECT_NEAR(rb.total, rs.total, 1e-6 * std::fabs(rs.total));
        EXPECT_LT(max_diff(b.k(), straight.k()), 1e-6);
        EXPECT_LT(max_diff(b.v(), straight.v()), 1e-6);
    }
    // Another learning rate, another prefix or a file that is not a tuner state: refused, nothing changed.
    PrefixTuneOptions o2 = o;
    o2.lr = 0.1;
    PrefixTuner d(m, c, kTuneDocs, o2);
    EXPECT_NE(error_of([&] { d.load_state(path); }).find("lr"), std::string::npos);
    EXPECT_EQ(d.steps_done(), 0);
    PrefixTuner e(m, make_cushion(*m, {1, 7}), kTuneDocs, o);
    EXPECT_NE(error_of([&] { e.load_state(path); }).find("another prefix"), std::string::npos);
    save_cushion(c, dir + "/a.cushion");
    EXPECT_NE(error_of([&] { e.load_state(dir + "/a.cushion"); }).find("not a tuner state"), std::string::npos);
    EXPECT_NE(error_of([&] { e.load_state(dir + "/missing.tuner"); }), "<no error>");
    // A state whose tuned K/V holds NaN (tuning on would write a cushion every command rejects), or whose JSON
    // has a field of the wrong type: refused with the file and the tensor or field named, nothing changed.
    {
        SafetensorsFile f(path);
        std::vector<std::pair<std::string, at::Tensor>> ts;
        for (const auto& n : f.names()) ts.push_back({n, f.get(n).clone()});
        for (auto& [n, t] : ts)
            if (n == "tune.k.1") t.view(-1)[0] = NAN;
        save_safetensors(dir + "/nan.tuner", ts, f.metadata());
        auto meta = f.metadata();
        auto tune = nlohmann::json::parse(meta["tune"]);
        tune["epoch"] = "one";
        meta["tune"] = tune.dump();
        for (auto& [n, t] : ts)
            if (n == "tune.k.1") t = f.get(n).clone();
        save_safetensors(dir + "/badjson.tuner", ts, meta);
    }
    PrefixTuner g(m, c, kTuneDocs, o);
    std::string err = error_of([&] { g.load_state(dir + "/nan.tuner"); });
    EXPECT_NE(err.find("tensor tune.k.1 contains NaN or Inf"), std::string::npos) << err;
    EXPECT_NE(err.find("nan.tuner"), std::string::npos) << err;
    err = error_of([&] { g.load_state(dir + "/badjson.tuner"); });
    EXPECT_NE(err.find("badjson.tuner: tuning state: field 'epoch' must be a whole number in [0, 2147483647], it is \"one\""),
              std::string::npos)
        << err;
    EXPECT_EQ(g.steps_done(), 0);
}
