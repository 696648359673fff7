// A read-only memory-mapped file and a bounds-checked cursor over it. Every read past the end is an
// Error naming the file, the offset and what was being read.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

#include "base/error.h"

namespace cushion {

class MappedFile {
public:
    explicit MappedFile(const std::string& path);  // throws Error if missing / unreadable
    ~MappedFile();
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;

    const uint8_t* data() const { return data_; }
    uint64_t size() const { return size_; }
    const std::string& path() const { return path_; }
    // Throws Error unless [offset, offset + bytes) lies inside the file.
    void check_range(uint64_t offset, uint64_t bytes, const std::string& what) const;

private:
    std::string path_;
    const uint8_t* data_ = nullptr;
    uint64_t size_ = 0;
};

class ByteReader {
public:
    explicit ByteReader(const MappedFile& f, uint64_t offset = 0) : f_(f), pos_(offset) {}
    template <typename T>
    T read(const char* what) {
        f_.check_range(pos_, sizeof(T), what);
        T v;
        std::memcpy(&v, f_.data() + pos_, sizeof(T));
        pos_ += sizeof(T);
        return v;
    }
    // A length-prefixed (uint64) string, at most max_len bytes.
    std::string read_string(const char* what, uint64_t max_len = 1u << 20);
    std::string read_bytes(uint64_t n, const char* what);
    uint64_t pos() const { return pos_; }
    void seek(uint64_t p) { pos_ = p; }
    const MappedFile& file() const { return f_; }

private:
    const MappedFile& f_;
    uint64_t pos_;
};

}  // namespace cushion
