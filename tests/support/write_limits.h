// Limits a test puts on its own writes, to see how the code under test fails: a file size limit (a full disk) and
// no permission override for root (a read-only folder). Both are undone when the object goes out of scope.
#pragma once

#include <linux/capability.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <csignal>

namespace cushion::test {

// While alive: files may not grow past `bytes` (writes beyond fail with EFBIG instead of raising SIGXFSZ).
class FileSizeLimit {
public:
    explicit FileSizeLimit(rlim_t bytes) {
        old_handler_ = std::signal(SIGXFSZ, SIG_IGN);
        ::getrlimit(RLIMIT_FSIZE, &old_);
        rlimit r = old_;
        r.rlim_cur = bytes;
        ok_ = ::setrlimit(RLIMIT_FSIZE, &r) == 0;
    }
    ~FileSizeLimit() {
        ::setrlimit(RLIMIT_FSIZE, &old_);
        std::signal(SIGXFSZ, old_handler_);
    }
    bool ok() const { return ok_; }

private:
    rlimit old_{};
    void (*old_handler_)(int) = nullptr;
    bool ok_ = false;
};

// While alive: this thread cannot write where its permissions say it may not (as root: CAP_DAC_OVERRIDE and
// CAP_DAC_READ_SEARCH dropped from the effective set; they stay permitted and are raised again after).
class NoPermissionOverride {
public:
    NoPermissionOverride() {
        if (::geteuid() != 0) {
            ok_ = true;
            return;
        }
        hdr_.version = _LINUX_CAPABILITY_VERSION_3;
        hdr_.pid = 0;
        if (::syscall(SYS_capget, &hdr_, old_) != 0) return;
        __user_cap_data_struct d[2] = {old_[0], old_[1]};
        d[0].effective &= ~((1u << CAP_DAC_OVERRIDE) | (1u << CAP_DAC_READ_SEARCH));
        ok_ = dropped_ = ::syscall(SYS_capset, &hdr_, d) == 0;
    }
    ~NoPermissionOverride() {
        if (dropped_) ::syscall(SYS_capset, &hdr_, old_);
    }
    bool ok() const { return ok_; }

private:
    __user_cap_header_struct hdr_{};
    __user_cap_data_struct old_[2]{};
    bool ok_ = false, dropped_ = false;
};

}  // namespace cushion::test
