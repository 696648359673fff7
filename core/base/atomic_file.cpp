#include "base/atomic_file.h"

#include <cstdlib>

#include <csignal>
#include <cctype>

#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
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

// >0 while a write_directory_atomically fill runs on this thread: the files written inside the temporary
// directory do not each say "nothing was left behind"; the directory's message says it once.
thread_local int g_directory_depth = 0;

std::string parent_of(const std::string& path) {
    const fs::path parent = fs::path(path).parent_path();
    return parent.empty() ? std::string(".") : parent.string();
}

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
        if (errno != EEXIST)
            throw Error(path + ": cannot create a temporary file in " + parent_of(path) + ": " + sys_error());
    }
    throw Error(path + ": cannot find a free temporary file name in " + parent_of(path));
}

void fsync_path(const std::string& path, const std::string& name, bool directory) {
    int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
    if (fd < 0) {
        if (directory) return;  // best effort for directories
        throw Error(name + ": cannot reopen to flush: " + sys_error());
    }
    int rc = ::fsync(fd);
    std::string e = rc != 0 ? sys_error() : std::string();
    const bool closed = ::close(fd) == 0;
    if (!closed && rc == 0) e = sys_error();
    if ((rc != 0 || !closed) && !directory) throw Error(name + ": flushing to disk failed: " + e);
}

void remove_quietly(const std::string& p) {
    std::error_code ec;
    fs::remove(p, ec);
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
    if (from.empty()) return;
    for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
        s.replace(at, from.size(), to);
}

// "PATH: not written (...): CAUSE", the temporary name replaced by PATH and a leading "PATH: " dropped from CAUSE.
Error not_written(const std::string& path, const std::string& tmp, bool existed, std::string cause) {
    replace_all(cause, tmp, path);
    if (cause.rfind(path + ": ", 0) == 0) cause.erase(0, path.size() + 2);
    if (g_directory_depth > 0) return Error(path + ": " + cause);  // the directory's message says "not written"
    const std::string state = existed ? "the previous file is unchanged" : "nothing was left behind";
    return Error(path + ": not written (" + state + "): " + cause);
}

// The common frame: a temporary beside `path`, `body(tmp)` writes it (and flushes it to disk), then the rename.
void replace_with(const std::string& path, const std::function<void(const std::string& tmp)>& body) {
    require_replaceable_target(path);
    std::error_code ec;
    const bool existed = fs::exists(path, ec);
    std::string tmp;
    try {
        tmp = make_temp_beside(path);
    } catch (const Error& e) {
        throw not_written(path, path, existed, e.what());
    }
    try {
        body(tmp);
        if (::rename(tmp.c_str(), path.c_str()) != 0)
            throw Error(path + ": cannot rename the temporary file " + tmp + " over it: " + sys_error());
    } catch (const Cancelled&) {
        remove_quietly(tmp);
        throw;
    } catch (const std::exception& e) {  // Error, std::filesystem_error, std::bad_alloc, libtorch's c10::Error ...
        remove_quietly(tmp);
        throw not_written(path, tmp, existed, e.what());
    } catch (...) {
        remove_quietly(tmp);
        throw;
    }
    fsync_path(parent_of(path), parent_of(path), true);
}

}  // namespace

OutputFile::OutputFile(const std::string& path, const std::string& name) : name_(name) {
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd_ < 0) throw Error(name_ + ": cannot open for writing: " + sys_error());
}

OutputFile::~OutputFile() {
    if (fd_ >= 0) ::close(fd_);
}

void OutputFile::write(const void* data, size_t bytes) {
    if (fd_ < 0) throw Error(name_ + ": write after the file was closed");
    const char* p = static_cast<const char*>(data);
    while (bytes > 0) {
        const size_t chunk = std::min<size_t>(bytes, size_t(1) << 30);
        const ssize_t n = ::write(fd_, p, chunk);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw Error(name_ + ": write failed: " + sys_error());
        }
        if (n == 0) throw Error(name_ + ": write failed: no progress (0 bytes written)");
        p += n;
        bytes -= static_cast<size_t>(n);
    }
}

void OutputFile::finish() {
    if (fd_ < 0) return;
    const int fd = fd_;
    fd_ = -1;
    if (::fsync(fd) != 0) {
        const std::string e = sys_error();
        ::close(fd);
        throw Error(name_ + ": flushing to disk failed: " + e);
    }
    if (::close(fd) != 0) throw Error(name_ + ": closing failed: " + sys_error());
}

void write_atomically(const std::string& path, const std::function<void(const std::string& tmp_path)>& write) {
    replace_with(path, [&](const std::string& tmp) {
        write(tmp);
        fsync_path(tmp, path, false);
    });
}

void write_file_atomically(const std::string& path, const std::function<void(OutputFile& out)>& write) {
    replace_with(path, [&](const std::string& tmp) {
        OutputFile out(tmp, path);
        write(out);
        out.finish();
    });
}

void write_text_atomically(const std::string& path, const std::string& text) {
    write_file_atomically(path, [&](OutputFile& out) { out.write(text); });
}

namespace {

// A fresh name ".NAME.old-PID-N" beside `path` made a hard link to it (the previous file kept while a set of files
// is renamed into place). Empty when the file system refuses hard links (the rollback then cannot put it back).
std::string link_backup(const std::string& path) {
    static std::atomic<uint64_t> counter{0};
    const fs::path target(path);
    for (int attempt = 0; attempt < 100; ++attempt) {
        const std::string name = "." + target.filename().string() + ".old-" + std::to_string(::getpid()) + "-" +
                                 std::to_string(counter.fetch_add(1));
        const std::string backup = (target.parent_path() / name).string();
        if (::link(path.c_str(), backup.c_str()) == 0) return backup;
        if (errno != EEXIST) return std::string();
    }
    return std::string();
}

}  // namespace

int remove_stale_temps(const std::string& path) {
    const fs::path target(path);
    const std::string base = "." + target.filename().string() + ".";
    const std::string nested = "." + base;  // a temporary's own temporary (a writer that writes atomically itself)
    std::error_code ec;
    fs::directory_iterator it(parent_of(path), ec), end;
    int removed = 0;
    for (; !ec && it != end; it.increment(ec)) {
        const std::string name = it->path().filename().string();
        const size_t skip = name.rfind(base, 0) == 0 ? base.size() : name.rfind(nested, 0) == 0 ? nested.size() : 0;
        if (skip == 0) continue;
        const std::string rest = name.substr(skip);
        if (rest.rfind("tmp-", 0) != 0 && rest.rfind("old-", 0) != 0) continue;
        size_t at = 4, digits = 0;
        while (at + digits < rest.size() && std::isdigit(static_cast<unsigned char>(rest[at + digits]))) ++digits;
        if (digits == 0 || digits > 9 || at + digits >= rest.size() || rest[at + digits] != '-') continue;
        const pid_t pid = static_cast<pid_t>(std::stol(rest.substr(at, digits)));
        if (pid == ::getpid() || pid <= 0) continue;
        if (::kill(pid, 0) == 0 || errno != ESRCH) continue;  // running (or not ours to ask): maybe still writing
        std::error_code rec;
        if (fs::remove(it->path(), rec)) ++removed;
    }
    return removed;
}

void write_files_together(const std::vector<FileToWrite>& files) {
    const size_t n = files.size();
    std::vector<std::string> tmps(n), backups(n);
    std::vector<bool> existed(n, false);
    const std::string none = "none of the " + std::to_string(n) + " files was changed";
    auto cleanup = [&] {
        for (const std::string& t : tmps)
            if (!t.empty()) remove_quietly(t);
        for (const std::string& b : backups)
            if (!b.empty()) remove_quietly(b);
    };
    // 1. Every file into its temporary, flushed to disk; nothing replaced yet.
    size_t i = 0;
    try {
        for (i = 0; i < n; ++i) {
            const std::string& path = files[i].path;
            remove_stale_temps(path);
            require_replaceable_target(path);
            std::error_code ec;
            existed[i] = fs::exists(path, ec);
            tmps[i] = make_temp_beside(path);
            {
                // A writer that writes atomically itself (save_safetensors) says the cause once: this message
                // says "not written".
                struct Depth {
                    Depth() { ++g_directory_depth; }
                    ~Depth() { --g_directory_depth; }
                } inside;
                files[i].write(tmps[i]);
            }
            fsync_path(tmps[i], path, false);
        }
    } catch (const Cancelled&) {
        cleanup();
        throw;
    } catch (const std::exception& e) {
        cleanup();
        std::string cause = e.what();
        const std::string& path = files[std::min(i, n - 1)].path;
        if (i < n && !tmps[i].empty()) replace_all(cause, tmps[i], path);
        if (cause.rfind(path + ": ", 0) == 0) cause.erase(0, path.size() + 2);
        throw Error(path + ": not written (" + none + "): " + cause);
    } catch (...) {
        cleanup();
        throw;
    }
    // 2. The previous files kept as hard links, then the renames in order; a failed rename puts the set back.
    for (i = 0; i < n; ++i)
        if (existed[i]) backups[i] = link_backup(files[i].path);
    for (i = 0; i < n; ++i) {
        if (::rename(tmps[i].c_str(), files[i].path.c_str()) == 0) {
            tmps[i].clear();
            continue;
        }
        const std::string cause = sys_error();
        bool restored = true;
        for (size_t j = 0; j < i; ++j) {
            if (!existed[j]) {
                restored = ::unlink(files[j].path.c_str()) == 0 && restored;
            } else if (backups[j].empty() || ::rename(backups[j].c_str(), files[j].path.c_str()) != 0) {
                restored = false;
            } else {
                backups[j].clear();
            }
        }
        cleanup();
        fsync_path(parent_of(files[i].path), parent_of(files[i].path), true);
        throw Error(files[i].path + ": not written (" +
                    (restored ? none : "the files renamed before it could not all be put back") +
                    "): cannot rename the temporary file over it: " + cause);
    }
    for (const std::string& b : backups)
        if (!b.empty()) remove_quietly(b);
    for (const FileToWrite& f : files) fsync_path(parent_of(f.path), parent_of(f.path), true);
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
    const bool existed = fs::exists(target, ec);
    const std::string state =
        existed ? std::string("the existing directory is unchanged") : std::string("nothing was left behind");
    if (!mkdtemp(buf.data()))
        throw Error(dir + ": not written (" + state + "): cannot create a temporary directory in " + parent.string() +
                    ": " + sys_error());
    const fs::path tmp(buf.data());
    // A failure inside: say which directory was not written and that nothing changed, then the cause, which names
    // the file inside the directory as it would have been (the temporary directory's name replaced by `dir`),
    // e.g. "pkg: not written (nothing was left behind): pkg/model.safetensors: write failed: File too large".
    auto failed = [&](std::string what) {
        replace_all(what, tmp.string(), dir);
        if (what.rfind(dir + ": ", 0) == 0) what.erase(0, dir.size() + 2);
        return Error(dir + ": not written (" + state + "): " + what);
    };
    struct Depth {
        Depth() { ++g_directory_depth; }
        ~Depth() { --g_directory_depth; }
    };
    try {
        fs::permissions(tmp, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                 fs::perms::others_read | fs::perms::others_exec, ec);
        {
            Depth inside;
            fill(tmp);
        }
        if (fs::exists(target, ec)) {
            std::string old_tmpl = (parent / ("." + target.filename().string() + ".old-XXXXXX")).string();
            std::vector<char> ob(old_tmpl.begin(), old_tmpl.end());
            ob.push_back('\0');
            if (!mkdtemp(ob.data()))
                throw Error(dir + ": cannot create a temporary name in " + parent.string() + ": " + sys_error());
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
    fsync_path(parent.string(), parent.string(), true);
}

}  // namespace cushion
