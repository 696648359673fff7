// Hugging Face directory files: safetensors (header and data), model.safetensors.index.json, config.json,
// tokenizer.json; and the SentencePiece .model.
#include <ATen/ATen.h>

#include <filesystem>

#include "formats/model_loader.h"
#include "formats/safetensors.h"
#include "fuzz_common.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace fs = std::filesystem;

namespace {

// ---- safetensors

void run_safetensors(const uint8_t* d, size_t n) {
    const std::string path = fuzz::write_input("model.safetensors", d, n);
    fuzz::expect_only_errors("safetensors", [&] {
        cushion::SafetensorsFile f(path);
        for (const auto& name : f.names()) {
            (void)f.shape(name);
            at::Tensor t = f.get(name);
            (void)t.numel();
        }
    });
}

void seeds_safetensors(const std::string& dir) {
    const std::string p = dir + "/tiny.safetensors";
    cushion::save_safetensors(p,
                              {{"a.f32", at::arange(6, at::kFloat).reshape({2, 3})},
                               {"b.f16", at::ones({4}, at::kHalf)},
                               {"c.bf16", at::ones({2, 2}, at::kBFloat16)},
                               {"d.i64", at::arange(3, at::kLong)},
                               {"e.i32", at::arange(3, at::kInt)},
                               {"f.u8", at::ones({5}, at::kByte)},
                               {"g.scalar", at::scalar_tensor(2.5)},
                               {"h.empty", at::zeros({0, 3})}},
                              {{"format", "pt"}, {"note", "fuzz seed"}});
    const std::string tiny = fuzz::read_file(p);
    fs::remove(p);
    fuzz::seed(dir, "tiny.safetensors", tiny);
    // A header whose length is absurd, and one whose JSON nests too deep.
    std::string b = tiny;
    b[7] = '\x7f';
    fuzz::seed(dir, "huge-header.safetensors", b, false);
    const std::string deep = "{\"x\":" + fuzz::nested_json(300) + "}";
    std::string h(8, '\0');
    const uint64_t len = deep.size();
    for (int i = 0; i < 8; ++i) h[i] = static_cast<char>(len >> (8 * i));
    fuzz::seed(dir, "deep.safetensors", h + deep, false);
    fuzz::seed(dir, "overlap.safetensors",
               std::string("\x4c\0\0\0\0\0\0\0", 8) +
                   "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}" +
                   std::string(8, '\0'),
               false);
}

// ---- model.safetensors.index.json: a stories260K Hugging Face directory whose weights are in two shards.

std::string g_hf;

void init_index() {
    g_hf = fuzz::tmp_dir() + "/hf";
    cushion::save_hf_directory(*fuzz::stories(), g_hf);
    cushion::SafetensorsFile whole(g_hf + "/model.safetensors");
    std::vector<std::pair<std::string, at::Tensor>> a, b;
    const auto names = whole.names();
    for (size_t i = 0; i < names.size(); ++i) (i % 2 ? b : a).emplace_back(names[i], whole.get(names[i]).clone());
    cushion::save_safetensors(g_hf + "/shard-a.safetensors", a);
    cushion::save_safetensors(g_hf + "/shard-b.safetensors", b);
    fs::remove(g_hf + "/model.safetensors");
}

void run_index(const uint8_t* d, size_t n) {
    const std::string p = g_hf + "/model.safetensors.index.json";
    fuzz::write_file(p, std::string(reinterpret_cast<const char*>(d), n));
    fuzz::expect_only_errors("safetensors_index", [&] { (void)cushion::load_hf_directory(g_hf, {}); });
}

void seeds_index(const std::string& dir) {
    init_index();
    cushion::SafetensorsFile a(g_hf + "/shard-a.safetensors"), b(g_hf + "/shard-b.safetensors");
    std::string map;
    for (const auto* f : {&a, &b})
        for (const auto& name : f->names())
            map += std::string(map.empty() ? "" : ",") + "\"" + name + "\":\"" + (f == &a ? "shard-a" : "shard-b") +
                   ".safetensors\"";
    fuzz::seed(dir, "index.json", "{\"metadata\":{\"total_size\":1},\"weight_map\":{" + map + "}}");
    fuzz::seed(dir, "traversal.json", "{\"weight_map\":{\"model.norm.weight\":\"../shard-a.safetensors\"}}", false);
    fuzz::seed(dir, "wrong-shard.json", "{\"weight_map\":{\"model.norm.weight\":\"shard-a.safetensors\"," + map + "}}",
               false);
    fuzz::seed(dir, "deep.json", "{\"weight_map\":" + fuzz::nested_json(200, "{\"a\":", "}") + "}", false);
}

// ---- config.json

void run_config(const uint8_t* d, size_t n) {
    const std::string path = fuzz::write_input("config.json", d, n);
    fuzz::expect_only_errors("hf_config", [&] {
        std::vector<std::string> warnings;
        cushion::ModelConfig c = cushion::read_hf_config(path, &warnings);
        (void)c.kv_dim();
    });
}

void seeds_config(const std::string& dir) {
    fuzz::seed(dir, "stories260K.json", cushion::hf_config_json(*fuzz::stories()));
    const std::string llama3 =
        R"({"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":64,"intermediate_size":128,)"
        R"("num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":300,)"
        R"("max_position_embeddings":128,"rms_norm_eps":1e-5,"rope_theta":500000.0,"tie_word_embeddings":false,)"
        R"("rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,)"
        R"("original_max_position_embeddings":64},"bos_token_id":1,"eos_token_id":[2,3],"torch_dtype":"float32"})";
    fuzz::seed(dir, "llama3.json", llama3);
    fuzz::seed(dir, "mistral.json",
               R"({"architectures":["MistralForCausalLM"],"model_type":"mistral","hidden_size":64,"intermediate_size":128,)"
               R"("num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":1,"head_dim":16,"vocab_size":300,)"
               R"("max_position_embeddings":128,"rms_norm_eps":1e-6,"rope_theta":1000000.0,"sliding_window":null})");
    fuzz::seed(dir, "qwen2.json",
               R"({"architectures":["Qwen2ForCausalLM"],"model_type":"qwen2","hidden_size":64,"intermediate_size":128,)"
               R"("num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":300,)"
               R"("max_position_embeddings":128,"rms_norm_eps":1e-6,"rope_parameters":{"rope_type":"linear","factor":2.0,"rope_theta":10000.0},"tie_word_embeddings":true})");
    fuzz::seed(dir, "opt.json",
               R"({"architectures":["OPTForCausalLM"],"model_type":"opt","hidden_size":64,"ffn_dim":128,"word_embed_proj_dim":64,)"
               R"("num_hidden_layers":2,"num_attention_heads":4,"vocab_size":300,"max_position_embeddings":128,)"
               R"("do_layer_norm_before":true,"activation_function":"relu","enable_bias":true})");
    fuzz::seed(dir, "deep.json", "{\"rope_scaling\":" + fuzz::nested_json(40000) + "}", false);
    fuzz::seed(dir, "types.json",
               R"({"model_type":"llama","hidden_size":"64","num_hidden_layers":-1,"num_attention_heads":1e300,"vocab_size":null})",
               false);
}

// ---- tokenizer.json (seeds written by tokenizers itself: tests/fuzz/make_seeds.py; these are hand-made)

void run_tokenizer_json(const uint8_t* d, size_t n) {
    const std::string path = fuzz::write_input("tokenizer.json", d, n);
    fuzz::expect_only_errors("tokenizer_json", [&] {
        auto t = cushion::load_tokenizer_json(path);
        fuzz::exercise_tokenizer(*t);
    });
}

void seeds_tokenizer_json(const std::string& dir) {
    const std::string bytelevel =
        R"({"version":"1.0","added_tokens":[{"id":5,"content":"<|endoftext|>","special":true}],)"
        R"("normalizer":null,"pre_tokenizer":{"type":"Sequence","pretokenizers":[{"type":"Digits","individual_digits":true},)"
        R"({"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true}]},)"
        R"("post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<|endoftext|>","type_id":0}},)"
        R"({"Sequence":{"id":"A","type_id":0}}],"special_tokens":{"<|endoftext|>":{"id":"<|endoftext|>","ids":[5]}}},)"
        R"("decoder":{"type":"ByteLevel"},"model":{"type":"BPE","vocab":{"O":0,"n":1,"c":2,"e":3,"On":4,"\u0120":6,"\u0120t":7,"t":8},)"
        R"("merges":["O n",["\u0120","t"]],"ignore_merges":false}})";
    fuzz::seed(dir, "bytelevel.json", bytelevel);
    const std::string metaspace =
        R"({"normalizer":{"type":"Sequence","normalizers":[{"type":"Prepend","prepend":"\u2581"},{"type":"Replace","pattern":{"String":" "},"content":"\u2581"}]},)"
        R"("pre_tokenizer":null,"decoder":{"type":"Sequence","decoders":[{"type":"Replace","pattern":{"String":"\u2581"},"content":" "},{"type":"ByteFallback"},{"type":"Fuse"}]},)"
        R"("model":{"type":"BPE","byte_fallback":true,"unk_token":"<unk>","vocab":{"<unk>":0,"<s>":1,"</s>":2,"<0x41>":3,"\u2581":4,"a":5,"\u2581a":6},)"
        R"("merges":["\u2581 a"]},"added_tokens":[{"id":1,"content":"<s>","special":true},{"id":2,"content":"</s>","special":true}]})";
    fuzz::seed(dir, "metaspace.json", metaspace);
    fuzz::seed(dir, "split.json",
               R"({"model":{"type":"BPE","vocab":{"a":0,"b":1}},"pre_tokenizer":{"type":"Split","pattern":{"Regex":"\\p{L}+|\\p{N}"},"behavior":"Isolated"},"decoder":{"type":"ByteLevel"}})");
    // The crash of issue 15: a Sequence nested deep (here beyond the reader's limit, small enough for a seed).
    std::string deep = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0}},\"pre_tokenizer\":";
    for (int i = 0; i < 300; ++i) deep += "{\"type\":\"Sequence\",\"pretokenizers\":[";
    deep += "{\"type\":\"ByteLevel\"}";
    for (int i = 0; i < 300; ++i) deep += "]}";
    fuzz::seed(dir, "deep-sequence.json", deep + "}", false);
}

// ---- SentencePiece .model

void run_sentencepiece(const uint8_t* d, size_t n) {
    const std::string path = fuzz::write_input("tokenizer.model", d, n);
    fuzz::expect_only_errors("sentencepiece", [&] {
        auto t = cushion::load_sentencepiece_tokenizer(path);
        fuzz::exercise_tokenizer(*t);
    });
}

void seeds_sentencepiece(const std::string& dir) {
    fuzz::seed(dir, "tok512.model", fuzz::read_file(fuzz::resource("models/stories260K/tok512.model")));
}

}  // namespace

CUSHION_FUZZ_TARGET(safetensors, nullptr, run_safetensors, seeds_safetensors);
CUSHION_FUZZ_TARGET(safetensors_index, init_index, run_index, seeds_index);
CUSHION_FUZZ_TARGET(hf_config, nullptr, run_config, seeds_config);
CUSHION_FUZZ_TARGET(tokenizer_json, nullptr, run_tokenizer_json, seeds_tokenizer_json);
CUSHION_FUZZ_TARGET(sentencepiece, nullptr, run_sentencepiece, seeds_sentencepiece);
