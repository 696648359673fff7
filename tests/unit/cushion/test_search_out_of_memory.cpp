// Out of memory during a greedy search step (issue 15): the candidate batch is halved, the same candidates are
// scored again, and the step's result is the one of a run without the failure. The failures are injected on the
// CPU (base/out_of_memory.h: the exception types libtorch's CPU and CUDA allocators throw, and std::bad_alloc);
// the CUDA path is the same code and is not run here.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/out_of_memory.h"
#include "cushion/greedy_search.h"
#include "test_support.h"
#include "tiny_models.h"

using namespace cushion;
using namespace cushion::test;

namespace {

std::shared_ptr<Model> tiny_model() {
    TinySpec s;
    s.seed = 3;
    s.vocab = 13;
    return make_tiny(s).first;
}

std::vector<int32_t> sample_of(int n, int vocab) {
    std::vector<int32_t> s;
    uint64_t x = 7;
    for (int i = 0; i < n; ++i) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        s.push_back(3 + static_cast<int32_t>((x >> 33) % (vocab - 3)));
    }
    return s;
}

double rel(double a, double b) { return std::fabs(a - b) / std::max(1e-30, std::max(std::fabs(a), std::fabs(b))); }

at::Tensor scored(const GreedyStepResult& r) { return r.candidate_loss.narrow(0, 3, 10); }  // tokens 3..12

struct Disarm {
    ~Disarm() { oom_testing::clear_injected_out_of_memory(); }
};

}  // namespace

TEST(SearchOutOfMemory, HalvedBatchesGiveTheSameStep) {
    auto m = tiny_model();
    const auto sample = sample_of(24, 13);
    GreedySearchOptions o;
    o.tau = 1.0;
    o.max_batch = 8;  // 10 candidates: batches of 8 and 2
    GreedySearch plain(m, sample, o);
    const GreedyStepResult ref = plain.step();
    ASSERT_EQ(ref.batch_size, 8);
    ASSERT_TRUE(ref.accepted);
    // The same search where batches above 2 candidates run out of memory twice (8 -> 4 -> 2), for each exception
    // type libtorch throws.
    for (auto kind : {oom_testing::OomKind::Cpu, oom_testing::OomKind::Cuda, oom_testing::OomKind::BadAlloc}) {
        Disarm disarm;
        std::vector<std::string> log;
        GreedySearchOptions oo = o;
        oo.log = [&](const std::string& line) { log.push_back(line); };
        GreedySearch s(m, sample, oo);
        oom_testing::inject_out_of_memory(2, 2, kind);
        const GreedyStepResult r = s.step();
        EXPECT_EQ(oom_testing::injected_out_of_memory_thrown(), 2);
        // Logged once per halving, with the new size.
        ASSERT_EQ(log.size(), 2u);
        EXPECT_EQ(log[0], "greedy search step 1: out of memory with a batch of 8 candidates, going on with 4");
        EXPECT_EQ(log[1], "greedy search step 1: out of memory with a batch of 4 candidates, going on with 2");
        EXPECT_EQ(r.batch_size, 2);
        // The result: the same token chosen, the same decision, L_q equal to float rounding (BLAS blocks its
        // products by batch shape: GreedySearch.BatchingAndRepetitionGiveTheSameResult) ...
        EXPECT_EQ(r.best_token, ref.best_token);
        EXPECT_EQ(r.chosen_token, ref.chosen_token);
        EXPECT_EQ(r.accepted, ref.accepted);
        EXPECT_LT(rel(r.best_loss, ref.best_loss), 1e-5);
        EXPECT_EQ(s.prefix(), plain.prefix());
        EXPECT_LT(rel(s.loss(), plain.loss()), 1e-5);
        for (int t = 3; t < 13; ++t) EXPECT_LT(rel(r.candidate_loss[t].item<double>(), ref.candidate_loss[t].item<double>()), 1e-5) << t;
        // ... and to the last bit what a run with batches of 2 from the start computes: every candidate scored once,
        // none lost or mixed up by the retries.
        GreedySearchOptions two = o;
        two.max_batch = 2;
        const GreedyStepResult r2 = GreedySearch(m, sample, two).step();
        EXPECT_TRUE(at::equal(scored(r), scored(r2)));
        EXPECT_EQ(r.best_loss, r2.best_loss);
        // The halved batch stays for the next step; no more failures.
        const GreedyStepResult next = s.score(StepKind::Exhaustive);
        EXPECT_EQ(next.batch_size, 2);
        EXPECT_EQ(log.size(), 2u);
    }
}

TEST(SearchOutOfMemory, PrunedAndFastStepsHalveToo) {
    auto m = tiny_model();
    const auto sample = sample_of(24, 13);
    GreedySearchOptions o;
    o.prune_window = 8;
    o.prune_keep = 4;
    o.screen_keep = 4;
    o.screen_batch = 10;
    for (StepKind kind : {StepKind::Pruned, StepKind::Fast}) {
        Disarm disarm;
        const GreedyStepResult ref = GreedySearch(m, sample, o).score(kind);
        std::vector<std::string> log;
        GreedySearchOptions oo = o;
        oo.log = [&](const std::string& line) { log.push_back(line); };
        GreedySearch s(m, sample, oo);
        oom_testing::inject_out_of_memory(3, 1);  // the first pass's first batch (the window, or the screen)
        const GreedyStepResult r = s.score(kind);
        EXPECT_EQ(oom_testing::injected_out_of_memory_thrown(), 1);
        ASSERT_EQ(log.size(), 1u) << step_kind_name(kind);
        EXPECT_NE(log[0].find(kind == StepKind::Fast ? "(screen)" : "(window)"), std::string::npos) << log[0];
        EXPECT_NE(log[0].find("going on with 5"), std::string::npos) << log[0];
        EXPECT_EQ(r.shortlist, ref.shortlist) << step_kind_name(kind);
        EXPECT_EQ(r.best_token, ref.best_token) << step_kind_name(kind);
        EXPECT_LT(rel(r.best_loss, ref.best_loss), 1e-5) << step_kind_name(kind);
    }
}

TEST(SearchOutOfMemory, OneCandidatePerBatchIsAClearErrorAndTheSearchStays) {
    Disarm disarm;
    auto m = tiny_model();
    const auto sample = sample_of(24, 13);
    GreedySearchOptions o;
    o.max_batch = 4;
    std::vector<std::string> log;
    o.log = [&](const std::string& line) { log.push_back(line); };
    GreedySearch s(m, sample, o);
    const double before = s.loss();
    oom_testing::inject_out_of_memory(0, -1, oom_testing::OomKind::Cpu);  // every batch fails
    try {
        s.step();
        ADD_FAILURE() << "no error";
    } catch (const Error& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find("greedy search step 1: out of memory with a batch of 1 candidate"), std::string::npos) << msg;
        EXPECT_NE(msg.find("DefaultCPUAllocator"), std::string::npos) << msg;
    }
    EXPECT_EQ(log.size(), 2u);  // 4 -> 2 -> 1
    EXPECT_EQ(s.prefix(), std::vector<int32_t>{1});
    EXPECT_TRUE(s.history().empty());
    EXPECT_EQ(s.loss(), before);
    // Memory back: the step runs (with the halved batch).
    oom_testing::clear_injected_out_of_memory();
    const GreedyStepResult r = s.step();
    EXPECT_EQ(r.batch_size, 1);
    EXPECT_EQ(s.prefix().size(), r.accepted ? 2u : 1u);
}
