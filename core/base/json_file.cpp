#include "base/json_file.h"

#include <cstdint>
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

// ---------------------------------------------------------------------------------------------- JsonFields

namespace {
std::string kind_of(const nlohmann::json& v) {
    if (v.is_null()) return "null";
    if (v.is_boolean()) return "true/false";
    if (v.is_number_integer() || v.is_number_unsigned()) return "a whole number";
    if (v.is_number_float()) return "a number";
    if (v.is_string()) return "a string";
    if (v.is_array()) return "an array";
    return "an object";
}
// The value for a message: short.
std::string shown(const nlohmann::json& v) {
    if (v.is_structured()) return kind_of(v);
    std::string d = v.dump();
    if (d.size() > 40) d = d.substr(0, 37) + "...";
    return d;
}
bool whole(const nlohmann::json& v, int64_t lo, int64_t hi, int64_t* out) {
    if (v.is_number_integer() && !v.is_number_unsigned()) {  // is_number_integer() is true for unsigned ones too
        const int64_t x = v.get<int64_t>();
        if (x < lo || x > hi) return false;
        *out = x;
        return true;
    }
    if (v.is_number_unsigned()) {
        const uint64_t x = v.get<uint64_t>();
        if (x > static_cast<uint64_t>(INT64_MAX) || static_cast<int64_t>(x) > hi || static_cast<int64_t>(x) < lo)
            return false;
        *out = static_cast<int64_t>(x);
        return true;
    }
    if (v.is_number_float()) {  // 3.0 is 3; 3.5 and 1e300 are not whole numbers in range
        const double d = v.get<double>();
        if (!(d >= -9007199254740992.0 && d <= 9007199254740992.0) || d != static_cast<double>(static_cast<int64_t>(d)))
            return false;
        const int64_t x = static_cast<int64_t>(d);
        if (x < lo || x > hi) return false;
        *out = x;
        return true;
    }
    return false;
}
std::string range_text(int64_t lo, int64_t hi) {
    if (lo == INT64_MIN && hi == INT64_MAX) return "";
    if (hi == INT64_MAX) return " >= " + std::to_string(lo);
    if (lo == INT64_MIN) return " <= " + std::to_string(hi);
    return " in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
}
}  // namespace

JsonFields::JsonFields(const nlohmann::json& j, std::string where, std::string path)
    : j_(&j), where_(std::move(where)), path_(std::move(path)) {}

std::string JsonFields::field(const std::string& key) const {
    if (key.empty()) return path_;
    if (!key.empty() && key[0] == '[') return path_ + key;
    return path_.empty() ? key : path_ + "." + key;
}

void JsonFields::fail(const std::string& key, const std::string& what) const {
    const std::string f = field(key);
    throw Error(where_ + ": " + (f.empty() ? std::string("the document") : "field '" + f + "'") + " " + what);
}

bool JsonFields::has(const std::string& key) const {
    return j_->is_object() && j_->contains(key) && !(*j_)[key].is_null();
}

const nlohmann::json& JsonFields::member(const std::string& key) const {
    if (!j_->is_object()) fail("", "must be an object, it is " + kind_of(*j_));
    auto it = j_->find(key);
    if (it == j_->end() || it->is_null()) fail(key, "is missing");
    return *it;
}

JsonFields JsonFields::object(const std::string& key) const {
    const nlohmann::json& v = member(key);
    if (!v.is_object()) fail(key, "must be an object, it is " + shown(v));
    return JsonFields(v, where_, field(key));
}

JsonFields JsonFields::array(const std::string& key) const {
    const nlohmann::json& v = member(key);
    if (!v.is_array()) fail(key, "must be an array, it is " + shown(v));
    return JsonFields(v, where_, field(key));
}

size_t JsonFields::size() const { return j_->is_structured() ? j_->size() : 0; }

JsonFields JsonFields::at(size_t i) const {
    const std::string key = "[" + std::to_string(i) + "]";
    if (!j_->is_array() || i >= j_->size()) fail(key, "is missing");
    const nlohmann::json& v = (*j_)[i];
    if (!v.is_structured()) fail(key, "must be an object, it is " + shown(v));
    return JsonFields(v, where_, field(key));
}

int64_t JsonFields::integer(const std::string& key, int64_t lo, int64_t hi) const {
    const nlohmann::json& v = member(key);
    int64_t x = 0;
    if (!whole(v, lo, hi, &x)) fail(key, "must be a whole number" + range_text(lo, hi) + ", it is " + shown(v));
    return x;
}

double JsonFields::number(const std::string& key) const {
    const nlohmann::json& v = member(key);
    if (!v.is_number()) fail(key, "must be a number, it is " + shown(v));
    return v.get<double>();
}

bool JsonFields::boolean(const std::string& key) const {
    const nlohmann::json& v = member(key);
    if (!v.is_boolean()) fail(key, "must be true or false, it is " + shown(v));
    return v.get<bool>();
}

std::string JsonFields::string(const std::string& key) const {
    const nlohmann::json& v = member(key);
    if (!v.is_string()) fail(key, "must be a string, it is " + shown(v));
    return v.get<std::string>();
}

std::vector<int64_t> JsonFields::integers(const std::string& key, int64_t lo, int64_t hi) const {
    const nlohmann::json& v = member(key);
    if (!v.is_array()) fail(key, "must be an array of whole numbers, it is " + shown(v));
    std::vector<int64_t> out;
    out.reserve(v.size());
    for (size_t i = 0; i < v.size(); ++i) {
        int64_t x = 0;
        if (!whole(v[i], lo, hi, &x))
            fail(key + "[" + std::to_string(i) + "]", "must be a whole number" + range_text(lo, hi) + ", it is " + shown(v[i]));
        out.push_back(x);
    }
    return out;
}

int64_t JsonFields::integer_or(const std::string& key, int64_t def, int64_t lo, int64_t hi) const {
    return has(key) ? integer(key, lo, hi) : def;
}
double JsonFields::number_or(const std::string& key, double def) const { return has(key) ? number(key) : def; }
bool JsonFields::boolean_or(const std::string& key, bool def) const { return has(key) ? boolean(key) : def; }
std::string JsonFields::string_or(const std::string& key, const std::string& def) const {
    return has(key) ? string(key) : def;
}

}  // namespace cushion
