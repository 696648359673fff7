#include "base/json_file.h"

#include <utility>
#include <vector>

#include "base/atomic_file.h"
#include "base/error.h"

namespace cushion {

namespace {

template <class Json>
void check_depth(const Json& j, const std::string& where, int limit) {
    std::vector<std::pair<const Json*, int>> todo{{&j, 1}};
    while (!todo.empty()) {
        const auto [node, depth] = todo.back();
        todo.pop_back();
        if (!node->is_structured()) continue;
        if (depth > limit) throw Error(where + ": JSON nested more than " + std::to_string(limit) + " levels deep");
        for (const auto& child : *node) todo.push_back({&child, depth + 1});
    }
}

template <class Json>
Json parse_text(const std::string& text, const std::string& where) {
    Json j;
    try {
        j = Json::parse(text);
    } catch (const nlohmann::json::exception& e) {
        throw Error(where + ": invalid JSON: " + e.what());
    }
    check_depth(j, where, kMaxJsonDepth);
    return j;
}

}  // namespace

void check_json_depth(const nlohmann::json& j, const std::string& where, int limit) { check_depth(j, where, limit); }
void check_json_depth(const nlohmann::ordered_json& j, const std::string& where, int limit) {
    check_depth(j, where, limit);
}

nlohmann::json parse_json_text(const std::string& text, const std::string& where) {
    return parse_text<nlohmann::json>(text, where);
}

nlohmann::ordered_json read_ordered_json_file(const std::string& path) {
    return parse_text<nlohmann::ordered_json>(read_text_file(path), path);
}

nlohmann::json read_json_file(const std::string& path) { return parse_json_text(read_text_file(path), path); }

}  // namespace cushion
