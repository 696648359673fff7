#include "base/threads.h"

#include <ATen/Parallel.h>
#include <unistd.h>

#include <cstdlib>
#include <thread>

namespace cushion {

int use_all_cores() {
    const char* env = std::getenv("OMP_NUM_THREADS");
    const int hw = static_cast<int>(std::thread::hardware_concurrency());
    const int n = (!env || !*env) && hw > at::get_num_threads() ? hw : at::get_num_threads();
    // Always through at::set_num_threads, even to the count in force: it also turns MKL's dynamic threading off
    // (for the process) and sets MKL's count, which nothing can put back; done here, every later
    // set_num_threads / IntraOpThreads restore returns to exactly this state (see threads.h).
    at::set_num_threads(n);
    return at::get_num_threads();
}

void relaunch_with_passive_openmp(char** argv) {
    if (std::getenv("OMP_WAIT_POLICY")) return;
    if (setenv("OMP_WAIT_POLICY", "PASSIVE", 1) != 0) return;
    execv("/proc/self/exe", argv);  // returns only on failure: go on with the default policy
}

IntraOpThreads::IntraOpThreads(int n) {
    if (n <= 0 || n == at::get_num_threads()) return;
    saved_ = at::get_num_threads();
    at::set_num_threads(n);
}

IntraOpThreads::~IntraOpThreads() {
    if (saved_ > 0) at::set_num_threads(saved_);
}

const char* openmp_wait_policy() {
    const char* p = std::getenv("OMP_WAIT_POLICY");
    return p ? p : "";
}

}  // namespace cushion
