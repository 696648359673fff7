#include "json_file.h"

#include <utility>
#include <vector>

#include "atomic_file.h"
#include "error.h"

namespace cushion {

void check_json_depth(const nlohmann::json& j, const std::string& where, int limit) {
    std::vector<std::pair<const nlohmann::json*, int>> todo{{&j, 1}};
    while (!todo.empty()) {
        const auto [node, depth] = todo.back();
        todo.pop_back();
        if (!node->is_structured()) continue;
        if (depth > limit) throw Error(where + ": JSON nested more than " + std::to_string(limit) + " levels deep");
        for (const auto& child : *node) todo.push_back({&child, depth + 1});
    }
}

nlohmann::json parse_json_text(const std::string& text, const std::string& where) {
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
        throw Error(where + ": invalid JSON: " + e.what());
    }
    check_json_depth(j, where);
    return j;
}

nlohmann::json read_json_file(const std::string& path) { return parse_json_text(read_text_file(path), path); }

}  // namespace cushion
