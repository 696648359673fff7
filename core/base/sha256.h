// SHA-256 (FIPS 180-4), for file hashes in exported packages and model fingerprints.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace cushion {

class Sha256 {
public:
    Sha256();
    void update(const void* data, size_t len);
    void update(const std::string& s) { update(s.data(), s.size()); }
    std::string hex_digest();  // finishes; the object must not be updated afterwards

private:
    void block(const uint8_t* p);
    uint32_t h_[8];
    uint8_t buf_[64];
    size_t buf_len_ = 0;
    uint64_t total_ = 0;
};

std::string sha256_hex(const std::string& data);
std::string sha256_file(const std::string& path);  // throws Error if unreadable

}  // namespace cushion
