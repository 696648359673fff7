// CPU threads for libtorch.
//
// use_all_cores(): Debian's libtorch (OpenMP) starts with one intra-op thread on some machines even with
// several cores; this sets it to the hardware concurrency unless the user set OMP_NUM_THREADS. Called by
// the executables (and the test programs) at start-up, before any computation.
// It always calls at::set_num_threads, even with the count already in force, because that call changes more
// than the count and for good: with MKL it turns MKL's dynamic threading off for the whole process
// (mkl_set_dynamic(false)) and sets the calling thread's MKL count; a thread's first parallel call repeats it
// once any count was set. MKL's products are split, and rounded, differently with and without dynamic
// threading. Without this, the first IntraOpThreads (the greedy search's one-thread scoring) switched MKL
// for the rest of the process: a calibration that had searched tuned its cushion with other roundings than
// one resumed from a checkpoint after the search (which scores nothing): 2.2e-5 of the cushion's largest
// value on stories260K (issue 15). With the state set once here, IntraOpThreads's restore is exact.
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
// libtorch's intra-op threads set to n (n > 0) while it lives, then put back; n <= 0 changes nothing. Put back
// exactly (MKL's setting included) in a process that called use_all_cores() first.
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
