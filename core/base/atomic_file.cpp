#include "base/atomic_file.h"

#include <cstdlib>

#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "base/error.h"
#include "base/file_checks.h"

namespace cushion {

namespace fs = std::filesystem;

namespace {

std::string sys_error() { return std::strerror(errno); }

// A fresh name beside `path` that no one else is using: created empty (O_EXCL) so it is ours.
std::string make_temp_beside(const std::string& path) {
    static std::atomic<uint64_t> counter{0};
    const fs::path target(path);
    const std::string base = target.filename().string();
    for (int attempt = 0; attempt < 100; ++attempt) {
        const uint64_t salt = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
        std::ostringstream name;
        name << "." << base << ".tmp-" << ::getpid() << "-" << counter.fetch_add(1) << "-" << std::hex
             << (salt & 0xffffff);
        const std::string tmp = (target.parent_path() / name.str()).string();
        int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd >= 0) {
            ::close(fd);
            return tmp;
        }
        if (errno != EEXIST) throw Error(path + ": cannot create a temporary file beside it: " + sys_error());
    }
    throw Error(path + ": cannot find a free temporary file name beside it");
}

void fsync_path(const std::string& path, bool directory) {
    int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
    if (fd < 0) {
        if (directory) return;  // best effort for directories
        throw Error(path + ": cannot reopen to flush: " + sys_error());
    }
    int rc = ::fsync(fd);
    std::string e = rc != 0 ? sys_error() : std::string();
    ::close(fd);
    if (rc != 0 && !directory) throw Error(path + ": fsync failed: " + e);
}

void remove_quietly(const std::string& p) {
    std::error_code ec;
    fs::remove(p, ec);
}

}  // namespace

void write_atomically(const std::string& path, const std::function<void(const std::string& tmp_path)>& write) {
    require_replaceable_target(path);
    const std::string tmp = make_temp_beside(path);
    try {
        write(tmp);
        fsync_path(tmp, false);
        if (::rename(tmp.c_str(), path.c_str()) != 0)
            throw Error(path + ": cannot rename the temporary file " + tmp + " over it: " + sys_error());
    } catch (const Error&) {
        remove_quietly(tmp);
        throw;
    } catch (const std::exception& e) {
        remove_quietly(tmp);
        throw Error(path + ": writing failed: " + e.what());
    } catch (...) {
        remove_quietly(tmp);
        throw;
    }
    const fs::path parent = fs::path(path).parent_path();
    fsync_path(parent.empty() ? std::string(".") : parent.string(), true);
}

void write_text_atomically(const std::string& path, const std::string& text) {
    write_atomically(path, [&](const std::string& tmp) {
        FILE* f = std::fopen(tmp.c_str(), "wb");
        if (!f) throw Error(tmp + ": cannot open for writing: " + sys_error());
        const size_t n = text.empty() ? 0 : std::fwrite(text.data(), 1, text.size(), f);
        const bool ok = n == text.size();
        const bool closed = std::fclose(f) == 0;
        if (!ok || !closed) throw Error(tmp + ": write failed: " + sys_error());
    });
}

std::string read_text_file(const std::string& path) {
    require_regular_file(path);
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(path + ": cannot open: " + sys_error());
    std::ostringstream ss;
    ss << in.rdbuf();
    if (in.bad()) throw Error(path + ": read failed");
    return ss.str();
}

// Creates a temporary directory beside `target`, lets `fill` write into it, then puts it in place (swapping out
// an existing target). Any exception (Cancelled included) removes the temporary directory.
void write_directory_atomically(const std::string& dir, bool overwrite,
                                const std::function<void(const std::filesystem::path&)>& fill) {
    fs::path target(dir);
    fs::path parent = target.parent_path();
    if (parent.empty()) parent = ".";
    std::error_code ec;
    if (fs::is_symlink(target, ec)) throw Error(dir + ": is a symbolic link; refusing to replace it");
    if (fs::exists(target, ec)) {
        if (!fs::is_directory(target, ec)) throw Error(dir + ": exists and is not a directory");
        if (!overwrite) throw Error(dir + ": exists; pass --force to replace it");
    }
    fs::create_directories(parent, ec);
    if (ec) throw Error(parent.string() + ": cannot create directory: " + ec.message());
    std::string tmpl = (parent / ("." + target.filename().string() + ".tmp-XXXXXX")).string();
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (!mkdtemp(buf.data())) throw Error(dir + ": cannot create a temporary directory beside it");
    const fs::path tmp(buf.data());
    const bool existed = fs::exists(target, ec);
    // A failure inside: say which directory was not written and that nothing changed, then the cause (which names
    // the file inside the temporary directory, e.g. "...: write failed: No space left on device").
    auto failed = [&](const std::string& what) {
        return Error(dir + ": not written (" +
                     (existed ? std::string("the existing directory is unchanged") : std::string("nothing was left behind")) +
                     "): " + what);
    };
    try {
        fs::permissions(tmp, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                 fs::perms::others_read | fs::perms::others_exec, ec);
        fill(tmp);
        if (fs::exists(target, ec)) {
            std::string old_tmpl = (parent / ("." + target.filename().string() + ".old-XXXXXX")).string();
            std::vector<char> ob(old_tmpl.begin(), old_tmpl.end());
            ob.push_back('\0');
            if (!mkdtemp(ob.data())) throw Error(dir + ": cannot create a temporary name beside it");
            const fs::path old(ob.data());
            fs::rename(target, old / "d", ec);
            if (ec) {
                std::error_code ec2;
                fs::remove_all(old, ec2);
                throw Error(dir + ": cannot move the old directory aside: " + ec.message());
            }
            fs::rename(tmp, target, ec);
            if (ec) {
                std::error_code ec2;
                fs::rename(old / "d", target, ec2);
                fs::remove_all(old, ec2);
                throw Error(dir + ": cannot rename the new directory into place: " + ec.message());
            }
            fs::remove_all(old, ec);
        } else {
            fs::rename(tmp, target, ec);
            if (ec) throw Error(dir + ": cannot rename the new directory into place: " + ec.message());
        }
    } catch (const Cancelled&) {
        std::error_code ec2;
        fs::remove_all(tmp, ec2);
        throw;
    } catch (const Error& e) {
        std::error_code ec2;
        fs::remove_all(tmp, ec2);
        throw failed(e.what());
    } catch (const std::exception& e) {  // e.g. std::filesystem_error from a copy into the full disk
        std::error_code ec2;
        fs::remove_all(tmp, ec2);
        throw failed(e.what());
    } catch (...) {
        std::error_code ec2;
        fs::remove_all(tmp, ec2);
        throw;
    }
}

}  // namespace cushion
