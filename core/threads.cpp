#include "threads.h"

#include <ATen/Parallel.h>

#include <cstdlib>
#include <thread>

namespace cushion {

int use_all_cores() {
    const char* env = std::getenv("OMP_NUM_THREADS");
    const int hw = static_cast<int>(std::thread::hardware_concurrency());
    if ((!env || !*env) && hw > at::get_num_threads()) at::set_num_threads(hw);
    return at::get_num_threads();
}

}  // namespace cushion
