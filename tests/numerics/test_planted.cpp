// The planted-outlier model keeps the original's function but carries massive activations.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "model/activation_probe.h"
#include "package/open_target.h"
#include "analysis/outlier_planting.h"
#include "model/perplexity.h"
#include "test_support.h"

using namespace cushion;
using namespace cushion::test;

TEST(Planted, KeepsFunctionAndPlantsMassiveActivations) {
    auto m = load_model(stories_bin());
    PlantReport rep;
    auto p = plant_outliers(*m, {}, &rep);
    EXPECT_EQ(p->config.dim, 65);
    EXPECT_GE(rep.residual_ratio, 1000.0);
    for (double r : rep.down_in_ratio) EXPECT_GE(r, 1000.0);
    // Same logits everywhere (the first token up to ~1/magnitude).
    auto toks = m->tokenizer->encode("Once upon a time, there was a little girl named Lily. She liked to play.", true);
    at::Tensor t = at::tensor(std::vector<int64_t>(toks.begin(), toks.end()), at::kLong).unsqueeze(0);
    at::Tensor a = m->forward(t), b = p->forward(t);
    EXPECT_LT((a - b).abs().max().item<double>(), 2e-2);
    // Full-precision perplexity stays within 1% of the original.
    auto docs = tokenize_documents(*m, read_documents(eval_text()), m->config.max_seq_len);
    const double pa = perplexity(*m, docs).ppl, pb = perplexity(*p, docs).ppl;
    EXPECT_NEAR(pb, pa, 0.01 * pa);
    // Written as a Hugging Face directory, it loads back with the same function.
    const std::string dir = temp_dir("planted") + "/planted";
    save_hf_directory(*p, dir);
    auto q = load_model(dir);
    EXPECT_LT((q->forward(t) - b).abs().max().item<double>(), 1e-5);
    // Only the first token is an outlier at the down-projection inputs.
    ActivationProbe probe(5);
    ForwardArgs fa;
    fa.hook = &probe;
    q->forward(t, fa);
    auto r = probe.take();
    for (int l = 0; l < 5; ++l) {
        at::Tensor ratio = r->at(l, Site::DownIn).ratio()[0];
        EXPECT_GT(ratio[0].item<float>(), 1000.f);
        EXPECT_LT(ratio.narrow(0, 1, ratio.size(0) - 1).max().item<float>(), 200.f);
    }
}

#include <nlohmann/json.hpp>

#include "cushion/cushion.h"
#include "quant/quantized_model.h"

namespace {
std::vector<std::vector<int32_t>> eval_docs(const Model& m) {
    return tokenize_documents(m, read_documents(eval_text()), m.config.max_seq_len);
}
std::vector<std::vector<int32_t>> calib_docs(const Model& m) {
    return tokenize_documents(m, read_documents(calib_text()), m.config.max_seq_len);
}
}  // namespace

TEST(SlowPlanted, PerTensorStaticCollapsesAndABosCushionRescuesIt) {
    auto m = load_model(stories_bin());
    auto p = plant_outliers(*m, {});
    const auto ev = eval_docs(*p), ca = calib_docs(*p);
    const double fp = perplexity(*p, ev).ppl;
    QuantConfig q;
    q.wbits = 8;
    q.abits = 8;
    q.act = ActGranularity::PerTensorStatic;
    QuantizedModel plain(*p, q, ca);
    const double collapsed = plain.perplexity(ev).ppl;
    EXPECT_GT(collapsed, 10 * fp) << "fp " << fp << " quantized " << collapsed;
    // A cushion holding the firing token: the spike lives in the prefix KV, not in the real tokens.
    Cushion c = make_cushion(*p, {p->tokenizer->bos_id()});
    QuantizeOptions qo;
    qo.prefix = &c.kv;
    QuantizedModel cushioned(*p, q, ca, qo);
    PerplexityOptions po;
    po.prefix = &c.kv;
    po.prefix_last_logits = c.last_logits;
    const double rescued = cushioned.perplexity(ev, po).ppl;
    EXPECT_LT(rescued, 1.1 * fp) << "fp " << fp << " rescued " << rescued;
    // Full precision with the cushion equals full precision without it (a <bos> cushion is the same input).
    EXPECT_NEAR(perplexity(*p, ev, po).ppl, fp, 1e-4 * fp);
}

TEST(SlowPlanted, EvalCliWithCushionFileAndWrongModelError) {
    const std::string dir = temp_dir("planted-cli");
    std::string out;
    const std::string B = bin_dir() + "/cushion";
    ASSERT_EQ(run_command(B + " plant-outliers " + stories_bin() + " " + dir + "/planted --quiet", &out), 0) << out;
    EXPECT_NE(run_command(B + " plant-outliers " + stories_bin() + " " + dir + "/planted 2>&1", &out), 0);  // exists
    auto p = load_model(dir + "/planted");
    save_cushion(make_cushion(*p, {p->tokenizer->bos_id()}), dir + "/bos.cushion");
    out.clear();
    ASSERT_EQ(run_command(B + " eval " + dir + "/planted --text " + eval_text() + " --calib " + calib_text() +
                              " --cushion " + dir + "/bos.cushion --json --quiet",
                          &out),
              0)
        << out;
    auto j = nlohmann::json::parse(out);
    const double fp = j["rows"][0]["ppl"], q = j["rows"][1]["ppl"], qc = j["rows"][1]["ppl_cushion"];
    EXPECT_GT(q, 10 * fp);
    EXPECT_LT(qc, 1.1 * fp);
    // ppl, probe and generate take the cushion too.
    out.clear();
    ASSERT_EQ(run_command(B + " ppl " + dir + "/planted --text " + eval_text() + " --cushion " + dir + "/bos.cushion --json --quiet", &out), 0) << out;
    EXPECT_NEAR(nlohmann::json::parse(out)["ppl"].get<double>(), fp, 1e-4 * fp);
    out.clear();
    ASSERT_EQ(run_command(B + " probe " + dir + "/planted --prompt 'Once upon a time' --json --quiet", &out), 0) << out;
    EXPECT_GT(nlohmann::json::parse(out)["layers"][1]["sites"]["down_in"]["max_ratio"].get<double>(), 1000.0);
    out.clear();
    ASSERT_EQ(run_command(B + " probe " + dir + "/planted --prompt 'Once upon a time' --cushion " + dir + "/bos.cushion --json --quiet", &out), 0) << out;
    EXPECT_LT(nlohmann::json::parse(out)["layers"][1]["sites"]["down_in"]["max_ratio"].get<double>(), 200.0);
    std::string plain, with;
    ASSERT_EQ(run_command(B + " generate " + dir + "/planted --prompt 'Once upon a time' --max-tokens 30 --json --quiet", &plain), 0);
    ASSERT_EQ(run_command(B + " generate " + dir + "/planted --prompt 'Once upon a time' --max-tokens 30 --json --quiet --cushion " + dir + "/bos.cushion", &with), 0);
    EXPECT_EQ(nlohmann::json::parse(plain)["tokens"], nlohmann::json::parse(with)["tokens"]);
    // The cushion belongs to the planted model: the original refuses it, naming the fingerprints.
    out.clear();
    EXPECT_EQ(run_command(B + " eval --text " + eval_text() + " --calib " + calib_text() + " --cushion " + dir +
                              "/bos.cushion 2>&1",
                          &out),
              2);
    EXPECT_NE(out.find("another model"), std::string::npos) << out;
    // Bad quantization settings.
    for (const char* bad : {"--abits 5", "--wbits 3", "--group 0", "--act per-row", "--smoothquant 1.5"}) {
        out.clear();
        EXPECT_EQ(run_command(B + " eval --text " + eval_text() + " --calib " + calib_text() + " " + bad + " 2>&1", &out), 2)
            << bad << ": " << out;
    }
}
