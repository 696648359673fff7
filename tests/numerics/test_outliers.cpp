// Outlier-token report (PrefixQuant's criterion) on the real and the planted model.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "package/open_target.h"
#include "analysis/outlier_planting.h"
#include "analysis/outlier_report.h"
#include "model/perplexity.h"
#include "test_support.h"

using namespace cushion;
using namespace cushion::test;

TEST(Outliers, PlantedModelFlagsBosInEveryBlockAndNothingElseThere) {
    auto m = load_model(stories_bin());
    auto p = plant_outliers(*m, {});
    auto docs = tokenize_documents(*p, read_documents(calib_text()), p->config.max_seq_len);
    OutlierOptions o;
    o.threshold = 500;  // far above anything stories260K has on its own (max ~124)
    auto rep = find_outlier_tokens(*p, docs, o);
    ASSERT_EQ(rep.frequency.size(), 1u);
    EXPECT_EQ(rep.frequency[0].token, p->tokenizer->bos_id());
    EXPECT_EQ(rep.frequency[0].outlier_count, (int64_t)docs.size());
    EXPECT_EQ(rep.frequency[0].blocks.size(), 5u);
    ASSERT_EQ(rep.outliers.size(), docs.size() * 5);
    for (auto& x : rep.outliers) {
        EXPECT_EQ(x.pos, 0);
        EXPECT_EQ(x.channel, p->config.hidden_dim - 1);  // the planted spike unit
        EXPECT_GT(x.ratio, 1000.f);
    }
}

TEST(Outliers, RealModelAtDefaultThresholdAndCli) {
    auto m = load_model(stories_bin());
    auto docs = tokenize_documents(*m, read_documents(calib_text()), m->config.max_seq_len);
    auto rep = find_outlier_tokens(*m, docs, {});
    ASSERT_FALSE(rep.frequency.empty());
    bool bos = false;
    for (auto& f : rep.frequency) {
        EXPECT_LE(f.outlier_count, f.occurrences);
        if (f.token == m->tokenizer->bos_id()) bos = f.outlier_count == (int64_t)docs.size();
    }
    EXPECT_TRUE(bos) << "<bos> should be an outlier (ratio ~124 > 64) in every document";
    EXPECT_GT(rep.block_max_ratio[0], 64.f);
    std::string out;
    ASSERT_EQ(run_command(bin_dir() + "/cushion outliers --text " + calib_text() + " --json --quiet", &out), 0) << out;
    auto j = nlohmann::json::parse(out);
    EXPECT_EQ(j["outliers"].size(), rep.outliers.size());
    EXPECT_EQ(j["threshold"], 64.0);
}

TEST(Outliers, EmptyCalibrationTextIsAClearError) {
    const std::string dir = temp_dir("empty");
    std::ofstream(dir + "/empty.txt") << "\n   \n";
    std::string out;
    EXPECT_EQ(run_command(bin_dir() + "/cushion eval --text " + eval_text() + " --calib " + dir + "/empty.txt 2>&1", &out), 2);
    EXPECT_NE(out.find("no non-empty lines"), std::string::npos) << out;
    out.clear();
    EXPECT_EQ(run_command(bin_dir() + "/cushion outliers --text " + calib_text() + " --threshold 0.5 2>&1", &out), 2);
}
