// The dispatcher of cushion_fuzz (see fuzz_common.h) and the helpers the targets share.
#include "fuzz_common.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <typeinfo>
#include <unistd.h>

#include "base/error.h"
#include "formats/model_loader.h"
#include "model/perplexity.h"
#include "package/open_target.h"
#include "tokenizer/tokenizer.h"

namespace fs = std::filesystem;

namespace fuzz {
namespace {

std::vector<Target>& targets() {
    static std::vector<Target> t;
    return t;
}
const Target* current = nullptr;
std::string scratch;

void remove_scratch() {
    if (!scratch.empty()) {
        std::error_code ec;
        fs::remove_all(scratch, ec);
    }
}

}  // namespace

int register_target(const Target& t) {
    targets().push_back(t);
    return 0;
}

const std::string& tmp_dir() {
    if (scratch.empty()) {
        const char* base = std::getenv("TMPDIR");
        std::string tmpl = std::string(base && *base ? base : "/tmp") + "/cushion-fuzz-XXXXXX";
        if (!mkdtemp(tmpl.data())) {
            std::perror("cushion_fuzz: mkdtemp");
            std::abort();
        }
        scratch = tmpl;
        std::atexit(remove_scratch);
    }
    return scratch;
}

std::string write_input(const std::string& name, const uint8_t* data, size_t size) {
    const std::string path = tmp_dir() + "/" + name;
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
    f.close();
    if (!f) {
        std::fprintf(stderr, "cushion_fuzz: cannot write %s\n", path.c_str());
        std::abort();
    }
    return path;
}

void expect_only_errors(const char* target, const std::function<void()>& f) {
    const char* kind = nullptr;
    std::string what;
    try {
        f();
        return;
    } catch (const cushion::Error&) {
        return;  // the contract: a clear error
    } catch (const c10::Error& e) {
        kind = "c10::Error (libtorch)";
        what = e.what_without_backtrace();
    } catch (const nlohmann::json::exception& e) {
        kind = "nlohmann::json::exception";
        what = e.what();
    } catch (const std::exception& e) {
        kind = typeid(e).name();
        what = e.what();
    } catch (...) {
        kind = "an unknown exception";
    }
    std::fprintf(stderr, "\n== cushion_fuzz %s: FINDING: %s escaped the reader instead of cushion::Error:\n%s\n", target,
                 kind, what.c_str());
    std::fflush(stderr);
    std::abort();
}

std::string resource(const std::string& rel) { return std::string(CUSHION_FUZZ_RESOURCE_DIR) + "/" + rel; }

std::string read_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) {
        std::fprintf(stderr, "cushion_fuzz: cannot read %s\n", path.c_str());
        std::exit(2);
    }
    std::ostringstream s;
    s << f.rdbuf();
    return s.str();
}

void write_file(const std::string& path, const std::string& bytes) {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f << bytes;
    f.close();
    if (!f) {
        std::fprintf(stderr, "cushion_fuzz: cannot write %s\n", path.c_str());
        std::exit(2);
    }
}

std::shared_ptr<const cushion::Model> stories() {
    static std::shared_ptr<const cushion::Model> m =
        cushion::load_model(resource("models/stories260K/stories260K.bin"));
    return m;
}

const std::vector<std::vector<int32_t>>& stories_docs() {
    static const std::vector<std::vector<int32_t>> docs = [] {
        std::vector<std::string> text = cushion::read_documents(resource("text/tinystories-calib.txt"));
        text.resize(std::min<size_t>(text.size(), 6));
        return cushion::tokenize_documents(*stories(), text, 48);
    }();
    return docs;
}

void exercise_tokenizer(const cushion::Tokenizer& t) {
    const auto ids = t.encode("Once upon a time, there was a little girl named Lily. \xE2\x96\x81 caf\xC3\xA9 \xF0\x9F\x98\x80 123 <s>",
                              true);
    (void)t.decode(ids);
    const int32_t n = std::min<int32_t>(t.vocab_size(), 4096);
    for (int32_t i = 0; i < n; ++i) {
        (void)t.piece(i);
        (void)t.decode_token(i > 0 ? i - 1 : 0, i);
        (void)t.is_special(i);
    }
}

void seed(const std::string& dir, const std::string& name, const std::string& bytes, bool variants) {
    write_file(dir + "/" + name, bytes);
    if (!variants) return;
    const size_t n = bytes.size();
    for (size_t cut : {size_t(0), size_t(1), size_t(4), size_t(8), size_t(16), size_t(24), n / 4, n / 2, n - 1})
        if (cut < n) write_file(dir + "/" + name + ".cut" + std::to_string(cut), bytes.substr(0, cut));
    // Single bytes set to 0xFF at fixed places (sizes, counts, types in a header).
    int k = 0;
    for (size_t at : {size_t(0), size_t(4), size_t(8), size_t(12), size_t(20), size_t(31), n / 3, n - 2}) {
        if (at >= n) continue;
        std::string b = bytes;
        b[at] = static_cast<char>(0xFF);
        write_file(dir + "/" + name + ".ff" + std::to_string(k++), b);
    }
}

std::string nested_json(int depth, const std::string& open, const std::string& close) {
    std::string s;
    for (int i = 0; i < depth; ++i) s += open;
    for (int i = 0; i < depth; ++i) s += close;
    return s;
}

}  // namespace fuzz

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
    (void)argc;
    (void)argv;
    at::set_num_threads(1);  // inputs are small; one thread keeps a shared machine usable
    auto& all = fuzz::targets();
    std::sort(all.begin(), all.end(), [](const fuzz::Target& a, const fuzz::Target& b) {
        return std::string(a.name) < b.name;
    });
    if (const char* out = std::getenv("CUSHION_FUZZ_WRITE_SEEDS")) {
        for (const auto& t : all) {
            const std::string dir = std::string(out) + "/" + t.name;
            fs::remove_all(dir);
            fs::create_directories(dir);
            t.seeds(dir);
            size_t files = 0;
            for (const auto& e : fs::directory_iterator(dir)) files += e.is_regular_file();
            std::printf("%-20s %zu seeds\n", t.name, files);
        }
        std::exit(0);
    }
    const char* want = std::getenv("CUSHION_FUZZ_TARGET");
    for (const auto& t : all)
        if (want && t.name == std::string(want)) fuzz::current = &t;
    if (!fuzz::current) {
        std::fprintf(stderr, "cushion_fuzz: set CUSHION_FUZZ_TARGET to one of:");
        for (const auto& t : all) std::fprintf(stderr, " %s", t.name);
        std::fprintf(stderr, "\n(or CUSHION_FUZZ_WRITE_SEEDS=DIR to write the seed corpora)\n");
        std::exit(2);
    }
    if (fuzz::current->init) fuzz::current->init();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    fuzz::current->run(data, size);
    return 0;
}
