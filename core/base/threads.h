// CPU threads for libtorch.
//
// use_all_cores(): Debian's libtorch (OpenMP) starts with one intra-op thread on some machines even with
// several cores; this sets it to the hardware concurrency unless the user set OMP_NUM_THREADS. Called by
// the executables at start-up.
//
// relaunch_with_passive_openmp(argv): OpenMP's idle threads spin for a while after every parallel region by
// default. On a small machine the spinning threads starve OpenBLAS's own threads (and a GUI thread): on the
// 2-core test VM one greedy search step of stories260K took 283 s on 2 threads against 15.5 s with
// OMP_WAIT_POLICY=PASSIVE, measured under the same load (tests/perf/RESULTS.md). libgomp reads the policy
// once, when it is loaded, so it cannot be changed from inside the process: when the user has not set
// OMP_WAIT_POLICY, this sets PASSIVE and re-executes the program (/proc/self/exe, same arguments; about
// 0.4 s of start-up). It returns only if the policy is already set or the re-exec failed.
#pragma once

namespace cushion {

int use_all_cores();  // returns the thread count in force
void relaunch_with_passive_openmp(char** argv);
// libtorch's intra-op threads set to n (n > 0) while it lives, then put back; n <= 0 changes nothing.
class IntraOpThreads {
public:
    explicit IntraOpThreads(int n);
    ~IntraOpThreads();
    IntraOpThreads(const IntraOpThreads&) = delete;
    IntraOpThreads& operator=(const IntraOpThreads&) = delete;

private:
    int saved_ = 0;
};
// The OpenMP wait policy in force ("" when unset: libgomp's default spin-then-sleep).
const char* openmp_wait_policy();

}  // namespace cushion
