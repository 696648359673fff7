// The cushion reader refuses what is not a valid cushion of its model (issue "hardening"): NaN/Inf anywhere, KV
// tensors of the wrong rank, dtype or shape, prefix ids out of range, no tokens, no model fingerprint; each error
// names the file and the tensor or field.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "cushion/cushion.h"
#include "formats/safetensors.h"
#include "quant/quant_config.h"
#include "test_support.h"
#include "tiny_models.h"

using namespace cushion;
using namespace cushion::test;

namespace {

using Tensors = std::vector<std::pair<std::string, at::Tensor>>;
using Meta = std::map<std::string, std::string>;

// The tensors and metadata save_cushion writes for c.
void parts(const Cushion& c, Tensors* ts, Meta* meta) {
    for (size_t l = 0; l < c.kv.k.size(); ++l) {
        ts->push_back({"k." + std::to_string(l), c.kv.k[l].clone()});
        ts->push_back({"v." + std::to_string(l), c.kv.v[l].clone()});
    }
    ts->push_back({"last_logits", c.last_logits.clone()});  // clones: the edits must not reach `good`
    ts->push_back({"prefix_ids", at::tensor(std::vector<int64_t>(c.prefix_ids.begin(), c.prefix_ids.end()), at::kLong)});
    *meta = {{"format", "cushioncache-cushion"}, {"version", "1"}, {"model_fingerprint", c.model_fingerprint}};
}

at::Tensor& tensor(Tensors& ts, const std::string& name) {
    for (auto& [n, t] : ts)
        if (n == name) return t;
    throw std::runtime_error("no tensor " + name);
}

}  // namespace

TEST(CushionFile, CorruptCushionsAreRefusedWithTheFieldNamed) {
    // Not a structured binding: lambdas may not capture those in C++17 (clang refuses; the asan build is clang).
    const auto m = make_tiny(TinySpec{}).first;
    const Cushion good = make_cushion(*m, {1, 4, 5});
    const std::string dir = temp_dir("cushion-file");
    int case_no = 0;
    // Writes the parts after `edit`, loads them and returns the error ("<no error>" when they load and fit).
    auto try_load = [&](const std::function<void(Tensors&, Meta&)>& edit) {
        Tensors ts;
        Meta meta;
        parts(good, &ts, &meta);
        edit(ts, meta);
        const std::string path = dir + "/c" + std::to_string(case_no++) + ".safetensors";
        save_safetensors(path, ts, meta);
        return error_of([&] { check_cushion_fits(load_cushion(path), *m, path); });
    };
    EXPECT_EQ(try_load([](Tensors&, Meta&) {}), "<no error>");
    const float nan = std::nanf("");
    auto expect = [&](const std::function<void(Tensors&, Meta&)>& edit, const std::string& needle) {
        const std::string e = try_load(edit);
        EXPECT_NE(e.find(needle), std::string::npos) << "error: '" << e << "', expected '" << needle << "'";
        EXPECT_NE(e.find(dir), std::string::npos) << e;  // the file is named
    };
    expect([&](Tensors& t, Meta&) { tensor(t, "last_logits")[2] = nan; }, "last_logits contains NaN or Inf");
    expect([&](Tensors& t, Meta&) { tensor(t, "k.1").view(-1)[0] = INFINITY; }, "k.1 contains NaN or Inf");
    expect([&](Tensors& t, Meta&) { tensor(t, "prefix_ids")[1] = -1; }, "prefix_ids[1] = -1");
    expect([&](Tensors& t, Meta&) { tensor(t, "prefix_ids")[1] = 11; }, "outside this model's vocabulary");
    expect([&](Tensors& t, Meta&) { tensor(t, "prefix_ids")[0] = int64_t(1) << 40; }, "is not a token id");
    expect([&](Tensors& t, Meta&) { tensor(t, "prefix_ids") = tensor(t, "prefix_ids").narrow(0, 0, 2).clone(); },
           "prefix_ids has 2 tokens, the KV cache 3");
    expect([&](Tensors& t, Meta&) { tensor(t, "prefix_ids") = tensor(t, "prefix_ids").to(at::kFloat); },
           "prefix_ids must be a 1-D integer tensor");
    expect([&](Tensors&, Meta& meta) { meta.erase("model_fingerprint"); }, "model_fingerprint is missing");
    expect([&](Tensors& t, Meta&) { tensor(t, "k.0") = tensor(t, "k.0").to(at::kInt); }, "k.0 has dtype Int");
    expect([&](Tensors& t, Meta&) { tensor(t, "v.0") = tensor(t, "v.0").squeeze(0).contiguous(); },
           "must both be (1, kv_heads, P, head_dim)");
    expect([&](Tensors& t, Meta&) { tensor(t, "last_logits") = tensor(t, "last_logits").unsqueeze(0).contiguous(); },
           "last_logits must be 1-D");
    expect([&](Tensors& t, Meta&) {
        for (auto& [name, x] : t)
            if (name[0] == 'k' || name[0] == 'v') x = x.narrow(2, 0, 0).contiguous();
        tensor(t, "prefix_ids") = at::zeros({0}, at::kLong);
    }, "the cushion has no tokens");
}

// Tuning optimises the L_q the search used: its bits and sites come from the cushion's settings, and malformed
// settings are an error naming the field (the studio used to ignore them and tune with the defaults).
TEST(CushionFile, SearchLossOptionsComeFromTheCushionSettings) {
    Cushion c;
    c.settings_json = R"({"search": {"bits": 6, "sites": "down_in"}})";
    const QuantLossOptions o = search_loss_options(c);
    EXPECT_EQ(o.bits, 6);
    EXPECT_EQ(o.sites, parse_sites("down_in"));
    c.settings_json = "{}";
    EXPECT_EQ(search_loss_options(c).bits, QuantLossOptions{}.bits);
    c.settings_json = R"({"search": {"bits": "eight"}})";
    EXPECT_NE(error_of([&] { search_loss_options(c, "x.cushion"); }).find("x.cushion: settings field 'search.bits' is not an integer"),
              std::string::npos);
    c.settings_json = R"({"search": {"bits": 5}})";
    EXPECT_NE(error_of([&] { search_loss_options(c); }).find("use 4, 6, 8 or 16"), std::string::npos);
    c.settings_json = R"({"search": {"sites": "nowhere"}})";
    EXPECT_NE(error_of([&] { search_loss_options(c); }).find("search.sites"), std::string::npos);
    c.settings_json = "{not json";
    EXPECT_FALSE(error_of([&] { search_loss_options(c); }).empty());
}
