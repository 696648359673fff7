#include "device_memory.h"

#include <dlfcn.h>

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

// The CUDA runtime's entry points, found in the process (libtorch_cuda loads the runtime) without
// linking to it. cudaError_t is an int; 0 is cudaSuccess.
DeviceMemory cuda_memory(int index) {
    using MemGetInfo = int (*)(size_t*, size_t*);
    using GetDevice = int (*)(int*);
    using SetDevice = int (*)(int);
    auto mem_get_info = reinterpret_cast<MemGetInfo>(dlsym(RTLD_DEFAULT, "cudaMemGetInfo"));
    auto get_device = reinterpret_cast<GetDevice>(dlsym(RTLD_DEFAULT, "cudaGetDevice"));
    auto set_device = reinterpret_cast<SetDevice>(dlsym(RTLD_DEFAULT, "cudaSetDevice"));
    if (!mem_get_info || !get_device || !set_device) return {};
    int current = 0;
    if (get_device(&current) != 0) return {};
    const int want = index < 0 ? current : index;
    if (want != current && set_device(want) != 0) return {};
    size_t free_b = 0, total_b = 0;
    const int rc = mem_get_info(&free_b, &total_b);
    if (want != current) set_device(current);
    if (rc != 0) return {};
    DeviceMemory m;
    m.free_bytes = static_cast<int64_t>(free_b);
    m.total_bytes = static_cast<int64_t>(total_b);
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
