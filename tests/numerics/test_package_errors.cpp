// Package and cushion tensors of the wrong shape or dtype, and scales that are not usable, are refused with the
// file, the tensor, and what it is against what it should be (issue "hardening"): before, a package of this kind
// failed in libtorch ("Dimension out of range", "a Tensor with 2 elements cannot be converted to Scalar") or, with
// --kernels int8, in the engine ("In ChooseQuantizationParams, min should be less than or equal to max").
// The file hashes are made to match, as a tool that rewrote the file would, so that the checks behind them run.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>

#include "base/atomic_file.h"
#include "base/sha256.h"
#include "cushion/cushion.h"
#include "formats/model_loader.h"
#include "formats/safetensors.h"
#include "package/int8_kernels.h"
#include "package/quantized_package.h"
#include "test_support.h"
#include "tiny_models.h"

using namespace cushion;
using namespace cushion::test;
namespace fs = std::filesystem;

namespace {

const std::vector<std::vector<int32_t>> kDocs = {{1, 5, 7, 3, 9, 4, 8, 6}, {1, 8, 6, 6, 10, 3, 4}, {1, 4, 4, 9, 5}};

bool has(const std::string& s, const std::string& needle) { return s.find(needle) != std::string::npos; }

// A W8A8 per-tensor-static package of a tiny model (dim 16, hidden 24, 2 layers), per-channel weight scales.
std::string tiny_package(const std::string& tag) {
    auto [m, n] = make_tiny(TinySpec{});
    const std::string dir = temp_dir(tag) + "/pkg";
    ExportOptions eo;
    eo.config.wbits = 8;
    eo.config.abits = 8;
    eo.config.group = 0;
    eo.config.act = ActGranularity::PerTensorStatic;
    eo.calib_docs = kDocs;
    eo.eval_docs = kDocs;
    eo.tokenizer_path = stories_tok_model();
    write_package(*m, make_cushion(*m, {1}), dir, eo);
    return dir;
}

// A copy of `dir` whose `file` (model.safetensors or cushion.safetensors) has its tensors rewritten by `edit`
// (which may replace one), the hashes in quantization.json updated to match.
std::string edited(const std::string& dir, const std::string& file,
                   const std::function<void(const std::string& name, at::Tensor& t)>& edit) {
    const std::string copy = temp_dir("pkg-edit") + "/pkg";
    fs::copy(dir, copy, fs::copy_options::recursive);
    const std::string path = copy + "/" + file;
    std::vector<std::pair<std::string, at::Tensor>> ts;
    std::map<std::string, std::string> meta;
    {
        SafetensorsFile f(path);
        meta = f.metadata();
        for (const auto& name : f.names()) {
            at::Tensor t = f.get(name).clone();
            edit(name, t);
            ts.push_back({name, t});
        }
    }
    save_safetensors(path, ts, meta);
    auto j = nlohmann::json::parse(read_text_file(copy + "/quantization.json"));
    j["files"][file] = sha256_file(path);
    j.erase("self_sha256");
    j["self_sha256"] = sha256_hex(j.dump(2) + "\n");
    write_text_atomically(copy + "/quantization.json", j.dump(2));
    return copy;
}

std::string load_error(const std::string& dir) { return error_of([&] { load_package(dir); }); }

}  // namespace

TEST(PackageErrors, WrongShapeOrDtypeNamesTheTensorAndBothShapes) {
    const std::string dir = tiny_package("pkg-errors");
    ASSERT_NO_THROW(load_package(dir));
    const std::string down = "model.layers.0.mlp.down_proj.weight", q = "model.layers.1.self_attn.q_proj.weight";
    struct Case {
        std::string what, tensor;
        std::function<void(at::Tensor&)> edit;
        std::string expect;
    };
    const std::vector<Case> cases = {
        {"codes transposed", down, [](at::Tensor& t) { t = t.t().contiguous(); },
         "model.safetensors: tensor " + down + " is int8 [24, 16], expected int8 [16, 24] (its weight codes, out x in)"},
        {"codes as float32", down, [](at::Tensor& t) { t = t.to(at::kFloat); },
         "tensor " + down + " is float32 [16, 24], expected int8 [16, 24]"},
        {"scale 1-D", q + "_scale", [](at::Tensor& t) { t = t.reshape({-1}).contiguous(); },
         "tensor " + q + "_scale is float32 [16], expected float32 [16, groups] with groups dividing 16"},
        {"scale of 0-D", q + "_scale", [](at::Tensor& t) { t = t.reshape({-1})[0].clone(); },
         "tensor " + q + "_scale is float32 [], expected float32 [16, groups]"},
        {"scale Inf", q + "_scale", [](at::Tensor& t) { t.view(-1)[3] = INFINITY; }, q + "_scale contains NaN or Inf"},
        {"scale 0", q + "_scale", [](at::Tensor& t) { t.view(-1)[3] = 0; }, q + "_scale holds a scale <= 0"},
        {"norm too short", "model.layers.0.input_layernorm.weight", [](at::Tensor& t) { t = t.narrow(0, 0, 15).contiguous(); },
         "tensor model.layers.0.input_layernorm.weight (layer 0 attention norm) has shape [15], expected [16]"},
        {"norm as int32", "model.norm.weight", [](at::Tensor& t) { t = t.to(at::kInt); },
         "tensor model.norm.weight is int32 [16], expected a floating-point type"},
        {"range of 2 values", "model.layers.1.act.down_in.input_min", [](at::Tensor& t) { t = at::cat({t.reshape({1}), t.reshape({1})}); },
         "tensor model.layers.1.act.down_in.input_min is float64 [2], expected one number (shape [] or [1])"},
    };
    for (const auto& c : cases) {
        bool found = false;
        const std::string copy = edited(dir, "model.safetensors", [&](const std::string& name, at::Tensor& t) {
            if (name == c.tensor) {
                c.edit(t);
                found = true;
            }
        });
        ASSERT_TRUE(found) << c.what << ": no tensor " << c.tensor;
        const std::string e = load_error(copy);
        EXPECT_TRUE(has(e, c.expect)) << c.what << ":\n  " << e << "\nexpected:\n  " << c.expect;
        EXPECT_TRUE(has(e, copy + "/model.safetensors")) << c.what << ": " << e;
    }
}

TEST(PackageErrors, CushionOfTheWrongShapeForTheModel) {
    const std::string dir = tiny_package("pkg-errors-cushion");
    // Every K/V of the cushion with head size 3 instead of 4 (consistent within the file, wrong for the model).
    std::string copy = edited(dir, "cushion.safetensors", [](const std::string& name, at::Tensor& t) {
        if (name.rfind("k.", 0) == 0 || name.rfind("v.", 0) == 0) t = t.narrow(3, 0, 3).contiguous();
    });
    std::string e = load_error(copy);
    EXPECT_TRUE(has(e, copy + "/cushion.safetensors: tensor k.0 has shape [1, 2, 1, 3], expected [1, 2, 1, 4] (1, the "
                               "model's 2 KV heads, 1 positions, head size 4)"))
        << e;
    copy = edited(dir, "cushion.safetensors", [](const std::string& name, at::Tensor& t) {
        if (name == "last_logits") t = t.narrow(0, 0, 10).contiguous();
    });
    e = load_error(copy);
    EXPECT_TRUE(has(e, copy + "/cushion.safetensors: tensor last_logits has shape [10], expected [11] (the model's "
                               "vocabulary)"))
        << e;
}

// --kernels int8 on a package whose weight scales are NaN or Inf: refused on load naming the tensor, by the CLI too
// (it failed in the int8 engine with its own words); and NaN reaching an int8 product names the layer (the engine
// made a finite, wrong product of it: row 1 of the output was 0.16, 0.18, ...).
TEST(PackageErrors, Int8KernelsNameTheTensorOrTheLayer) {
    auto m = load_model_file(stories_bin());
    const std::string dir = temp_dir("pkg-errors-int8") + "/pkg";
    ExportOptions eo;
    eo.config.wbits = 8;
    eo.config.abits = 8;
    eo.config.group = 0;
    eo.config.act = ActGranularity::PerTensorStatic;
    std::vector<std::vector<int32_t>> docs;
    for (int d = 0; d < 3; ++d) {
        docs.push_back({1});
        for (int i = 0; i < 20; ++i) docs.back().push_back(3 + (d * 37 + i * 11) % 400);
    }
    eo.calib_docs = docs;
    eo.eval_docs = docs;
    write_package(*m, make_cushion(*m, {1}), dir, eo);
    const std::string victim = "model.layers.2.mlp.up_proj.weight_scale";
    for (float bad : {NAN, INFINITY}) {
        const std::string copy = edited(dir, "model.safetensors", [&](const std::string& name, at::Tensor& t) {
            if (name == victim) t.view(-1)[7] = bad;
        });
        std::string out;
        const int rc = run_command(bin_dir() + "/cushion eval " + copy + " --kernels int8 --text " + eval_text() + " 2>&1", &out);
        EXPECT_EQ(rc, 2) << out;
        EXPECT_TRUE(has(out, copy + "/model.safetensors: " + victim + " contains NaN or Inf")) << out;
        EXPECT_FALSE(has(out, "ChooseQuantizationParams")) << out;
    }
    // NaN in the input of an int8 product (the activations stopped being finite before it).
    auto pkg = load_package(dir);
    if (int8_engines_available().empty()) GTEST_SKIP() << "no int8 engine here";
    const Int8KernelInfo info = use_int8_kernels(*pkg, Int8Path::Auto);
    ASSERT_GT(info.int8_linears, 0);
    at::Tensor x = at::zeros({1, 3, m->config.dim});
    x[0][1][5] = NAN;
    const auto& L = pkg->model->weights.layers[1];
    const std::string e = error_of([&] { pkg->kernels->linear(1, LinearId::Q, x, L.wq, at::Tensor()); });
    EXPECT_TRUE(has(e, "int8 kernels: layer 1, the input of the q projection (attn_in) holds NaN")) << e;
}

// quantization.json fields of the wrong type or missing (hashes made to match): the file and the field are named,
// not the JSON library's text ("[json.exception.type_error.302] ...").
TEST(PackageErrors, QuantizationJsonFieldsAreNamed) {
    const std::string dir = tiny_package("pkg-errors-json");
    const std::vector<std::pair<std::function<void(nlohmann::json&)>, std::string>> cases = {
        {[](nlohmann::json& j) { j["quantization"]["wbits"] = 8.5; },
         "field 'quantization.wbits' must be a whole number in [0, 64], it is 8.5"},
        {[](nlohmann::json& j) { j["quantization"]["group"] = "all"; },
         "field 'quantization.group' must be a whole number, it is \"all\""},
        {[](nlohmann::json& j) { j["quantization"]["sites"] = 5; }, "field 'quantization.sites' must be a string, it is 5"},
        {[](nlohmann::json& j) { j["quantization"].erase("abits"); }, "field 'quantization.abits' is missing"},
        {[](nlohmann::json& j) { j["quantization"]["act_granularity"] = "per-galaxy"; },
         "field 'quantization.act_granularity' is 'per-galaxy': "},
        {[](nlohmann::json& j) { j["quantization"]["smoothquant_alpha"] = "strong"; },
         "field 'quantization.smoothquant_alpha' must be a number, it is \"strong\""},
        {[](nlohmann::json& j) { j["format"] = 1; }, "not a CushionCache package"},
    };
    for (const auto& [fn, want] : cases) {
        const std::string copy = temp_dir("pkg-json-edit") + "/pkg";
        fs::copy(dir, copy, fs::copy_options::recursive);
        auto j = nlohmann::json::parse(read_text_file(copy + "/quantization.json"));
        fn(j);
        j.erase("self_sha256");
        j["self_sha256"] = sha256_hex(j.dump(2) + "\n");
        write_text_atomically(copy + "/quantization.json", j.dump(2));
        const std::string e = load_error(copy);
        EXPECT_TRUE(has(e, copy + "/quantization.json: ")) << e;
        EXPECT_TRUE(has(e, want)) << e << "\nexpected: " << want;
        EXPECT_FALSE(has(e, "json.exception")) << e;
    }
}
