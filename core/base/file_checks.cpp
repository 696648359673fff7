#include "base/file_checks.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "base/error.h"

namespace cushion {

std::string file_kind(unsigned mode) {
    if (S_ISREG(mode)) return "a regular file";
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISFIFO(mode)) return "a named pipe";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISSOCK(mode)) return "a socket";
    if (S_ISLNK(mode)) return "a symbolic link";
    return "not a regular file";
}

void require_regular_file(const std::string& path, const std::string& what) {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) {
        const int e = errno;
        if (e == ELOOP) throw Error(path + ": cannot read the " + what + ": a symbolic link loop");
        throw Error(path + ": cannot open the " + what + ": " + std::strerror(e));
    }
    if (!S_ISREG(st.st_mode))
        throw Error(path + ": the " + what + " is " + file_kind(st.st_mode) + ", not a regular file");
}

void require_replaceable_target(const std::string& path) {
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) return;  // absent (or unreachable: the write itself will say why)
    if (!S_ISREG(st.st_mode))
        throw Error(path + ": exists and is " + file_kind(st.st_mode) +
                    "; refusing to replace it (write to a new path or a regular file)");
}

}  // namespace cushion
