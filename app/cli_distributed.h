// `cushion calibrate` across processes: the --world-size/--rank/--rendezvous/--dist-timeout options, and
// --local-processes N, which runs the same command as N processes on this machine (loopback rendezvous).
#pragma once
#include <memory>
#include <set>

#include "cli_args.h"
#include "cushion/distributed.h"

namespace cushion::cli {

extern const char* kDistributedHelp;                 // the options' help lines
const std::set<std::string>& distributed_values();   // world-size, rank, rendezvous, dist-timeout, local-processes
// The group these options ask for (world size 1 without them). Throws Error on bad values.
DistributedOptions distributed_from_args(const Args& a);
// argv is a `cushion calibrate ... --local-processes N` command line: runs it as N child processes of this
// executable with --world-size N --rank r --rendezvous 127.0.0.1:PORT (a free port), each with
// OMP_NUM_THREADS = cores / N unless that is set. Rank 0 prints as one process would; the others print only
// errors. When a child fails the others end within seconds (they are told through the rendezvous store;
// the ones still running after 15 s are sent SIGTERM). Returns the first failing child's exit status, or 0.
int run_local_processes(int argc, char** argv, int n);

}  // namespace cushion::cli
