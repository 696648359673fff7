// A calibration resumed from a checkpoint gives the cushion of the run that was never interrupted, bit for bit
// (issue 15), on stories260K with the settings of tests/torture/cancel_torture.sh: from a checkpoint taken at the end
// of the search (tuning not started) and from one taken after the first tuning step.
//
// The regression: at::set_num_threads() does more than set the count: with MKL it also turns MKL's dynamic
// threading off for the whole process (mkl_set_dynamic(false)) and sets the thread's MKL count. The search scores
// its candidates on one thread (IntraOpThreads, --threads 1 or the automatic setting for narrow models) and
// puts the count back, but MKL stayed static: a run that had searched tuned with static MKL, a run resumed
// after the search (which scores nothing) with MKL's dynamic default, and MKL splits the tuning's products
// differently (the first tuning step's gradient norm differed in the 9th digit, the cushion by 2.2e-5 of its
// largest value). use_all_cores() (base/threads.h), which the executables and this test program call at
// start-up, now puts libtorch in the state set_num_threads leaves from the start.
//
// One test, in one process: the resumed runs go first, before anything in the process has changed the thread
// count (the checkpointing run's search keeps the process's setting, threads -1), then the uninterrupted run
// scores on one thread as `cushion calibrate --threads 1` does. ctest runs each test in its own process.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include "cushion/calib_checkpoint.h"
#include "cushion/cushion.h"
#include "cushion/greedy_search.h"
#include "cushion/prefix_tuner.h"
#include "model/documents.h"
#include "formats/model_loader.h"
#include "test_support.h"

using namespace cushion;
using namespace cushion::test;

namespace {

struct TortureRun {
    std::shared_ptr<const Model> m;
    std::vector<std::vector<int32_t>> docs;
    std::vector<int32_t> sample;
    GreedySearchOptions so;
    PrefixTuneOptions to;
};

// cancel_torture.sh's run: --candidates 3-30 --tau 1 --max-prefix 3 --sample-tokens 48 --tune-epochs 1 --batch 4
// --threads 1 on the first 8 calibration documents.
TortureRun torture_setup() {
    TortureRun s;
    s.m = load_model_file(stories_bin());
    auto lines = read_documents(calib_text());
    lines.resize(8);
    s.docs = tokenize_documents(*s.m, lines, int64_t(1) << 40);
    s.sample = make_search_sample(s.docs, s.m->tokenizer->bos_id(), 48);
    for (int32_t t = 3; t <= 30; ++t) s.so.candidates.push_back(t);
    s.so.tau = 1;
    s.so.max_prefix = 3;
    s.so.threads = 1;
    s.to.epochs = 1;
    s.to.batch_size = 4;
    s.to.loss = s.so.loss;
    return s;
}

void expect_same_cushion(const Cushion& a, const Cushion& b, const char* what) {
    SCOPED_TRACE(what);
    EXPECT_EQ(a.prefix_ids, b.prefix_ids);
    ASSERT_EQ(a.kv.k.size(), b.kv.k.size());
    for (size_t l = 0; l < a.kv.k.size(); ++l) {
        EXPECT_TRUE(at::equal(a.kv.k[l], b.kv.k[l])) << "k." << l << " differs by "
                                                     << (a.kv.k[l] - b.kv.k[l]).abs().max().item<double>();
        EXPECT_TRUE(at::equal(a.kv.v[l], b.kv.v[l])) << "v." << l << " differs by "
                                                     << (a.kv.v[l] - b.kv.v[l]).abs().max().item<double>();
    }
}

}  // namespace

TEST(ResumedCalibration, EndOfSearchAndMidTuningCheckpointsGiveTheUninterruptedCushion) {
    const TortureRun s = torture_setup();
    const std::string dir = temp_dir("resume-identical");
    const int threads = at::get_num_threads();

    // The interrupted run: its search (on the process's threads: nothing here has set a count yet) to the end,
    // checkpointed there as calibrate does after every step.
    {
        GreedySearchOptions keep = s.so;
        keep.threads = -1;
        GreedySearch first(s.m, s.sample, keep);
        while (!first.done()) first.step();
        save_calib_checkpoint(dir + "/end", first, nullptr);
    }
    // Resumed from the end of the search (as `calibrate --resume`: the search restored, nothing scored), tuned, with
    // a checkpoint after the first tuning step.
    Cushion greedy_resumed, from_end;
    {
        const CalibCheckpoint ck = load_calib_checkpoint(dir + "/end");
        ASSERT_TRUE(ck.tune_state.empty());
        GreedySearch search(s.m, s.sample, s.so);
        search.restore(ck.search_state);
        ASSERT_TRUE(search.done());
        greedy_resumed = search.cushion();
        PrefixTuner tuner(s.m, greedy_resumed, s.docs, s.to);
        ASSERT_EQ(tuner.total_steps(), 2);
        tuner.step();
        save_calib_checkpoint(dir + "/mid", search, &tuner);
        while (!tuner.done()) tuner.step();
        from_end = tuner.cushion();
    }
    // Resumed after the first tuning step.
    Cushion from_mid;
    {
        const CalibCheckpoint ck = load_calib_checkpoint(dir + "/mid");
        ASSERT_FALSE(ck.tune_state.empty());
        GreedySearch search(s.m, s.sample, s.so);
        search.restore(ck.search_state);
        PrefixTuner tuner(s.m, search.cushion(), s.docs, s.to);
        tuner.restore(ck.tensors, ck.tune_state);
        ASSERT_EQ(tuner.steps_done(), 1);
        while (!tuner.done()) tuner.step();
        from_mid = tuner.cushion();
    }
    // The run never interrupted: search on one thread (the count put back after every scoring), then tuning.
    GreedySearch search(s.m, s.sample, s.so);
    while (!search.done()) search.step();
    EXPECT_EQ(at::get_num_threads(), threads);
    const Cushion greedy = search.cushion();
    PrefixTuner tuner(s.m, greedy, s.docs, s.to);
    while (!tuner.done()) tuner.step();
    const Cushion whole = tuner.cushion();

    ASSERT_EQ(whole.prefix_ids.size(), 3u);
    expect_same_cushion(greedy_resumed, greedy, "the search's cushion, resumed");
    expect_same_cushion(from_end, whole, "resumed from the end of the search");
    expect_same_cushion(from_mid, whole, "resumed after the first tuning step");
}
