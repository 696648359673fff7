// The planted-outlier model keeps the original's function but carries massive activations.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "activation_probe.h"
#include "model_loader.h"
#include "outlier_planting.h"
#include "perplexity.h"
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
