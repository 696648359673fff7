// The CLI on models that compute NaN/Inf (issue "hardening"): stories260K with layer 2's gate/up projections
// scaled by 1e30 (finite weights whose products overflow float32), and with one NaN weight. ppl, eval, probe and
// calibrate exit with an error naming the first layer and site, and the weight; before, ppl printed "nan".
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "formats/model_loader.h"
#include "test_support.h"

using namespace cushion;
using namespace cushion::test;

namespace {

bool has(const std::string& s, const std::string& needle) { return s.find(needle) != std::string::npos; }

// Runs the CLI, returns its exit status; *out gets stdout and stderr.
int cli(const std::string& args, std::string* out) {
    return run_command(bin_dir() + "/cushion " + args + " 2>&1", out);
}

std::string saved(const std::string& tag, const std::function<void(Model&)>& edit) {
    auto m = load_model_file(stories_bin());
    edit(*m);
    const std::string dir = temp_dir(tag) + "/model";
    save_hf_directory(*m, dir);
    return dir;
}

}  // namespace

TEST(NonFiniteCli, OverflowIsReportedWithLayerAndSite) {
    const std::string dir = saved("nonfinite-overflow", [](Model& m) {
        m.weights.layers[2].w_gate = m.weights.layers[2].w_gate * 1e30;
        m.weights.layers[2].w_up = m.weights.layers[2].w_up * 1e30;
    });
    const std::string where = "from layer 2 on: first at down_in (the input of down_proj";
    std::string out;
    EXPECT_EQ(cli("ppl " + dir + " --text " + eval_text(), &out), 2) << out;
    EXPECT_TRUE(has(out, "perplexity: the activations are NaN or Inf " + where)) << out;
    EXPECT_TRUE(has(out, "every weight is finite: the values overflowed fp32")) << out;
    EXPECT_FALSE(has(out, "perplexity nan")) << out;
    EXPECT_EQ(cli("eval " + dir + " --text " + eval_text() + " --calib " + calib_text(), &out), 2) << out;
    EXPECT_TRUE(has(out, where)) << out;
    EXPECT_EQ(cli("probe " + dir + " --prompt 'Once upon a time'", &out), 2) << out;
    EXPECT_TRUE(has(out, "probe: the activations are NaN or Inf " + where)) << out;
    EXPECT_TRUE(has(out, "the prompt, token 0")) << out;
    EXPECT_EQ(cli("calibrate " + dir + " --calib " + calib_text() + " --candidates 3-10 --max-prefix 2 --sample-tokens 32 "
                  "--tune-epochs 0 --quiet --out " + temp_dir("nonfinite-out") + "/c.cushion",
                  &out),
              2)
        << out;
    EXPECT_TRUE(has(out, "greedy search: L_q of the start prefix and the sample is not finite: the activations are NaN "
                         "or Inf " + where))
        << out;
}

TEST(NonFiniteCli, NanWeightIsNamed) {
    const std::string dir = saved("nonfinite-nan", [](Model& m) { m.weights.layers[3].w_up[5][7] = std::nan(""); });
    std::string out;
    EXPECT_EQ(cli("ppl " + dir + " --text " + eval_text(), &out), 2) << out;
    // The load warns, and the error names the weight and where the activations first hold NaN.
    EXPECT_TRUE(has(out, "warning: " + dir + ": tensor model.layers.3.mlp.up_proj.weight (layer 3; 1 of 11008 values) "
                         "contains NaN or Inf"))
        << out;
    EXPECT_TRUE(has(out, "from layer 3 on: first at down_in")) << out;
    EXPECT_TRUE(has(out, "weights holding NaN or Inf: model.layers.3.mlp.up_proj.weight (layer 3; 1 of 11008 values)"))
        << out;
}
