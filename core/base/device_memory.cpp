#include "base/device_memory.h"

#include "base/cuda_info.h"

#include <cstdio>
#include <fstream>
#include <sstream>

namespace cushion {

DeviceMemory parse_meminfo(const std::string& text) {
    DeviceMemory m;
    std::istringstream in(text);
    std::string key, unit;
    long long kib = 0;
    while (in >> key >> kib) {
        std::getline(in, unit);  // " kB"
        if (key == "MemAvailable:") m.free_bytes = kib * 1024;
        if (key == "MemTotal:") m.total_bytes = kib * 1024;
    }
    if (m.known()) m.source = "/proc/meminfo";
    return m;
}

namespace {

DeviceMemory cpu_memory() {
    std::ifstream f("/proc/meminfo");
    if (!f) return {};
    std::stringstream ss;
    ss << f.rdbuf();
    return parse_meminfo(ss.str());
}

// cudaMemGetInfo through libtorch's CUDA runtime (cuda_info.h).
DeviceMemory cuda_memory(int index) {
    DeviceMemory m;
    if (!cuda_mem_get_info(index, &m.free_bytes, &m.total_bytes)) return {};
    m.source = "cudaMemGetInfo";
    return m;
}

}  // namespace

DeviceMemory query_device_memory(c10::Device dev) {
    if (dev.is_cpu()) return cpu_memory();
    if (dev.is_cuda()) return cuda_memory(dev.has_index() ? dev.index() : -1);
    return {};
}

std::string format_bytes(int64_t b) {
    char buf[64];
    const double x = static_cast<double>(b);
    if (b >= (int64_t(1) << 30)) std::snprintf(buf, sizeof buf, "%.2f GiB", x / double(int64_t(1) << 30));
    else if (b >= (int64_t(1) << 20)) std::snprintf(buf, sizeof buf, "%.2f MiB", x / double(1 << 20));
    else if (b >= 1024) std::snprintf(buf, sizeof buf, "%.2f KiB", x / 1024.0);
    else std::snprintf(buf, sizeof buf, "%lld B", static_cast<long long>(b));
    return buf;
}

}  // namespace cushion
