// stories260K, the real pretrained model: our engine against the independent plain-C reference
// (tests/reference/llama2c_ref.c), and the same weights loaded from .bin, .gguf and a Hugging Face
// directory written from them.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "model/generation.h"
#include "package/open_target.h"
#include "model/perplexity.h"
#include "test_support.h"

using namespace cushion;
using namespace cushion::test;

namespace {

std::string join(const std::vector<int32_t>& v) {
    std::string s;
    for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
    return s;
}

at::Tensor ids(const std::vector<int32_t>& v) {
    return at::tensor(std::vector<int64_t>(v.begin(), v.end()), at::kLong).unsqueeze(0);
}

// Runs the reference and parses "logits POS: ..." lines into (T, V).
at::Tensor reference_logits(const std::vector<int32_t>& toks) {
    std::string out;
    const int rc = run_command(bin_dir() + "/llama2c_ref " + stories_bin() + " --tokens " + join(toks) + " --logits", &out);
    EXPECT_EQ(rc, 0);
    std::vector<std::vector<double>> rows;
    std::istringstream in(out);
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("logits", 0) != 0) continue;
        std::istringstream ls(line.substr(line.find(':') + 1));
        std::vector<double> r;
        double v;
        while (ls >> v) r.push_back(v);
        rows.push_back(r);
    }
    at::Tensor t = at::empty({(int64_t)rows.size(), rows.empty() ? 0 : (int64_t)rows[0].size()}, at::kDouble);
    for (size_t i = 0; i < rows.size(); ++i)
        for (size_t j = 0; j < rows[i].size(); ++j) t[i][j] = rows[i][j];
    return t;
}

std::shared_ptr<Model> stories() {
    static std::shared_ptr<Model> m = load_model(stories_bin());
    return m;
}

}  // namespace

TEST(Stories, LogitsMatchPlainCReference) {
    auto m = stories();
    auto toks = m->tokenizer->encode("Once upon a time, there was a little dog named Max. He liked to run.", true);
    at::Tensor ref = reference_logits(toks);
    ASSERT_EQ(ref.size(0), (int64_t)toks.size());
    at::Tensor ours = m->forward(ids(toks))[0].to(at::kDouble);
    const double d = (ours - ref).abs().max().item<double>();
    // float32 engine vs double reference; logits are O(10): 2e-4 absolute.
    EXPECT_LT(d, 2e-4) << "max |diff| " << d;
}

TEST(Stories, GreedyGenerationMatchesReferenceTokenForToken) {
    auto m = stories();
    const std::vector<int32_t> prompt{1};
    std::string out;
    ASSERT_EQ(run_command(bin_dir() + "/llama2c_ref " + stories_bin() + " --tokens 1 --steps 200", &out), 0);
    const std::string list = out.substr(out.find(':') + 1);
    std::vector<int32_t> ref;
    std::istringstream in(list);
    std::string tok;
    while (std::getline(in, tok, ',')) ref.push_back(std::stoi(tok));
    ASSERT_EQ(ref.size(), 200u);
    GenerateOptions o;
    o.max_new_tokens = 199;
    o.stop_at_eos = false;
    auto ours = generate(*m, prompt, o);
    std::vector<int32_t> all{1};
    all.insert(all.end(), ours.begin(), ours.end());
    EXPECT_EQ(all, ref);
    EXPECT_NE(m->tokenizer->decode(all).find("Once upon a time"), std::string::npos);
}

TEST(Stories, BinGgufAndHfDirectoryGiveTheSameLogits) {
    auto bin = stories();
    auto gguf = load_model(stories_gguf());
    const std::string dir = temp_dir("hf") + "/stories260K-hf";
    save_hf_directory(*bin, dir);
    auto hf = load_model(dir);
    EXPECT_EQ(gguf->config.dim, 64);
    EXPECT_EQ(hf->config.n_kv_heads, 4);
    auto toks = bin->tokenizer->encode("The cat sat on the mat. It was happy.", true);
    EXPECT_EQ(gguf->tokenizer->encode("The cat sat on the mat. It was happy.", true), toks);
    EXPECT_EQ(hf->tokenizer->encode("The cat sat on the mat. It was happy.", true), toks);
    at::Tensor a = bin->forward(ids(toks)), b = gguf->forward(ids(toks)), c = hf->forward(ids(toks));
    EXPECT_LT((a - b).abs().max().item<double>(), 1e-5);
    EXPECT_LT((a - c).abs().max().item<double>(), 1e-5);
    EXPECT_EQ(bin->fingerprint(), hf->fingerprint());
}

TEST(Stories, PerplexityOnHeldOutTextIsSane) {
    auto m = stories();
    auto docs = tokenize_documents(*m, read_documents(eval_text()), m->config.max_seq_len);
    auto r = perplexity(*m, docs);
    EXPECT_EQ(r.docs, 10);
    // stories260K is a tiny model: its perplexity on TinyStories is small but far from 1.
    EXPECT_GT(r.ppl, 1.5);
    EXPECT_LT(r.ppl, 20.0);
    int64_t expect_tokens = 0;
    for (auto& d : docs) expect_tokens += d.size() - 1;
    EXPECT_EQ(r.tokens, expect_tokens);
}

TEST(Cli, PplJsonAndHelp) {
    std::string out;
    ASSERT_EQ(run_command(bin_dir() + "/cushion ppl --text " + eval_text() + " --json --quiet", &out), 0) << out;
    auto j = nlohmann::json::parse(out);
    EXPECT_EQ(j["docs"], 10);
    auto m = stories();
    auto r = perplexity(*m, tokenize_documents(*m, read_documents(eval_text()), m->config.max_seq_len));
    EXPECT_NEAR(j["ppl"].get<double>(), r.ppl, 1e-9 * r.ppl);
    EXPECT_EQ(run_command(bin_dir() + "/cushion --help", &out), 0);
    for (const char* c : {"info", "generate", "ppl", "probe"}) {
        std::string h;
        EXPECT_EQ(run_command(bin_dir() + "/cushion " + c + " --help", &h), 0);
        EXPECT_NE(h.find("usage: cushion"), std::string::npos) << c;
    }
}

TEST(Cli, IdleOpenMpThreadsSleepUnlessTheUserChose) {
    // core/threads.h: the CLI re-executes itself with OMP_WAIT_POLICY=PASSIVE when the user has not set it.
    std::string out;
    ASSERT_EQ(run_command("env -u OMP_WAIT_POLICY " + bin_dir() + "/cushion info --json", &out), 0) << out;
    EXPECT_EQ(nlohmann::json::parse(out)["openmp_wait_policy"], "PASSIVE");
    EXPECT_GE(nlohmann::json::parse(out)["threads"].get<int>(), 1);
    out.clear();
    ASSERT_EQ(run_command("env OMP_WAIT_POLICY=ACTIVE " + bin_dir() + "/cushion info --json", &out), 0) << out;
    EXPECT_EQ(nlohmann::json::parse(out)["openmp_wait_policy"], "ACTIVE");
}

TEST(Cli, BadInputGivesClearErrors) {
    std::string out;
    const std::string B = bin_dir() + "/cushion";
    EXPECT_EQ(run_command(B + " info /nonexistent/model.bin 2>&1", &out), 2);
    EXPECT_NE(out.find("no such file"), std::string::npos) << out;
    out.clear();
    EXPECT_EQ(run_command(B + " ppl 2>&1", &out), 2);
    EXPECT_NE(out.find("--text"), std::string::npos) << out;
    out.clear();
    EXPECT_EQ(run_command(B + " generate --prompt hi --device cuda:7 2>&1", &out), 2);
    EXPECT_NE(out.find("cuda"), std::string::npos) << out;
    out.clear();
    EXPECT_EQ(run_command(B + " generate --prompt hi --max-tokens -3 2>&1", &out), 2);
    EXPECT_NE(out.find("max-tokens"), std::string::npos) << out;
    out.clear();
    EXPECT_EQ(run_command(B + " probe --bogus 2>&1", &out), 2);
    EXPECT_NE(out.find("unknown option --bogus"), std::string::npos) << out;
}

TEST(Cli, ProbeWritesAHeatmapAndFindsBosOutlier) {
    const std::string png = temp_dir("probe") + "/map.png";
    std::string out;
    ASSERT_EQ(run_command(bin_dir() + "/cushion probe --prompt 'Once upon a time, there was a girl.' --png " + png +
                              " --json --quiet",
                          &out),
              0)
        << out;
    auto j = nlohmann::json::parse(out);
    ASSERT_EQ(j["layers"].size(), 5u);
    // stories260K's largest down-projection input is at <bos> (position 0) in block 0.
    EXPECT_EQ(j["layers"][0]["sites"]["down_in"]["top"][0]["pos"], 0);
    EXPECT_GT(j["layers"][0]["sites"]["down_in"]["max_ratio"].get<double>(), 20.0);
    EXPECT_TRUE(std::filesystem::exists(png));
    EXPECT_GT(std::filesystem::file_size(png), 1000u);
}
