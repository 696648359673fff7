// `--kernels int8` (issue 6, "really int8"): exported W8A8 per-tensor-static packages run their block linears as
// real uint8 x int8 -> int32 products in libtorch's quantized engine. Checked here: each linear equals the exact
// integer product on the package's own codes; whole-model logits and perplexity agree with the simulated float32
// path within float rounding (argued below); unsupported packages are refused, or fall back per linear with a note.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <functional>

#include "cushion/cushion.h"
#include "base/error.h"
#include "package/int8_kernels.h"
#include "package/open_target.h"
#include "model/perplexity.h"
#include "package/quantized_package.h"
#include "test_support.h"
#include "tiny_models.h"

using namespace cushion;
using namespace cushion::test;

namespace {

using Docs = std::vector<std::vector<int32_t>>;
const Docs kDocs = {{1, 4, 5, 6, 7, 8, 3}, {1, 9, 3}, {1, 5, 5, 5, 10, 2, 4, 6, 8}, {1, 7, 7, 3, 4}};
const Docs kEval = {{1, 3, 4, 5, 9, 9, 2}, {1, 6, 8, 10, 4}, {1, 4, 4, 7, 3, 5, 6, 8, 9}};

QuantConfig w8a8(int64_t group = 0, ActGranularity act = ActGranularity::PerTensorStatic, double sq = -1) {
    QuantConfig q;
    q.wbits = 8;
    q.abits = 8;
    q.group = group;
    q.act = act;
    q.smoothquant_alpha = sq;
    return q;
}

std::string export_tiny(const Model& m, const QuantConfig& q, const std::string& tag) {
    ExportOptions eo;
    eo.config = q;
    eo.calib_docs = kDocs;
    eo.tokenizer_path = stories_tok_model();
    const std::string dir = temp_dir(tag) + "/pkg";
    write_package(m, make_cushion(m, {1}), dir, eo);
    return dir;
}

bool have_engine() { return !int8_engines_available().empty(); }

// Every block linear: the kernel's output on random on-grid inputs equals s_x * s_w * sum (q_x - z_x) q_w computed
// in double, to float32 rounding of the output (the integer sum itself is exact).
void expect_exact_linears(const TinySpec& spec, const QuantConfig& q, Int8Path path = Int8Path::Auto) {
    auto [m, n] = make_tiny(spec);
    auto pkg = load_package(export_tiny(*m, q, "int8-exact"));
    const Int8KernelInfo info = use_int8_kernels(*pkg, path);
    if (path == Int8Path::IntMm) EXPECT_EQ(info.engine, "int_mm");
    EXPECT_EQ(info.fallback_linears, 0);
    EXPECT_GT(info.int8_linears, 0);
    at::manual_seed(3);
    int checked = 0;
    for (int l = 0; l < (int)pkg->model->config.n_layers; ++l)
        for (int i = 0; i < kLinearCount; ++i) {
            const QuantizedWeight& qw = pkg->weight_codes[l][i];
            if (!qw.q.defined()) continue;
            const LinearId id = static_cast<LinearId>(i);
            const Site site = i <= 2 ? Site::AttnIn : i == 3 ? Site::OIn : i <= 5 ? Site::MlpIn : Site::DownIn;
            const SiteRange& r = pkg->ranges->at(l, site);
            const ActQuantParams p = act_params(r.min, r.max, 8, at::zeros({}, at::kFloat));
            const double s = p.scale.item<double>();
            const int64_t z = p.zero.item<int64_t>();
            at::Tensor codes = at::randint(0, 256, {2, 5, qw.q.size(1)}, at::kLong).to(at::kDouble);
            at::Tensor x = ((codes - double(z)) * s).to(at::kFloat);
            const LayerWeights& L = pkg->model->weights.layers[l];
            const at::Tensor* w[] = {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down};
            const at::Tensor* b[] = {&L.bq, &L.bk, &L.bv, &L.bo, nullptr, &L.b_up, &L.b_down};
            const at::Tensor bias = b[i] && b[i]->defined() ? *b[i] : at::Tensor();
            at::Tensor got = pkg->kernels->linear(l, id, x, *w[i], bias).to(at::kDouble);
            at::Tensor ref = at::matmul(codes - double(z), (qw.q.to(at::kDouble) * qw.scale.to(at::kDouble)).t()) * s;
            if (bias.defined()) ref = ref + bias.to(at::kDouble);
            const double err = ((got - ref).abs().max() / ref.abs().max()).item<double>();
            EXPECT_LT(err, 1e-6) << "block " << l << " " << linear_name(id);
            ++checked;
        }
    EXPECT_EQ(checked, info.int8_linears);
}

}  // namespace

TEST(Int8Kernels, EachLinearIsTheExactIntegerProduct) {
    if (!have_engine()) GTEST_SKIP() << "this libtorch has no quantized engine";
    expect_exact_linears(TinySpec{}, w8a8());
    TinySpec opt;  // OPT: biases on every linear, no gate
    opt.opt = true;
    opt.kv_heads = 4;
    opt.seed = 5;
    expect_exact_linears(opt, w8a8(0, ActGranularity::PerTensorStatic, 0.8));
}

// The at::_int_mm path (what CUDA runs), here on the CPU: the same exactness, with the int8 shift (q_x - 128) folded
// back per channel and zero padding to _int_mm's shape rules (the tiny models' 16/24 are not all multiples of 8 x 3).
TEST(Int8Kernels, IntMmPathEachLinearIsTheExactIntegerProduct) {
    expect_exact_linears(TinySpec{}, w8a8(), Int8Path::IntMm);
    TinySpec opt;
    opt.opt = true;
    opt.kv_heads = 4;
    opt.seed = 5;
    expect_exact_linears(opt, w8a8(0, ActGranularity::PerTensorStatic, 0.8), Int8Path::IntMm);
}

// Whole model: the simulated path sums s_x (q_x - z_x) * s_w q_w in float32, the kernel sums the integers exactly
// and scales once, so each linear's outputs differ by float32 rounding (~1e-7 relative). The next static quantizer
// rounds those outputs again: a value within ~1e-7 of a rounding boundary can land one code step apart, which
// moves the following products by one step s_x times a weight row. On these tiny models (dims 16/24, 2 blocks)
// that keeps the logits within 1e-3 of the largest logit (observed: see the printed figure); without a flipped
// code they agree to ~1e-6. Perplexity likewise within 1e-3 relative.
TEST(Int8Kernels, LogitsAndPerplexityAgreeWithSimulated) {
    if (!have_engine()) GTEST_SKIP() << "this libtorch has no quantized engine";
    for (Int8Path path : {Int8Path::Auto, Int8Path::IntMm})
    for (bool opt : {false, true}) {
        TinySpec spec;
        spec.opt = opt;
        spec.seed = opt ? 5 : 1;
        if (opt) spec.kv_heads = 4;
        auto [m, n] = make_tiny(spec);
        const std::string dir = export_tiny(*m, w8a8(0, ActGranularity::PerTensorStatic, opt ? 0.8 : -1), "int8-logits");
        auto sim = load_package(dir);
        auto i8 = load_package(dir);
        use_int8_kernels(*i8, path);
        Docs d = kEval;
        for (auto& x : d) x.erase(x.begin());  // after the cushion: no <bos>
        at::Tensor tokens, valid;
        pad_batch(d, &tokens, &valid);
        ForwardArgs fa;
        fa.valid = valid;
        at::Tensor a = sim->forward(tokens, fa), b = i8->forward(tokens, fa);
        const at::Tensor real = valid.unsqueeze(-1).expand_as(a);
        const double diff = (a - b).abs().masked_select(real).max().item<double>();
        const double scale = a.abs().masked_select(real).max().item<double>();
        ASSERT_EQ(m->config.arch == Arch::OPT, opt);
        std::printf("%s: max |logit int8 - simulated| = %.3g (largest logit %.6g)\n", opt ? "opt" : "llama", diff, scale);
        EXPECT_LT(diff, 1e-3 * scale);
        const double p_sim = sim->perplexity(kEval).ppl, p_i8 = i8->perplexity(kEval).ppl;
        std::printf("%s: perplexity int8 %.8f, simulated %.8f\n", opt ? "opt" : "llama", p_i8, p_sim);
        EXPECT_NEAR(p_i8, p_sim, 1e-3 * p_sim);
        // A package without kernels set is untouched by another's: the simulated one still has none.
        EXPECT_EQ(sim->kernels, nullptr);
    }
}

TEST(Int8Kernels, UnsupportedPackagesAreRefusedOrFallBackWithANote) {
    if (!have_engine()) GTEST_SKIP() << "this libtorch has no quantized engine";
    auto [m, n] = make_tiny(TinySpec{});
    // 4-bit weights: no int4 kernel.
    QuantConfig q4 = w8a8();
    q4.wbits = 4;
    auto p4 = load_package(export_tiny(*m, q4, "int8-w4"));
    std::string e = error_of([&] { use_int8_kernels(*p4); });
    EXPECT_NE(e.find("needs 8-bit weights"), std::string::npos) << e;
    EXPECT_NE(e.find("--kernels simulated"), std::string::npos) << e;
    EXPECT_EQ(p4->kernels, nullptr);
    // Dynamic activations: not the static case this mode is for.
    auto pt = load_package(export_tiny(*m, w8a8(0, ActGranularity::PerToken), "int8-pt"));
    e = error_of([&] { use_int8_kernels(*pt); });
    EXPECT_NE(e.find("per-tensor-static"), std::string::npos) << e;
    // Another dtype.
    auto pb = load_package(export_tiny(*m, w8a8(), "int8-bf16"));
    pb->to(c10::Device("cpu"), at::kBFloat16);
    e = error_of([&] { use_int8_kernels(*pb); });
    EXPECT_NE(e.find("fp32"), std::string::npos) << e;
    // Group 12 divides down's 24 inputs (group-wise scales) but not the others' 16 (per-channel): down falls back.
    auto pg = load_package(export_tiny(*m, w8a8(12), "int8-group"));
    const Int8KernelInfo info = use_int8_kernels(*pg);
    EXPECT_EQ(info.fallback_linears, 2);  // down in each of 2 blocks
    EXPECT_EQ(info.int8_linears, 2 * 6);
    ASSERT_EQ(info.notes.size(), 1u);
    EXPECT_NE(info.notes[0].find("group-wise"), std::string::npos) << info.notes[0];
    // The mixed package still runs and matches its simulated twin.
    auto pgs = load_package(pg->dir);
    EXPECT_NEAR(pg->perplexity(kEval).ppl, pgs->perplexity(kEval).ppl, 1e-3 * pgs->perplexity(kEval).ppl);
    // Every linear grouped: nothing left for the kernel.
    auto pall = load_package(export_tiny(*m, w8a8(8), "int8-allgroup"));
    e = error_of([&] { use_int8_kernels(*pall); });
    EXPECT_NE(e.find("no block linear can use the int8 kernel"), std::string::npos) << e;
}

TEST(Int8Kernels, CliRefusesKernelsOnAPlainModelAndAnUnknownName) {
    const std::string B = bin_dir() + "/cushion";
    std::string out;
    EXPECT_EQ(run_command(B + " ppl " + stories_bin() + " --text " + eval_text() + " --kernels int8 2>&1", &out), 2) << out;
    EXPECT_NE(out.find("exported package"), std::string::npos) << out;
    out.clear();
    EXPECT_EQ(run_command(B + " generate --prompt hi --kernels int4 2>&1", &out), 2) << out;
    EXPECT_NE(out.find("simulated or int8"), std::string::npos) << out;
}

// stories260K, W8A8 per-tensor-static per-channel with a <bos> cushion. The integer kernel's sums are exact, so its
// perplexity does not depend on the batching; the float32 simulated path's does (different GEMM blockings round
// differently and the static quantizers turn some of those differences into one-step code flips, which the
// following layers carry on). Per linear the kernel is closer to a float64 product on the same inputs than the
// float32 product is (measured once: 0.7-1.2e-7 vs 2.3-5.4e-7 relative); over the whole model the two paths differ
// by such flips, of the same order as the simulated path's own spread. Figures are printed for RESULTS.md.
TEST(SlowInt8Stories, PerplexityAgreesWithSimulatedAndIgnoresBatching) {
    if (!have_engine()) GTEST_SKIP() << "this libtorch has no quantized engine";
    auto m = load_model(stories_bin());
    const Cushion c = make_cushion(*m, {m->tokenizer->bos_id()});
    const int64_t max_len = m->config.max_seq_len - c.length() + 1;
    ExportOptions eo;
    eo.config = w8a8();
    eo.calib_docs = tokenize_documents(*m, read_documents(calib_text()), max_len);
    const std::string dir = temp_dir("int8-stories") + "/pkg";
    write_package(*m, c, dir, eo);
    auto sim = load_package(dir);
    const Docs eval = tokenize_documents(*sim->model, read_documents(eval_text()), sim->max_doc_tokens());
    auto i8 = load_package(dir);
    use_int8_kernels(*i8);
    PerplexityOptions small, large;
    small.max_batch_tokens = 512;
    large.max_batch_tokens = 8192;
    const double s512 = sim->perplexity(eval, small).ppl, s8k = sim->perplexity(eval, large).ppl;
    const double i512 = i8->perplexity(eval, small).ppl, i8k = i8->perplexity(eval, large).ppl;
    std::printf("stories260K W8A8 static: simulated fp32 %.6f (batches of 512 tokens) %.6f (8192); int8 kernels "
                "%.6f (512) %.6f (8192)\n", s512, s8k, i512, i8k);
    EXPECT_NEAR(i512, i8k, 1e-6 * i8k);  // exact integer sums: the batching does not matter
    EXPECT_NEAR(i8k, s8k, 3e-3 * s8k);
    EXPECT_NEAR(i8k, s512, 3e-3 * s512);
}
