#include "formats/safetensors.h"

#include <ATen/ATen.h>

#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "base/atomic_file.h"
#include "base/error.h"

namespace cushion {

namespace {

using json = nlohmann::json;

constexpr uint64_t kMaxHeader = 100ull << 20;  // 100 MB, as the reference implementation

struct DtypeInfo {
    const char* name;
    uint64_t size;
    bool supported;  // representable as an ATen tensor here
    at::ScalarType type;
};

// Every dtype the safetensors format defines; the ones ATen cannot hold are validated but not loadable.
const DtypeInfo kDtypes[] = {
    {"F64", 8, true, at::kDouble},   {"F32", 4, true, at::kFloat},   {"F16", 2, true, at::kHalf},
    {"BF16", 2, true, at::kBFloat16}, {"I64", 8, true, at::kLong},   {"I32", 4, true, at::kInt},
    {"I16", 2, true, at::kShort},    {"I8", 1, true, at::kChar},     {"U8", 1, true, at::kByte},
    {"BOOL", 1, true, at::kBool},    {"U16", 2, false, at::kByte},   {"U32", 4, false, at::kByte},
    {"U64", 8, false, at::kByte},    {"F8_E4M3", 1, false, at::kByte}, {"F8_E5M2", 1, false, at::kByte},
};

const DtypeInfo* find_dtype(const std::string& name) {
    for (const auto& d : kDtypes)
        if (name == d.name) return &d;
    return nullptr;
}

const DtypeInfo* find_dtype(at::ScalarType t) {
    for (const auto& d : kDtypes)
        if (d.supported && d.type == t) return &d;
    return nullptr;
}

std::string shape_str(const std::vector<int64_t>& s) {
    std::string r = "[";
    for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + "]";
}

}  // namespace

SafetensorsFile::SafetensorsFile(const std::string& path) : file_(std::make_unique<MappedFile>(path)) {
    const MappedFile& f = *file_;
    ByteReader r(f);
    const uint64_t header_len = r.read<uint64_t>("safetensors header length");
    if (header_len > f.size() - 8)
        throw Error(path + ": offset 0: header length " + std::to_string(header_len) + " is larger than the file (" +
                    std::to_string(f.size()) + " bytes); the file is truncated or not safetensors");
    if (header_len > kMaxHeader)
        throw Error(path + ": offset 0: header length " + std::to_string(header_len) + " exceeds the 100 MB limit");
    const uint64_t data_start = 8 + header_len;
    const uint64_t data_size = f.size() - data_start;

    json header;
    try {
        header = json::parse(reinterpret_cast<const char*>(f.data()) + 8,
                             reinterpret_cast<const char*>(f.data()) + data_start);
    } catch (const json::exception& e) {
        throw Error(path + ": offset 8: the JSON header does not parse: " + e.what());
    }
    if (!header.is_object()) throw Error(path + ": offset 8: the JSON header is not an object");

    for (auto it = header.begin(); it != header.end(); ++it) {
        const std::string& name = it.key();
        const json& v = it.value();
        if (name == "__metadata__") {
            if (!v.is_object()) throw Error(path + ": __metadata__ is not an object");
            for (auto m = v.begin(); m != v.end(); ++m) {
                if (!m.value().is_string())
                    throw Error(path + ": __metadata__ entry '" + m.key() + "' is not a string");
                metadata_[m.key()] = m.value().get<std::string>();
            }
            continue;
        }
        const std::string where = path + ": tensor '" + name + "'";
        if (!v.is_object()) throw Error(where + ": entry is not an object");
        if (!v.contains("dtype") || !v["dtype"].is_string()) throw Error(where + ": missing or invalid 'dtype'");
        if (!v.contains("shape") || !v["shape"].is_array()) throw Error(where + ": missing or invalid 'shape'");
        if (!v.contains("data_offsets") || !v["data_offsets"].is_array() || v["data_offsets"].size() != 2)
            throw Error(where + ": missing or invalid 'data_offsets' (want [begin, end])");
        Entry e;
        e.dtype = v["dtype"].get<std::string>();
        const DtypeInfo* dt = find_dtype(e.dtype);
        if (!dt) throw Error(where + ": unknown dtype '" + e.dtype + "'");
        if (v["shape"].size() > 16) throw Error(where + ": too many dimensions (" + std::to_string(v["shape"].size()) + ")");
        uint64_t numel = 1;
        bool overflow = false;
        for (const auto& d : v["shape"]) {
            if (!d.is_number_unsigned() && !(d.is_number_integer() && d.get<int64_t>() >= 0))
                throw Error(where + ": shape " + v["shape"].dump() + " has a non-integer or negative dimension");
            const uint64_t dim = d.get<uint64_t>();
            if (dim > (uint64_t(1) << 62)) throw Error(where + ": dimension " + std::to_string(dim) + " is absurd");
            e.shape.push_back(static_cast<int64_t>(dim));
            if (dim != 0 && numel > UINT64_MAX / dim) overflow = true;
            numel *= dim;
        }
        for (const auto& o : v["data_offsets"])
            if (!o.is_number_unsigned() && !(o.is_number_integer() && o.get<int64_t>() >= 0))
                throw Error(where + ": data_offsets " + v["data_offsets"].dump() + " are not non-negative integers");
        const uint64_t begin = v["data_offsets"][0].get<uint64_t>(), end = v["data_offsets"][1].get<uint64_t>();
        if (begin > end)
            throw Error(where + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                        "] end before they begin");
        if (end > data_size)
            throw Error(where + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                        "] run past the end of the data section (" + std::to_string(data_size) +
                        " bytes at offset " + std::to_string(data_start) + "); the file is truncated?");
        if (overflow || numel > UINT64_MAX / dt->size || numel * dt->size != end - begin)
            throw Error(where + ": shape " + shape_str(e.shape) + " of " + e.dtype + " needs " +
                        (overflow || numel > UINT64_MAX / dt->size ? std::string("more than 2^64")
                                                                   : std::to_string(numel * dt->size)) +
                        " bytes but data_offsets span " + std::to_string(end - begin));
        e.begin = data_start + begin;
        e.end = data_start + end;
        entries_.emplace(name, std::move(e));
    }
}

std::vector<std::string> SafetensorsFile::names() const {
    std::vector<std::string> r;
    r.reserve(entries_.size());
    for (const auto& kv : entries_) r.push_back(kv.first);
    return r;
}

bool SafetensorsFile::contains(const std::string& name) const { return entries_.count(name) != 0; }

std::vector<int64_t> SafetensorsFile::shape(const std::string& name) const {
    auto it = entries_.find(name);
    if (it == entries_.end()) throw Error(path() + ": no tensor named '" + name + "'");
    return it->second.shape;
}

at::Tensor SafetensorsFile::get(const std::string& name) const {
    auto it = entries_.find(name);
    if (it == entries_.end()) throw Error(path() + ": no tensor named '" + name + "'");
    const Entry& e = it->second;
    const DtypeInfo* dt = find_dtype(e.dtype);
    if (!dt || !dt->supported)
        throw Error(path() + ": tensor '" + name + "' has dtype " + e.dtype + ", which is not supported");
    file_->check_range(e.begin, e.end - e.begin, "data of tensor '" + name + "'");
    at::Tensor t = at::empty(e.shape, at::TensorOptions().dtype(dt->type).device(at::kCPU));
    if (e.end > e.begin) std::memcpy(t.data_ptr(), file_->data() + e.begin, e.end - e.begin);
    return t;
}

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
    // Header first: names, dtypes, shapes and offsets in the order given.
    nlohmann::ordered_json header = nlohmann::ordered_json::object();
    if (!metadata.empty()) {
        nlohmann::ordered_json m = nlohmann::ordered_json::object();
        for (const auto& kv : metadata) m[kv.first] = kv.second;
        header["__metadata__"] = m;
    }
    std::set<std::string> seen;
    std::vector<at::Tensor> cpu;
    cpu.reserve(tensors.size());
    uint64_t offset = 0;
    for (const auto& [name, t] : tensors) {
        if (name.empty() || name == "__metadata__") throw Error(path + ": invalid tensor name '" + name + "'");
        if (!seen.insert(name).second) throw Error(path + ": tensor '" + name + "' appears twice");
        if (!t.defined()) throw Error(path + ": tensor '" + name + "' is undefined");
        const DtypeInfo* dt = find_dtype(t.scalar_type());
        if (!dt)
            throw Error(path + ": tensor '" + name + "' has dtype " + std::string(c10::toString(t.scalar_type())) +
                        ", which safetensors cannot store here");
        at::Tensor c = t.detach().to(at::kCPU).contiguous();
        const uint64_t bytes = static_cast<uint64_t>(c.numel()) * dt->size;
        nlohmann::ordered_json entry;
        entry["dtype"] = dt->name;
        entry["shape"] = c.sizes().vec();
        entry["data_offsets"] = {offset, offset + bytes};
        header[name] = entry;
        offset += bytes;
        cpu.push_back(std::move(c));
    }
    std::string h = header.dump();
    while ((8 + h.size()) % 8 != 0) h.push_back(' ');
    const uint64_t hlen = h.size();

    write_file_atomically(path, [&](OutputFile& out) {
        out.write(&hlen, 8);
        out.write(h);
        for (const auto& c : cpu) {
            const size_t bytes = static_cast<size_t>(c.numel()) * c.element_size();
            if (bytes) out.write(c.data_ptr(), bytes);
        }
    });
}

std::string SafetensorsFile::meta(const std::string& key) const {
    auto it = metadata_.find(key);
    return it == metadata_.end() ? std::string() : it->second;
}

void SafetensorsFile::require_format(const std::string& tag, const std::string& what) const {
    if (meta("format") != tag) throw Error(path() + ": not a " + what + " (no " + tag + " format tag)");
    if (meta("version") != "1") throw Error(path() + ": " + what + " version '" + meta("version") + "' is not supported");
}

}  // namespace cushion
