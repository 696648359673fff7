// Test helper: runs one of the engine's tokenizers on byte strings, for the `reference` tests that compare it
// with Hugging Face `tokenizers`, `sentencepiece` and gguf-py (tests/tokenizer/*.py, tests/gguf/gguf_check.py).
//
//   tokenize_ids [SPEC [--bos]] < INPUT > OUTPUT
//
// SPEC picks the tokenizer and the entry point it goes through:
//   json:PATH             a Hugging Face tokenizer.json (load_tokenizer_json)
//   gguf-bpe:PRE:PATH     the vocabulary and merges of a byte-level BPE tokenizer.json through the GGUF entry point
//                         (make_byte_bpe_tokenizer with tokenizer.ggml.pre = PRE; added tokens: special -> control,
//                         else user-defined), as load_gguf builds a "gpt2" vocabulary
//   spm:PATH              a SentencePiece .model (load_sentencepiece_tokenizer)
//   llama2c:VOCAB:PATH    a llama2.c tokenizer.bin with VOCAB entries (load_llama2c_tokenizer)
//   model:PATH            the tokenizer of any model load_model reads (a GGUF's metadata vocabulary, ...)
// INPUT: one string per line, hex-encoded (any bytes, invalid UTF-8 included; an empty line is the empty string), or
// a line "@SPEC" / "@SPEC --bos" that switches to another tokenizer (loaded once, kept) for the lines after it, so that
// one process (libtorch starts in ~0.3 s) serves a whole test.
// OUTPUT: one JSON object per input line: {"ids": [...], "decoded": HEX} where decoded is decode(ids), hex-encoded;
// for each tokenizer switch (and for SPEC given as an argument) a header line {"kind", "vocab_size", "bos", "eos"}.
// --bos encodes with add_bos = true.
#include <cstdio>
#include <exception>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "package/open_target.h"
#include "tokenizer/tokenizer.h"

namespace {

using nlohmann::json;

std::string from_hex(const std::string& h, size_t line) {
    auto nib = [&](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        throw std::runtime_error("input line " + std::to_string(line) + ": not hex");
    };
    if (h.size() % 2) throw std::runtime_error("input line " + std::to_string(line) + ": odd number of hex digits");
    std::string out(h.size() / 2, '\0');
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<char>(nib(h[2 * i]) * 16 + nib(h[2 * i + 1]));
    return out;
}

std::string to_hex(const std::string& s) {
    static const char* d = "0123456789abcdef";
    std::string out;
    out.reserve(s.size() * 2);
    for (unsigned char c : s) {
        out += d[c >> 4];
        out += d[c & 15];
    }
    return out;
}

// A byte-level tokenizer.json's vocabulary, merges and added tokens through the GGUF entry point.
std::shared_ptr<const cushion::Tokenizer> gguf_bpe(const std::string& pre, const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw std::runtime_error("cannot open " + path);
    const json j = json::parse(f);
    const json& model = j.at("model");
    std::vector<std::string> tokens;
    std::vector<int32_t> types;
    auto put = [&](size_t id, const std::string& s, int32_t type) {
        if (id >= tokens.size()) {
            tokens.resize(id + 1);
            types.resize(id + 1, 5);  // unused
        }
        tokens[id] = s;
        types[id] = type;
    };
    for (const auto& [tok, id] : model.at("vocab").items()) put(id.get<size_t>(), tok, 1);
    if (j.contains("added_tokens"))
        for (const auto& a : j["added_tokens"]) put(a.at("id").get<size_t>(), a.at("content"), a.value("special", false) ? 3 : 4);
    std::vector<std::string> merges;
    for (const auto& m : model.at("merges"))
        merges.push_back(m.is_string() ? m.get<std::string>() : m.at(0).get<std::string>() + " " + m.at(1).get<std::string>());
    // bos / eos as load_gguf would find them in tokenizer.ggml.bos_token_id / eos_token_id: here, by name.
    int32_t bos = -1, eos = -1;
    for (size_t i = 0; i < tokens.size(); ++i) {
        if (tokens[i] == "<|begin_of_text|>" && bos < 0) bos = static_cast<int32_t>(i);
        if ((tokens[i] == "<|end_of_text|>" || tokens[i] == "<|endoftext|>") && eos < 0) eos = static_cast<int32_t>(i);
    }
    return cushion::make_byte_bpe_tokenizer(tokens, merges, pre, bos, eos, types);
}

std::shared_ptr<const cushion::Tokenizer> make(const std::string& spec) {
    const size_t c = spec.find(':');
    if (c == std::string::npos) throw std::runtime_error("SPEC '" + spec + "' has no ':'");
    const std::string kind = spec.substr(0, c), rest = spec.substr(c + 1);
    if (kind == "json") return cushion::load_tokenizer_json(rest);
    if (kind == "spm") return cushion::load_sentencepiece_tokenizer(rest);
    if (kind == "model") return cushion::load_model(rest)->tokenizer;
    const size_t c2 = rest.find(':');
    if (c2 == std::string::npos) throw std::runtime_error("SPEC '" + spec + "' needs KIND:ARG:PATH");
    const std::string arg = rest.substr(0, c2), path = rest.substr(c2 + 1);
    if (kind == "gguf-bpe") return gguf_bpe(arg, path);
    if (kind == "llama2c") return cushion::load_llama2c_tokenizer(path, std::stoi(arg));
    throw std::runtime_error("unknown SPEC kind '" + kind + "'");
}

}  // namespace

int main(int argc, char** argv) {
    if (argc > 3 || (argc == 3 && std::string(argv[2]) != "--bos")) {
        std::fprintf(stderr, "usage: tokenize_ids [SPEC [--bos]] < hex lines > json lines\n");
        return 2;
    }
    try {
        std::ios::sync_with_stdio(false);
        std::map<std::string, std::shared_ptr<const cushion::Tokenizer>> cache;
        std::shared_ptr<const cushion::Tokenizer> tok;
        bool bos = false;
        auto select = [&](const std::string& spec, bool with_bos) {
            auto& t = cache[spec];
            if (!t) t = make(spec);
            tok = t;
            bos = with_bos;
            std::cout << json{{"kind", tok->kind()}, {"vocab_size", tok->vocab_size()}, {"bos", tok->bos_id()},
                              {"eos", tok->eos_id()}}.dump()
                      << "\n";
        };
        if (argc >= 2) select(argv[1], argc == 3);
        std::string line;
        size_t n = 0;
        while (std::getline(std::cin, line)) {
            ++n;
            if (!line.empty() && line.back() == '\r') line.pop_back();
            if (!line.empty() && line[0] == '@') {
                const std::string flag = " --bos";
                const bool b = line.size() > flag.size() && line.compare(line.size() - flag.size(), flag.size(), flag) == 0;
                select(line.substr(1, line.size() - 1 - (b ? flag.size() : 0)), b);
                continue;
            }
            if (!tok) throw std::runtime_error("input line " + std::to_string(n) + ": no tokenizer selected (SPEC or @SPEC)");
            const auto ids = tok->encode(from_hex(line, n), bos);
            std::string out = "{\"ids\":[";
            for (size_t i = 0; i < ids.size(); ++i) {
                if (i) out += ',';
                out += std::to_string(ids[i]);
            }
            out += "],\"decoded\":\"" + to_hex(tok->decode(ids)) + "\"}\n";
            std::cout << out;
        }
        std::cout.flush();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "tokenize_ids: %s\n", e.what());
        return 1;
    }
    return 0;
}
