// libFuzzer targets for every reader of files from outside (issue 15), in one executable, cushion_fuzz: the
// target is chosen by the environment variable CUSHION_FUZZ_TARGET (one process fuzzes one reader; children of
// -fork/-jobs inherit it). The readers take paths, so each input is written to a file in a per-process temporary
// directory and the reader is called on it.
//
// The contract a target checks: a reader either accepts the input or throws cushion::Error (whose message names
// the file). Any other exception (a libtorch c10::Error, a JSON library exception, std::bad_alloc, ...) is a
// finding: the target prints it and aborts, and libFuzzer saves the input. So are crashes, sanitizer reports
// (AddressSanitizer, UndefinedBehaviorSanitizer), allocations over -malloc_limit_mb, and hangs over -timeout.
//
// CUSHION_FUZZ_WRITE_SEEDS=DIR writes each target's seeds (from the real files in resources/ and the stories260K
// model, plus broken ones: truncated, mutated, nested too deep...) into DIR/<target>/ and exits.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace cushion {
class Model;
class Tokenizer;
}

namespace fuzz {

struct Target {
    const char* name;
    void (*init)();                                  // once, before the first input (may be null)
    void (*run)(const uint8_t* data, size_t size);   // one input
    void (*seeds)(const std::string& dir);           // writes the seed corpus into dir
};

int register_target(const Target& t);

// This process's scratch directory (made on first use, removed at exit).
const std::string& tmp_dir();
// Writes the bytes to tmp_dir()/name and returns the path.
std::string write_input(const std::string& name, const uint8_t* data, size_t size);

// The readers' contract (see above): runs f; cushion::Error is expected, anything else aborts.
void expect_only_errors(const char* target, const std::function<void()>& f);

// resources/<rel> of the source tree.
std::string resource(const std::string& rel);
std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& bytes);

// stories260K (resources/models/stories260K/stories260K.bin with tok512.bin), loaded once.
std::shared_ptr<const cushion::Model> stories();
// A few calibration documents of stories260K (tokenized, each starting with <bos>).
const std::vector<std::vector<int32_t>>& stories_docs();

// Encodes and decodes a little text (ASCII, U+2581, accents, an emoji, digits) with a tokenizer that loaded, and
// reads every piece (the first 4096).
void exercise_tokenizer(const cushion::Tokenizer& t);

// Seeds: `bytes` as DIR/name, plus (with variants) truncations at several lengths and a few single-byte
// changes at fixed places, deterministic.
void seed(const std::string& dir, const std::string& name, const std::string& bytes, bool variants = true);
// A JSON value nested `depth` arrays deep, e.g. for a field that must be an object.
std::string nested_json(int depth, const std::string& open = "[", const std::string& close = "]");

}  // namespace fuzz

#define CUSHION_FUZZ_TARGET(ident, init, run, seeds) \
    static const int fuzz_registered_##ident = ::fuzz::register_target({#ident, init, run, seeds})
