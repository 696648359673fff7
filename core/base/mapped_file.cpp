#include "base/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/file_checks.h"

namespace cushion {

namespace {
std::string sys_error() { return std::strerror(errno); }
}  // namespace

MappedFile::MappedFile(const std::string& path) : path_(path) {
    // O_NONBLOCK: opening a named pipe with no writer returns at once (then refused below) instead of blocking.
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) throw Error(path + ": cannot open: " + sys_error());
    struct stat st;
    if (::fstat(fd, &st) != 0) {
        std::string e = sys_error();
        ::close(fd);
        throw Error(path + ": cannot stat: " + e);
    }
    if (!S_ISREG(st.st_mode)) {
        ::close(fd);
        throw Error(path + ": is " + file_kind(st.st_mode) + ", not a regular file");
    }
    size_ = static_cast<uint64_t>(st.st_size);
    if (size_ > 0) {
        void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            std::string e = sys_error();
            ::close(fd);
            throw Error(path + ": cannot map " + std::to_string(size_) + " bytes: " + e);
        }
        data_ = static_cast<const uint8_t*>(p);
    }
    ::close(fd);  // the mapping keeps the file alive
}

MappedFile::~MappedFile() {
    if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

void MappedFile::check_range(uint64_t offset, uint64_t bytes, const std::string& what) const {
    if (offset > size_ || bytes > size_ - offset) {
        throw Error(path_ + ": offset " + std::to_string(offset) + ": " + what + " (" + std::to_string(bytes) +
                    " bytes) runs past the end of the file (" + std::to_string(size_) + " bytes)");
    }
}

std::string ByteReader::read_string(const char* what, uint64_t max_len) {
    const uint64_t at = pos_;
    const uint64_t n = read<uint64_t>(what);
    if (n > max_len) {
        pos_ = at;
        throw Error(f_.path() + ": offset " + std::to_string(at) + ": " + what + " has length " + std::to_string(n) +
                    ", more than the limit of " + std::to_string(max_len) + " bytes");
    }
    try {
        return read_bytes(n, what);
    } catch (...) {
        pos_ = at;
        throw;
    }
}

std::string ByteReader::read_bytes(uint64_t n, const char* what) {
    f_.check_range(pos_, n, what);
    std::string s(reinterpret_cast<const char*>(f_.data() + pos_), static_cast<size_t>(n));
    pos_ += n;
    return s;
}

}  // namespace cushion
