// CPU threads for libtorch: Debian's libtorch (OpenMP) starts with one intra-op thread on some machines
// even with several cores. use_all_cores() sets it to the hardware concurrency unless the user set
// OMP_NUM_THREADS. Called by the executables at start-up.
#pragma once

namespace cushion {

int use_all_cores();  // returns the thread count in force

}  // namespace cushion
