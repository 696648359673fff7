// safetensors: an 8-byte little-endian header length, a JSON header
// {"name": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, "__metadata__": {...}},
// then the raw data. Reader validates every entry against the file; writer is atomic.
#pragma once
#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/mapped_file.h"

namespace cushion {

class SafetensorsFile {
public:
    explicit SafetensorsFile(const std::string& path);  // maps the file, parses and validates the header
    std::vector<std::string> names() const;
    bool contains(const std::string& name) const;
    // A CPU tensor; F32/F16/BF16/I8/U8/I32/I64 are supported, copied out of the mapping.
    at::Tensor get(const std::string& name) const;
    std::vector<int64_t> shape(const std::string& name) const;
    const std::map<std::string, std::string>& metadata() const { return metadata_; }
    // A metadata value; "" when absent.
    std::string meta(const std::string& key) const;
    // The project's own files (cushion, tuner state, checkpoint) say what they are in their metadata: "format" must
    // be `tag` and "version" "1", else an Error "PATH: not a WHAT (no TAG format tag)" / "WHAT version 'V' is not
    // supported".
    void require_format(const std::string& tag, const std::string& what) const;
    const std::string& path() const { return file_->path(); }

private:
    struct Entry {
        std::string dtype;
        std::vector<int64_t> shape;
        uint64_t begin = 0, end = 0;  // absolute offsets in the file
    };
    std::unique_ptr<MappedFile> file_;
    std::map<std::string, Entry> entries_;
    std::map<std::string, std::string> metadata_;
};

// Writes tensors (any device; saved contiguous in their dtype) with string metadata, atomically.
void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace cushion
