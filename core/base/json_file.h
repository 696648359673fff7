// Reading JSON files and strings from outside, in one place: the file must be a regular file, the text valid JSON,
// and the document nested at most kMaxJsonDepth levels, checked right after parsing (iteratively), before anything
// copies, walks or prints it recursively: nlohmann::json parses and destroys deep documents without recursion,
// but copying or dumping them recurses once per level, and a tokenizer.json nested 40,000 deep overflowed the stack.
// Errors name the file (or `where`).
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace cushion {

constexpr int kMaxJsonDepth = 128;

nlohmann::json read_json_file(const std::string& path);
nlohmann::json parse_json_text(const std::string& text, const std::string& where);
// The same keeping the keys in file order (files whose text is hashed, e.g. a package's quantization.json).
nlohmann::ordered_json read_ordered_json_file(const std::string& path);

// Reading the fields of a JSON document with errors that name the file and the field, never the JSON library's
// text ("[json.exception.type_error.302] type must be number, but is string"):
//   "ck.ckpt (checkpoint, metadata 'tune'): field 'history[3].grad_norm' is missing"
//   "pkg/quantization.json: field 'quantization.wbits' must be a whole number, it is \"8\"".
// A view of one object or array inside the document (which must outlive it; an ordered_json is converted by the
// caller: nlohmann::json plain = ordered); `where` names the file (and what in it), `path` the field.
class JsonFields {
public:
    JsonFields(const nlohmann::json& j, std::string where, std::string path = "");

    bool has(const std::string& key) const;  // an object member that is present and not null
    JsonFields object(const std::string& key) const;  // a required member that is an object
    JsonFields array(const std::string& key) const;   // a required member that is an array
    size_t size() const;                              // of an array (or object)
    JsonFields at(size_t i) const;                    // element i of an array (an object or array)

    // Required members; integers are whole numbers within [lo, hi] (a double like 1e300 is an error, not a cast).
    int64_t integer(const std::string& key, int64_t lo = INT64_MIN, int64_t hi = INT64_MAX) const;
    double number(const std::string& key) const;
    bool boolean(const std::string& key) const;
    std::string string(const std::string& key) const;
    std::vector<int64_t> integers(const std::string& key, int64_t lo = INT64_MIN, int64_t hi = INT64_MAX) const;
    // Optional members: `def` when absent (or null), an error when present with the wrong type.
    int64_t integer_or(const std::string& key, int64_t def, int64_t lo = INT64_MIN, int64_t hi = INT64_MAX) const;
    double number_or(const std::string& key, double def) const;
    bool boolean_or(const std::string& key, bool def) const;
    std::string string_or(const std::string& key, const std::string& def) const;

    const nlohmann::json& json() const { return *j_; }
    std::string field(const std::string& key) const;  // "history[3].grad_norm"
    [[noreturn]] void fail(const std::string& key, const std::string& what) const;

private:
    const nlohmann::json& member(const std::string& key) const;  // required: throws "is missing"
    const nlohmann::json* j_;
    std::string where_, path_;
};

// Throws Error naming `where` if `j` nests deeper than `limit` arrays/objects.
void check_json_depth(const nlohmann::json& j, const std::string& where, int limit = kMaxJsonDepth);
void check_json_depth(const nlohmann::ordered_json& j, const std::string& where, int limit = kMaxJsonDepth);

}  // namespace cushion
