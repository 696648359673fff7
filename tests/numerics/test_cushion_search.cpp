// CushionCache end to end on real models: the greedy search and prefix tuning on stories260K and on the
// planted-outlier model derived from it (whose W8A8 per-tensor-static collapse a cushion must rescue),
// and the `cushion calibrate` command (cushion file, checkpoint and resume, Ctrl-C).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cushion/calib_checkpoint.h"
#include "cushion/cushion.h"
#include "cushion/greedy_search.h"
#include "package/open_target.h"
#include "analysis/outlier_planting.h"
#include "model/perplexity.h"
#include "cushion/prefix_tuner.h"
#include "quant/quant_loss.h"
#include "quant/quantized_model.h"
#include "test_support.h"

using namespace cushion;
using namespace cushion::test;
namespace fs = std::filesystem;

namespace {

using Docs = std::vector<std::vector<int32_t>>;

Docs untruncated(const Model& m, const std::string& path) {
    return tokenize_documents(m, read_documents(path), int64_t(1) << 40);
}

// W8A8 (per-channel weights) perplexity on the eval text, calibrated on the calibration text, with the
// cushion in place when given. Documents are truncated to fit after a prefix of `room_for` tokens, so
// every row predicts the same tokens.
double quant_ppl(const Model& m, ActGranularity act, int abits, const Cushion* c, int64_t room_for) {
    const int64_t max_len = m.config.max_seq_len - room_for + 1;
    const Docs ev = tokenize_documents(m, read_documents(eval_text()), max_len);
    const Docs cal = tokenize_documents(m, read_documents(calib_text()), max_len);
    QuantConfig q;
    q.wbits = 8;
    q.group = 0;
    q.abits = abits;
    q.act = act;
    QuantizeOptions qo;
    if (c) qo.prefix = &c->kv;
    QuantizedModel qm(m, q, cal, qo);
    PerplexityOptions po;
    if (c) {
        po.prefix = &c->kv;
        po.prefix_last_logits = c->last_logits;
    }
    return qm.perplexity(ev, po).ppl;
}

double fp_ppl(const Model& m, int64_t room_for) {
    return perplexity(m, tokenize_documents(m, read_documents(eval_text()), m.config.max_seq_len - room_for + 1)).ppl;
}

}  // namespace

// The planted model: <bos> carries ~2000x activations. Its L_q with <bos> as a real token is enormous;
// the search starts from a <bos> cushion, which removes the spike from the real tokens, and W8A8
// per-tensor static goes from collapse to within 10% of full precision, with the greedy cushion and with
// the tuned one.
TEST(CushionSearch, PlantedModelCushionRescuesW8A8PerTensorStatic) {
    auto base = load_model(stories_bin());
    std::shared_ptr<const Model> p = plant_outliers(*base, {});
    const Docs cal = untruncated(*p, calib_text());
    GreedySearchOptions so;
    so.max_prefix = 3;
    const auto sample = make_search_sample(cal, p->tokenizer->bos_id(), 64);
    GreedySearch s(p, sample, so);
    // Without a cushion the sample starts with its own <bos>: the spike is in A.
    std::vector<int32_t> with_bos{p->tokenizer->bos_id()};
    with_bos.insert(with_bos.end(), sample.begin(), sample.end());
    const double lq_plain =
        quantization_loss(*p, at::tensor(std::vector<int64_t>(with_bos.begin(), with_bos.end()), at::kLong).unsqueeze(0))
            .item<double>();
    EXPECT_GT(lq_plain, 100 * s.initial_loss()) << lq_plain << " vs " << s.initial_loss();
    double prev = s.loss();
    while (!s.done()) {
        auto r = s.step();
        if (r.accepted) {
            EXPECT_LT(r.loss_after, 0.5 * prev);
            prev = r.loss_after;
        }
    }
    Cushion greedy = s.cushion();
    ASSERT_EQ(greedy.prefix_ids[0], p->tokenizer->bos_id());
    PrefixTuneOptions to;
    to.epochs = 1;
    PrefixTuner tuner(p, greedy, cal, to);
    while (!tuner.done()) {
        auto r = tuner.step();
        EXPECT_TRUE(std::isfinite(r.total));
    }
    Cushion tuned = tuner.cushion();

    const int64_t room = so.max_prefix;
    const double fp = fp_ppl(*p, room);
    const double none = quant_ppl(*p, ActGranularity::PerTensorStatic, 8, nullptr, room);
    const double with_greedy = quant_ppl(*p, ActGranularity::PerTensorStatic, 8, &greedy, room);
    const double with_tuned = quant_ppl(*p, ActGranularity::PerTensorStatic, 8, &tuned, room);
    std::printf("planted W8A8 per-tensor-static: FP %.4f, none %.4f, greedy %.4f (prefix %zu), tuned %.4f\n", fp, none,
                with_greedy, greedy.prefix_ids.size(), with_tuned);
    EXPECT_GT(none, 10 * fp);
    EXPECT_LT(with_greedy, 1.1 * fp);
    EXPECT_LT(with_tuned, 1.1 * fp);
}

// stories260K: the same inputs give the same losses; a pruned step's re-scored shortlist never beats the
// exhaustive minimum (up to rounding) and the search obeys its rules on a real vocabulary.
TEST(CushionSearch, StoriesStepIsDeterministic) {
    std::shared_ptr<const Model> m = load_model(stories_bin());
    const auto sample = make_search_sample(untruncated(*m, calib_text()), m->tokenizer->bos_id(), 48);
    GreedySearchOptions o;
    o.max_prefix = 3;
    o.prune_window = 16;
    o.prune_keep = 16;
    GreedySearch a(m, sample, o), b(m, sample, o);
    EXPECT_EQ(a.candidates().size(), 509u);  // 512 less <unk>, <s>, </s>
    auto ra = a.score(StepKind::Exhaustive), rb = b.score(StepKind::Exhaustive);
    EXPECT_TRUE(at::equal(ra.candidate_loss.narrow(0, 3, 509), rb.candidate_loss.narrow(0, 3, 509)));
    EXPECT_EQ(ra.best_token, rb.best_token);
    EXPECT_TRUE(at::isfinite(ra.candidate_loss.narrow(0, 3, 509)).all().item<bool>());
    auto pr = a.score(StepKind::Pruned);
    EXPECT_EQ(pr.shortlist.size(), 16u);
    EXPECT_GE(pr.best_loss, ra.best_loss * (1 - 1e-5));
    std::printf("stories step 1: exhaustive best %d (L_q %.6g of %.6g), pruned best %d (%.6g)\n", ra.best_token,
                ra.best_loss, ra.loss_before, pr.best_token, pr.best_loss);
}

// `cushion calibrate`: a cushion file eval accepts; a checkpoint that a resumed run continues from.
TEST(CushionSearch, CalibrateCliCheckpointAndResume) {
    const std::string dir = temp_dir("calibrate-cli");
    const std::string B = bin_dir() + "/cushion calibrate " + stories_bin() + " --calib " + calib_text();
    const std::string common = " --sample-tokens 32 --candidates 3-40 --tau 1 --quiet --json --checkpoint " + dir + "/ck";
    std::string out;
    // Search only, at most 2 tokens.
    ASSERT_EQ(run_command(B + common + " --max-prefix 2 --tune-epochs 0 --out " + dir + "/a.cushion", &out), 0) << out;
    auto j1 = nlohmann::json::parse(out);
    ASSERT_EQ(j1["prefix_ids"].size(), 2u) << out;  // tau = 1 accepts any improvement
    EXPECT_LT(j1["lq"].get<double>(), j1["initial_lq"].get<double>());
    Cushion a = load_cushion(dir + "/a.cushion");
    EXPECT_EQ(a.prefix_ids, j1["prefix_ids"].get<std::vector<int32_t>>());
    EXPECT_TRUE(fs::exists(dir + "/ck"));
    // Resumed with room for one more token and tuning: the first step is not redone.
    out.clear();
    ASSERT_EQ(run_command(B + common + " --max-prefix 3 --tune-epochs 1 --batch 5 --resume --out " + dir +
                              "/b.cushion --out-greedy " + dir + "/b-greedy.cushion",
                          &out),
              0)
        << out;
    auto j2 = nlohmann::json::parse(out);
    EXPECT_EQ(j2["search"][0]["token"], j1["search"][0]["token"]);
    EXPECT_EQ(j2["search"][0]["seconds"], j1["search"][0]["seconds"]);  // restored, not recomputed
    EXPECT_GE(j2["search"].size(), 2u);
    EXPECT_EQ(j2["tuning"].size(), 2u);  // 9 documents, 5 a batch: 2 steps
    Cushion b = load_cushion(dir + "/b.cushion"), bg = load_cushion(dir + "/b-greedy.cushion");
    EXPECT_EQ(b.prefix_ids, bg.prefix_ids);
    EXPECT_FALSE(at::equal(b.kv.k[0], bg.kv.k[0]));  // tuned
    auto hist = nlohmann::json::parse(b.history_json);
    EXPECT_TRUE(hist.contains("search") && hist.contains("tuning"));
    EXPECT_EQ(nlohmann::json::parse(b.settings_json)["act"], "per-tensor-static");
    // The cushion is usable by eval.
    out.clear();
    EXPECT_EQ(run_command(bin_dir() + "/cushion eval " + stories_bin() + " --text " + eval_text() + " --calib " +
                              calib_text() + " --cushion " + dir + "/b.cushion --json --quiet",
                          &out),
              0)
        << out;
    // Settings that contradict the checkpoint, and bad options: clear errors.
    out.clear();
    EXPECT_EQ(run_command(B + " --sample-tokens 33 --candidates 3-40 --quiet --checkpoint " + dir + "/ck --resume --out " +
                              dir + "/c.cushion 2>&1",
                          &out),
              2);
    EXPECT_NE(out.find("sample"), std::string::npos) << out;
    for (const char* bad : {"--tau 0", "--act per-token", "--resume", "--candidates 3-900", "--start nosuchpiece",
                            "--abits 5"}) {
        out.clear();
        EXPECT_EQ(run_command(B + " --sample-tokens 32 --out " + dir + "/d.cushion " + bad + " 2>&1", &out), 2) << bad;
        EXPECT_NE(out.find("error"), std::string::npos) << bad << ": " << out;
    }
    EXPECT_FALSE(fs::exists(dir + "/c.cushion"));
    EXPECT_FALSE(fs::exists(dir + "/d.cushion"));
}

// Ctrl-C in the middle of a search: exit status 130, no cushion, no temporary left behind.
TEST(CushionSearch, CalibrateCliCtrlCLeavesNothingHalfWritten) {
    const std::string dir = temp_dir("calibrate-int");
    std::string out;
    const int rc = run_command("timeout --preserve-status -s INT 3 " + bin_dir() + "/cushion calibrate " + stories_bin() +
                                   " --calib " + calib_text() + " --out " + dir + "/x.cushion --checkpoint " + dir +
                                   "/ck 2>&1",
                               &out);
    EXPECT_EQ(rc, 130) << out;
    EXPECT_NE(out.find("cancelled"), std::string::npos) << out;
    EXPECT_FALSE(fs::exists(dir + "/x.cushion"));
    for (const auto& e : fs::directory_iterator(dir)) {
        const std::string name = e.path().filename().string();
        EXPECT_EQ(name, "ck") << "left behind: " << name;
        if (name == "ck") {
            EXPECT_NO_THROW(load_calib_checkpoint(e.path().string()));
        }
    }
}
