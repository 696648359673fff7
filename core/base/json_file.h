// Reading JSON files and strings from outside, in one place: the file must be a regular file, the text valid JSON,
// and the document nested at most kMaxJsonDepth levels, checked right after parsing (iteratively), before anything
// copies, walks or prints it recursively: nlohmann::json parses and destroys deep documents without recursion,
// but copying or dumping them recurses once per level, and a tokenizer.json nested 40,000 deep overflowed the stack.
// Errors name the file (or `where`).
#pragma once
#include <nlohmann/json.hpp>

#include <string>

namespace cushion {

constexpr int kMaxJsonDepth = 128;

nlohmann::json read_json_file(const std::string& path);
nlohmann::json parse_json_text(const std::string& text, const std::string& where);
// The same keeping the keys in file order (files whose text is hashed, e.g. a package's quantization.json).
nlohmann::ordered_json read_ordered_json_file(const std::string& path);

// Throws Error naming `where` if `j` nests deeper than `limit` arrays/objects.
void check_json_depth(const nlohmann::json& j, const std::string& where, int limit = kMaxJsonDepth);
void check_json_depth(const nlohmann::ordered_json& j, const std::string& where, int limit = kMaxJsonDepth);

}  // namespace cushion
