// Exported packages (issue 6): round trip export -> load -> the same logits and perplexity as the simulated
// quantized model, hashes that catch a flipped byte, clear errors for another model or tool version, atomic
// writes (cancel leaves nothing), and the CLI (export, eval DIR, generate DIR, verify).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "base/atomic_file.h"
#include "cushion/cushion.h"
#include "base/error.h"
#include "package/open_target.h"
#include "model/perplexity.h"
#include "quant/quantized_model.h"
#include "package/quantized_package.h"
#include "formats/safetensors.h"
#include "base/sha256.h"
#include "test_support.h"
#include "tiny_models.h"

using namespace cushion;
using namespace cushion::test;
namespace fs = std::filesystem;

namespace {

using Docs = std::vector<std::vector<int32_t>>;
const Docs kDocs = {{1, 4, 5, 6, 7, 8, 3}, {1, 9, 3}, {1, 5, 5, 5, 10, 2, 4, 6, 8}, {1, 7, 7, 3, 4}};
const Docs kEval = {{1, 3, 4, 5, 9, 9, 2}, {1, 6, 8, 10, 4}, {1, 4, 4, 7, 3, 5, 6, 8, 9}};

TinySpec opt_spec() {
    TinySpec s;
    s.opt = true;
    s.kv_heads = 4;
    s.seed = 5;
    return s;
}

QuantConfig w8a8_static_sq() {
    QuantConfig q;
    q.wbits = 8;
    q.abits = 8;
    q.group = 8;
    q.act = ActGranularity::PerTensorStatic;
    q.smoothquant_alpha = 0.8;
    return q;
}

ExportOptions tiny_options(const QuantConfig& q) {
    ExportOptions eo;
    eo.config = q;
    eo.calib_docs = kDocs;
    eo.eval_docs = kEval;
    eo.tokenizer_path = stories_tok_model();  // tiny models have no tokenizer file of their own
    return eo;
}

// Documents as they run after a cushion: without their <bos>.
at::Tensor batch_without_bos(const Docs& docs, at::Tensor* valid) {
    Docs d = docs;
    for (auto& x : d) x.erase(x.begin());
    at::Tensor t;
    pad_batch(d, &t, valid);
    return t;
}

void flip_byte(const std::string& path, int64_t offset_from_end) {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(-offset_from_end, std::ios::end);
    char c = 0;
    f.read(&c, 1);
    c ^= 0x01;
    f.seekp(-offset_from_end, std::ios::end);
    f.write(&c, 1);
}

std::vector<std::string> entries(const std::string& dir) {
    std::vector<std::string> r;
    for (const auto& e : fs::directory_iterator(dir)) r.push_back(e.path().filename().string());
    return r;
}

// The package and the simulated model agree bit for bit: weights, static ranges, logits, perplexity.
void expect_round_trip(const Model& m, const QuantConfig& q, const std::vector<int32_t>& prefix) {
    SCOPED_TRACE(q.describe() + (m.config.arch == Arch::OPT ? " opt" : " llama"));
    const Cushion c = make_cushion(m, prefix);
    const std::string dir = temp_dir("export-rt") + "/pkg";
    ExportReport rep = write_package(m, c, dir, tiny_options(q));
    ASSERT_TRUE(is_package_directory(dir));
    auto pkg = load_package(dir);
    EXPECT_EQ(pkg->model->fingerprint(), m.fingerprint());
    EXPECT_EQ(pkg->config.describe(), q.describe());

    QuantizeOptions qo;
    qo.prefix = &c.kv;
    QuantizedModel qm(m, q, kDocs, qo);
    // Weights: dequantized codes == fake-quantized weights, exactly; other tensors (SmoothQuant-folded norms) too.
    std::map<std::string, at::Tensor> sim;
    qm.model().weights.for_each(qm.model().config, [&](const std::string& n, const at::Tensor& t) { sim[n] = t; });
    size_t n_tensors = 0;
    pkg->model->weights.for_each(pkg->model->config, [&](const std::string& n, const at::Tensor& t) {
        ASSERT_TRUE(sim.count(n)) << n;
        EXPECT_TRUE(at::equal(t, sim[n])) << n;
        ++n_tensors;
    });
    EXPECT_EQ(n_tensors, sim.size());
    if (qm.ranges()) {
        ASSERT_TRUE(pkg->ranges);
        for (int l = 0; l < m.config.n_layers; ++l)
            for (int s = 0; s < kSiteCount; ++s)
                if (q.sites[s]) {
                    EXPECT_EQ(pkg->ranges->at(l, Site(s)).min, qm.ranges()->at(l, Site(s)).min);
                    EXPECT_EQ(pkg->ranges->at(l, Site(s)).max, qm.ranges()->at(l, Site(s)).max);
                }
    }
    // Logits after the cushion, with the quantizer.
    at::Tensor valid;
    at::Tensor toks = batch_without_bos(kEval, &valid);
    ForwardArgs fa;
    fa.valid = valid;
    at::Tensor a = pkg->forward(toks, fa);
    fa.prefix = &c.kv;
    at::Tensor b = qm.forward(toks, fa);
    EXPECT_TRUE(at::equal(a, b)) << (a - b).abs().max().item<double>();
    // Perplexity: the package, the simulated model and the figure recorded at export.
    PerplexityOptions po;
    po.prefix = &c.kv;
    po.prefix_last_logits = c.last_logits;
    const double sim_ppl = qm.perplexity(kEval, po).ppl;
    const double pkg_ppl = pkg->perplexity(kEval).ppl;
    EXPECT_NEAR(pkg_ppl, sim_ppl, 1e-6 * sim_ppl);
    EXPECT_NEAR(rep.ppl_quant_cushion, sim_ppl, 1e-6 * sim_ppl);
    auto info = nlohmann::json::parse(rep.info_json);
    EXPECT_NEAR(info["perplexity"]["quantized_cushion"].get<double>(), sim_ppl, 1e-9 * sim_ppl);
    EXPECT_EQ(info["model"]["fingerprint"], m.fingerprint());
    EXPECT_EQ(info["tool_version"], CUSHION_VERSION);
    for (const char* f : {"model.safetensors", "cushion.safetensors", "config.json", "tokenizer.model"})
        EXPECT_EQ(info["files"][f], sha256_file(dir + "/" + f)) << f;
    // Integer storage: int8 codes, or 4-bit packed at half the bytes.
    SafetensorsFile st(dir + "/model.safetensors");
    const std::string w0 = m.config.arch == Arch::OPT ? "model.decoder.layers.0.fc1.weight" : "model.layers.0.mlp.up_proj.weight";
    if (q.wbits == 8) {
        EXPECT_EQ(st.get(w0).scalar_type(), at::kChar);
    } else if (q.wbits == 4) {
        EXPECT_FALSE(st.contains(w0));
        EXPECT_EQ(st.get(w0 + "_packed").scalar_type(), at::kByte);
        EXPECT_EQ(st.shape(w0 + "_packed")[1], m.config.dim / 2);
    }
    EXPECT_EQ(st.contains("model.layers.0.act.attn_in.input_scale"), q.acts_on() && q.act == ActGranularity::PerTensorStatic);
    EXPECT_LT(rep.package_weight_bytes, rep.fp32_weight_bytes + 4096);
}

}  // namespace

// ------------------------------------------------------------------------------------ round trips

TEST(Export, RoundTripLlamaW8A8StaticSmoothQuant) {
    auto [m, n] = make_tiny(TinySpec{});
    expect_round_trip(*m, w8a8_static_sq(), {1, 5});
}

TEST(Export, RoundTripOptW4A8StaticWithKvQuant) {
    auto [m, n] = make_tiny(opt_spec());
    QuantConfig q = w8a8_static_sq();
    q.wbits = 4;
    q.kv_bits = 8;
    q.smoothquant_alpha = -1;
    expect_round_trip(*m, q, {1});
}

TEST(Export, RoundTripDynamicGranularitiesAndPerChannel) {
    auto [m, n] = make_tiny(TinySpec{});
    QuantConfig q = w8a8_static_sq();
    q.act = ActGranularity::PerToken;
    q.wbits = 4;
    q.group = 0;
    expect_round_trip(*m, q, {1, 7});
    q.act = ActGranularity::PerTensorDynamic;
    q.smoothquant_alpha = -1;
    q.wbits = 8;
    q.sites = parse_sites("o_in,down_in");
    expect_round_trip(*m, q, {1});
}

TEST(Export, LoadModelOnAPackageGivesItsWeightsWithAWarning) {
    auto [m, n] = make_tiny(TinySpec{});
    const std::string dir = temp_dir("export-lm") + "/pkg";
    write_package(*m, make_cushion(*m, {1}), dir, tiny_options(w8a8_static_sq()));
    auto lm = load_model(dir);
    auto pkg = load_package(dir);
    EXPECT_EQ(lm->fingerprint(), m->fingerprint());
    EXPECT_TRUE(at::equal(lm->weights.layers[1].wq, pkg->model->weights.layers[1].wq));
    ASSERT_FALSE(lm->warnings.empty());
    EXPECT_NE(lm->warnings.back().find("quantized package"), std::string::npos);
}

// ------------------------------------------------------------------------------------ integrity

// A weight scale that is NaN (hashes made to match, as a tool that rewrote the file would) is refused on load with
// the tensor named; it evaluated to perplexity "nan", and --kernels int8 failed with libtorch's own words.
TEST(Export, NonFiniteWeightScaleIsRefused) {
    auto [m, n] = make_tiny(TinySpec{});
    const std::string dir = temp_dir("export-nan-scale") + "/pkg";
    write_package(*m, make_cushion(*m, {1}), dir, tiny_options(w8a8_static_sq()));
    std::string victim;
    {
        SafetensorsFile f(dir + "/model.safetensors");
        std::vector<std::pair<std::string, at::Tensor>> ts;
        for (const auto& name : f.names()) {
            at::Tensor t = f.get(name).clone();
            if (victim.empty() && name.size() > 6 && name.compare(name.size() - 6, 6, "_scale") == 0 &&
                name.find("input") == std::string::npos) {
                t.view(-1)[0] = NAN;
                victim = name;
            }
            ts.push_back({name, t});
        }
        ASSERT_FALSE(victim.empty());
        save_safetensors(dir + "/model.safetensors.new", ts, f.metadata());
    }
    fs::rename(dir + "/model.safetensors.new", dir + "/model.safetensors");
    auto j = nlohmann::json::parse(read_text_file(dir + "/quantization.json"));
    j["files"]["model.safetensors"] = sha256_file(dir + "/model.safetensors");
    j.erase("self_sha256");
    j["self_sha256"] = sha256_hex(j.dump(2) + "\n");
    write_text_atomically(dir + "/quantization.json", j.dump(2));
    const std::string e = error_of([&] { load_package(dir); });
    EXPECT_NE(e.find(victim + " contains NaN or Inf"), std::string::npos) << e;
}

TEST(Export, FlippedByteIsCaughtNamingTheFile) {
    auto [m, n] = make_tiny(TinySpec{});
    const std::string dir = temp_dir("export-flip") + "/pkg";
    write_package(*m, make_cushion(*m, {1}), dir, tiny_options(w8a8_static_sq()));
    VerifyOptions vo;
    VerifyReport ok = verify_package(dir, vo);
    EXPECT_TRUE(ok.ok) << (ok.problems.empty() ? "" : ok.problems[0]);
    for (const char* file : {"model.safetensors", "cushion.safetensors", "config.json"}) {
        const std::string copy = temp_dir("export-flip-copy") + "/pkg";
        fs::copy(dir, copy, fs::copy_options::recursive);
        flip_byte(copy + "/" + file, 3);
        VerifyReport r = verify_package(copy, vo);
        EXPECT_FALSE(r.ok) << file;
        ASSERT_FALSE(r.problems.empty());
        EXPECT_NE(r.problems[0].find(file), std::string::npos) << r.problems[0];
        const std::string e = error_of([&] { load_package(copy); });
        EXPECT_NE(e.find(file), std::string::npos) << e;
        EXPECT_NE(e.find("sha256"), std::string::npos) << e;
    }
    // A missing file, too.
    const std::string copy = temp_dir("export-missing") + "/pkg";
    fs::copy(dir, copy, fs::copy_options::recursive);
    fs::remove(copy + "/tokenizer.model");
    EXPECT_NE(error_of([&] { load_package(copy); }).find("tokenizer.model"), std::string::npos);
}

// quantization.json is covered by the package's integrity check (its self_sha256): an edit of a setting that the
// other files' hashes cannot see is refused by load and reported by verify.
TEST(Export, EditedQuantizationJsonIsDetected) {
    auto [m, n] = make_tiny(TinySpec{});
    const std::string dir = temp_dir("export-edit") + "/pkg";
    write_package(*m, make_cushion(*m, {1}), dir, tiny_options(w8a8_static_sq()));
    EXPECT_TRUE(verify_package(dir).ok);
    const std::string original = read_text_file(dir + "/quantization.json");
    int edits = 0;
    for (const auto& edit : std::vector<std::function<void(nlohmann::json&)>>{
             [](nlohmann::json& j) { j["quantization"]["group"] = 8; },
             [](nlohmann::json& j) { j["quantization"]["wbits"] = 8.5; },
             [](nlohmann::json& j) { j["quantization"]["smoothquant_alpha"] = 0.1; },
             [](nlohmann::json& j) { j["cushion"]["prefix_ids"] = {1, 4}; },
             [](nlohmann::json& j) { j.erase("self_sha256"); }}) {
        auto j = nlohmann::json::parse(original);
        edit(j);
        write_text_atomically(dir + "/quantization.json", j.dump(2));
        const std::string e = error_of([&] { load_package(dir); });
        EXPECT_NE(e.find("self_sha256"), std::string::npos) << "edit " << edits << ": " << e;
        const VerifyReport r = verify_package(dir);
        EXPECT_FALSE(r.ok) << "edit " << edits;
        ++edits;
    }
    write_text_atomically(dir + "/quantization.json", original);
    EXPECT_TRUE(verify_package(dir).ok);
}

TEST(Export, OtherModelOrToolVersionGivesAClearError) {
    auto [m, n] = make_tiny(TinySpec{});
    TinySpec other_spec;
    other_spec.seed = 2;
    auto [other, n2] = make_tiny(other_spec);
    const std::string dir = temp_dir("export-other") + "/pkg";
    write_package(*m, make_cushion(*m, {1}), dir, tiny_options(w8a8_static_sq()));
    auto edit_info = [&](const std::string& d, const std::function<void(nlohmann::json&)>& fn) {
        auto j = nlohmann::json::parse(read_text_file(d + "/quantization.json"));
        fn(j);
        j.erase("self_sha256");  // re-sealed, so that only the edit under test remains
        j["self_sha256"] = sha256_hex(j.dump(2) + "\n");
        write_text_atomically(d + "/quantization.json", j.dump(2));
    };
    // The cushion of another model, with its hash updated so only the model mismatch remains.
    {
        const std::string copy = temp_dir("export-other-c") + "/pkg";
        fs::copy(dir, copy, fs::copy_options::recursive);
        save_cushion(make_cushion(*other, {1}), copy + "/cushion.safetensors");
        edit_info(copy, [&](nlohmann::json& j) { j["files"]["cushion.safetensors"] = sha256_file(copy + "/cushion.safetensors"); });
        const std::string e = error_of([&] { load_package(copy); });
        EXPECT_NE(e.find("different models"), std::string::npos) << e;
        EXPECT_NE(e.find(other->fingerprint()), std::string::npos) << e;
        EXPECT_FALSE(verify_package(copy).ok);
    }
    // Verifying against the wrong source model.
    {
        VerifyOptions vo;
        vo.source = other.get();
        VerifyReport r = verify_package(dir, vo);
        EXPECT_FALSE(r.ok);
        ASSERT_FALSE(r.problems.empty());
        EXPECT_NE(r.problems[0].find("exported from model " + m->fingerprint()), std::string::npos) << r.problems[0];
        vo.source = m.get();
        EXPECT_TRUE(verify_package(dir, vo).ok);
    }
    // Another tool version / format version.
    {
        const std::string copy = temp_dir("export-other-v") + "/pkg";
        fs::copy(dir, copy, fs::copy_options::recursive);
        edit_info(copy, [](nlohmann::json& j) { j["tool_version"] = "0.0.9"; });
        const std::string e = error_of([&] { load_package(copy); });
        EXPECT_NE(e.find("written by cushion 0.0.9"), std::string::npos) << e;
        EXPECT_NE(e.find(std::string("this is cushion ") + CUSHION_VERSION), std::string::npos) << e;
        LoadPackageOptions lo;
        lo.allow_other_tool_version = true;
        EXPECT_NO_THROW(load_package(copy, lo));
        edit_info(copy, [](nlohmann::json& j) { j["format_version"] = 7; });
        EXPECT_NE(error_of([&] { load_package(copy, lo); }).find("format version 7 is not supported"), std::string::npos);
    }
    // Not a package at all.
    EXPECT_NE(error_of([&] { load_package(temp_dir("export-empty")); }).find("not an exported package"), std::string::npos);
    // The cushion must fit the model being exported.
    EXPECT_NE(error_of([&] { write_package(*m, make_cushion(*other, {1}), dir + "2", tiny_options(w8a8_static_sq())); })
                  .find("another model"),
              std::string::npos);
}

// ------------------------------------------------------------------------------------ atomicity

TEST(Export, CancelAtAnyStageLeavesNothing) {
    auto [m, n] = make_tiny(TinySpec{});
    const Cushion c = make_cushion(*m, {1});
    const std::string parent = temp_dir("export-cancel");
    // Count the progress calls of a full export, then cancel at each one in turn.
    int calls = 0;
    std::vector<std::string> stages;
    {
        ExportOptions eo = tiny_options(w8a8_static_sq());
        eo.progress = [&](double, const std::string& what) {
            ++calls;
            stages.push_back(what);
            return true;
        };
        write_package(*m, c, parent + "/full", eo);
    }
    ASSERT_GT(calls, 5);
    bool cancelled_while_writing = false;
    for (int k = 0; k < calls - 1; ++k) {  // the last call comes after the rename
        ExportOptions eo = tiny_options(w8a8_static_sq());
        int i = 0;
        eo.progress = [&](double, const std::string&) { return i++ < k; };
        EXPECT_THROW(write_package(*m, c, parent + "/pkg", eo), Cancelled) << stages[k];
        if (stages[k].rfind("wrote", 0) == 0) cancelled_while_writing = true;
        EXPECT_EQ(entries(parent), std::vector<std::string>{"full"}) << "cancelled at '" << stages[k] << "'";
    }
    EXPECT_TRUE(cancelled_while_writing);
    // An existing target needs overwrite; a cancelled overwrite keeps the old package intact.
    EXPECT_NE(error_of([&] { write_package(*m, c, parent + "/full", tiny_options(w8a8_static_sq())); }).find("--force"),
              std::string::npos);
    const std::string before = read_text_file(parent + "/full/quantization.json");
    ExportOptions eo = tiny_options(w8a8_static_sq());
    eo.overwrite = true;
    eo.progress = [&](double, const std::string& what) { return what.rfind("wrote cushion", 0) != 0; };
    EXPECT_THROW(write_package(*m, c, parent + "/full", eo), Cancelled);
    EXPECT_EQ(read_text_file(parent + "/full/quantization.json"), before);
    EXPECT_EQ(entries(parent), std::vector<std::string>{"full"});
    eo.progress = nullptr;
    eo.config.wbits = 4;
    write_package(*m, c, parent + "/full", eo);
    EXPECT_EQ(load_package(parent + "/full")->config.wbits, 4);
    EXPECT_EQ(entries(parent), std::vector<std::string>{"full"});
}

TEST(Export, UnwritableTargetFailsCleanly) {
    auto [m, n] = make_tiny(TinySpec{});
    const std::string parent = temp_dir("export-ro");
    fs::permissions(parent, fs::perms::owner_read | fs::perms::owner_exec);
    const std::string e = error_of([&] { write_package(*m, make_cushion(*m, {1}), parent + "/pkg", tiny_options(w8a8_static_sq())); });
    fs::permissions(parent, fs::perms::owner_all);
    if (e == "<no error>") GTEST_SKIP() << "running as root: permissions are not enforced";
    EXPECT_NE(e.find(parent), std::string::npos) << e;
    EXPECT_TRUE(entries(parent).empty());
}

// A full disk in the middle of `cushion export`: the CLI runs as a child with a file-size limit (RLIMIT_FSIZE via
// `ulimit -f`, SIGXFSZ ignored so writes fail with EFBIG, "File too large", as they would with ENOSPC). The limit
// (100 blocks of 512 or 1024 bytes) lets the small files through and stops model.safetensors (~0.5 MiB).
TEST(Export, FullDiskDuringCliExportLeavesNothingAndKeepsTheOldPackage) {
    const std::string dir = temp_dir("export-full-disk");
    const std::string B = bin_dir() + "/cushion";
    auto m = load_model(stories_bin());
    save_cushion(make_cushion(*m, {m->tokenizer->bos_id()}), dir + "/bos.cushion");
    {  // two short documents keep the calibration and the export-time perplexities quick
        const auto docs = read_documents(calib_text());
        std::ofstream f(dir + "/calib.txt");
        for (int i = 0; i < 2; ++i) f << docs.at(i).substr(0, 300) << "\n";
    }
    fs::create_directories(dir + "/out");
    const std::string args = " export " + stories_bin() + " --cushion " + dir + "/bos.cushion --calib " + dir +
                             "/calib.txt --quiet --out " + dir + "/out/";
    auto limited = [&](const std::string& cmd) { return "trap '' XFSZ; ulimit -f 100; exec " + cmd + " 2>&1"; };
    std::string out;
    ASSERT_EQ(run_command(B + args + "pkg", &out), 0) << out;
    const std::string info_before = read_text_file(dir + "/out/pkg/quantization.json");
    const std::string model_sha = sha256_file(dir + "/out/pkg/model.safetensors");

    // A new target: fails, names the file and the cause, leaves no directory and no temporary behind.
    out.clear();
    const int rc = run_command(limited(B + args + "new"), &out);
    EXPECT_EQ(rc, 2) << out;
    EXPECT_NE(out.find(dir + "/out/new: not written (nothing was left behind)"), std::string::npos) << out;
    EXPECT_NE(out.find("model.safetensors"), std::string::npos) << out;
    EXPECT_NE(out.find("File too large"), std::string::npos) << out;
    EXPECT_EQ(entries(dir + "/out"), std::vector<std::string>{"pkg"});

    // Overwriting an existing package with --force: fails the same way, the old package stays whole and valid.
    out.clear();
    EXPECT_EQ(run_command(limited(B + args + "pkg --force"), &out), 2) << out;
    EXPECT_NE(out.find("not written (the existing directory is unchanged)"), std::string::npos) << out;
    EXPECT_NE(out.find("File too large"), std::string::npos) << out;
    EXPECT_EQ(entries(dir + "/out"), std::vector<std::string>{"pkg"});
    EXPECT_EQ(read_text_file(dir + "/out/pkg/quantization.json"), info_before);
    EXPECT_EQ(sha256_file(dir + "/out/pkg/model.safetensors"), model_sha);
    out.clear();
    EXPECT_EQ(run_command(B + " verify " + dir + "/out/pkg --hashes-only --quiet", &out), 0) << out;
}

// ------------------------------------------------------------------------------------ stories260K

TEST(SlowExportStories, PackagePerplexityEqualsSimulatedEval) {
    auto m = load_model(stories_bin());
    const Cushion c = make_cushion(*m, {m->tokenizer->bos_id()});
    const int64_t max_len = m->config.max_seq_len - c.length() + 1;
    const Docs calib = tokenize_documents(*m, read_documents(calib_text()), max_len);
    const Docs eval = tokenize_documents(*m, read_documents(eval_text()), max_len);
    ExportOptions eo;
    eo.config = w8a8_static_sq();
    eo.config.group = 128;
    eo.calib_docs = calib;
    eo.calib_file = calib_text();
    eo.eval_docs = eval;
    eo.eval_file = eval_text();
    const std::string dir = temp_dir("export-stories") + "/pkg";
    ExportReport rep = write_package(*m, c, dir, eo);
    EXPECT_TRUE(fs::exists(dir + "/tokenizer.model"));
    auto pkg = load_package(dir);
    const double pkg_ppl = pkg->perplexity(tokenize_documents(*pkg->model, read_documents(eval_text()), pkg->max_doc_tokens())).ppl;
    QuantizeOptions qo;
    qo.prefix = &c.kv;
    QuantizedModel qm(*m, eo.config, calib, qo);
    PerplexityOptions po;
    po.prefix = &c.kv;
    po.prefix_last_logits = c.last_logits;
    const double sim = qm.perplexity(eval, po).ppl;
    EXPECT_NEAR(pkg_ppl, sim, 1e-4 * sim);
    EXPECT_NEAR(rep.ppl_quant_cushion, sim, 1e-9 * sim);
    EXPECT_GT(rep.ppl_fp, 1.0);
    EXPECT_LT(rep.package_weight_bytes, rep.fp32_weight_bytes / 2);  // int8 blocks; the embedding stays float32
    VerifyReport vr = verify_package(dir);
    EXPECT_TRUE(vr.ok) << (vr.problems.empty() ? "" : vr.problems[0]);
    EXPECT_TRUE(vr.remeasured);
    EXPECT_NEAR(vr.ppl_measured, sim, 1e-4 * sim);
    std::printf("stories260K %s: FP %.4f, quantized %.4f, with <bos> cushion %.4f, package %.4f\n",
                eo.config.describe().c_str(), rep.ppl_fp, rep.ppl_quant, rep.ppl_quant_cushion, pkg_ppl);
}

TEST(SlowExportCli, ExportEvalGenerateVerify) {
    const std::string dir = temp_dir("export-cli");
    const std::string B = bin_dir() + "/cushion";
    auto m = load_model(stories_bin());
    save_cushion(make_cushion(*m, {m->tokenizer->bos_id()}), dir + "/bos.cushion");
    const std::string q = " --wbits 8 --abits 8 --act per-tensor-static --smoothquant 0.8";
    std::string out;
    ASSERT_EQ(run_command(B + " export " + stories_bin() + " --cushion " + dir + "/bos.cushion --calib " + calib_text() +
                              " --text " + eval_text() + " --out " + dir + "/pkg" + q + " --json --quiet",
                          &out),
              0)
        << out;
    const auto exported = nlohmann::json::parse(out);
    // Exists: refused without --force.
    out.clear();
    EXPECT_EQ(run_command(B + " export " + stories_bin() + " --cushion " + dir + "/bos.cushion --calib " + calib_text() +
                              " --out " + dir + "/pkg --quiet 2>&1", &out), 2);
    EXPECT_NE(out.find("--force"), std::string::npos) << out;
    // eval on the package == eval of the simulated model with the same settings and cushion.
    out.clear();
    ASSERT_EQ(run_command(B + " eval " + stories_bin() + " --text " + eval_text() + " --calib " + calib_text() + q +
                              " --cushion " + dir + "/bos.cushion --json --quiet",
                          &out),
              0)
        << out;
    const double sim = nlohmann::json::parse(out)["rows"][1]["ppl_cushion"].get<double>();
    const double fp = nlohmann::json::parse(out)["rows"][0]["ppl"].get<double>();
    out.clear();
    ASSERT_EQ(run_command(B + " eval " + dir + "/pkg --text " + eval_text() + " --json --quiet", &out), 0) << out;
    const double pkg = nlohmann::json::parse(out)["ppl_cushion"].get<double>();
    EXPECT_NEAR(pkg, sim, 1e-4 * sim);
    EXPECT_NEAR(exported["perplexity"]["quantized_cushion"].get<double>(), sim, 1e-4 * sim);
    EXPECT_NEAR(exported["perplexity"]["fp"].get<double>(), fp, 1e-6 * fp);
    // ppl on the package runs with its quantizer and cushion too.
    out.clear();
    ASSERT_EQ(run_command(B + " ppl " + dir + "/pkg --text " + eval_text() + " --json --quiet", &out), 0) << out;
    EXPECT_NEAR(nlohmann::json::parse(out)["ppl"].get<double>(), sim, 1e-4 * sim);
    // Quantization options make no sense on a package.
    out.clear();
    EXPECT_EQ(run_command(B + " eval " + dir + "/pkg --text " + eval_text() + " --wbits 4 2>&1", &out), 2);
    EXPECT_NE(out.find("carries its own quantization"), std::string::npos) << out;
    // generate runs the package.
    out.clear();
    ASSERT_EQ(run_command(B + " generate " + dir + "/pkg --prompt 'Once upon a time' --max-tokens 20 --json --quiet", &out), 0) << out;
    EXPECT_FALSE(nlohmann::json::parse(out)["tokens"].empty());
    // verify: OK, then a flipped byte fails naming the file.
    out.clear();
    EXPECT_EQ(run_command(B + " verify " + dir + "/pkg --quiet", &out), 0) << out;
    EXPECT_NE(out.find("package OK"), std::string::npos) << out;
    flip_byte(dir + "/pkg/model.safetensors", 100);
    out.clear();
    EXPECT_EQ(run_command(B + " verify " + dir + "/pkg --quiet", &out), 1) << out;
    EXPECT_NE(out.find("model.safetensors"), std::string::npos) << out;
    out.clear();
    EXPECT_EQ(run_command(B + " eval " + dir + "/pkg --text " + eval_text() + " --quiet 2>&1", &out), 2) << out;
    EXPECT_NE(out.find("sha256"), std::string::npos) << out;
}
