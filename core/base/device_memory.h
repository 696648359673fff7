// How much memory a device has free right now, to size work to it (candidate batches of the greedy
// search) and to refuse work that cannot fit with a clear message instead of running out of memory.
//   - CPU: MemAvailable / MemTotal from /proc/meminfo.
//   - CUDA: cudaMemGetInfo through libtorch's CUDA runtime (cuda_info.h). Memory held by libtorch's caching
//     allocator counts as used, so the figure is conservative.
// Unknown (no /proc, a build without CUDA, another device type): free_bytes = -1.
#pragma once
#include <c10/core/Device.h>

#include <cstdint>
#include <string>

namespace cushion {

struct DeviceMemory {
    int64_t free_bytes = -1;   // -1: unknown
    int64_t total_bytes = -1;
    std::string source;        // where the figures come from ("/proc/meminfo", "cudaMemGetInfo")
    bool known() const { return free_bytes >= 0; }
};

DeviceMemory query_device_memory(c10::Device dev);

// Parses the text of /proc/meminfo (exposed for tests). Missing fields leave -1.
DeviceMemory parse_meminfo(const std::string& text);

// "1.50 GiB", "300.00 MiB", "12.00 KiB", "17 B".
std::string format_bytes(int64_t bytes);

}  // namespace cushion
