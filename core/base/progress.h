// Progress reporting for long work: a callback that returns false to cancel (as llama.cpp's loader does).
#pragma once
#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "base/error.h"

namespace cushion {

// fraction in [0,1]; `what` names the stage. Return false to cancel.
using ProgressFn = std::function<bool(double fraction, const std::string& what)>;

// Calls fn (if any) and throws Cancelled when it asks to stop.
inline void report_progress(const ProgressFn& fn, double fraction, const std::string& what) {
    if (fn && !fn(fraction, what)) throw Cancelled();
}

// One job's cancel request, shared by whoever may cancel the job and the job that polls it (copies share the
// flag). Each job gets its own token, so cancelling a job can never cancel the one started after it.
class CancelToken {
public:
    CancelToken() : flag_(std::make_shared<std::atomic<bool>>(false)) {}
    void cancel() const { flag_->store(true); }
    bool cancelled() const { return flag_->load(); }
    bool same(const CancelToken& o) const { return flag_ == o.flag_; }  // one job's token (or a copy of it)

private:
    std::shared_ptr<std::atomic<bool>> flag_;
};

}  // namespace cushion
