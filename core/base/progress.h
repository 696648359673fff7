// Progress reporting for long work: a callback that returns false to cancel (as llama.cpp's loader does).
#pragma once
#include <functional>
#include <string>

#include "base/error.h"

namespace cushion {

// fraction in [0,1]; `what` names the stage. Return false to cancel.
using ProgressFn = std::function<bool(double fraction, const std::string& what)>;

// Calls fn (if any) and throws Cancelled when it asks to stop.
inline void report_progress(const ProgressFn& fn, double fraction, const std::string& what) {
    if (fn && !fn(fraction, what)) throw Cancelled();
}

}  // namespace cushion
