#include "base/cuda_info.h"

#include <ATen/Context.h>
#include <torch/version.h>

#if CUSHION_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime_api.h>
#endif

namespace cushion {

std::string libtorch_version() { return TORCH_VERSION; }

bool cuda_compiled() { return CUSHION_WITH_CUDA != 0; }

std::string cuda_version() {
#if CUSHION_WITH_CUDA
    const int v = CUDART_VERSION;  // e.g. 13000
    return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
#else
    return "";
#endif
}

int cuda_device_count() {
#if CUSHION_WITH_CUDA
    if (!at::hasCUDA()) return 0;
    return static_cast<int>(c10::cuda::device_count());
#else
    return 0;
#endif
}

std::vector<CudaDeviceInfo> cuda_devices() {
    std::vector<CudaDeviceInfo> out;
#if CUSHION_WITH_CUDA
    const int n = cuda_device_count();
    for (int i = 0; i < n; ++i) {
        const cudaDeviceProp* p = at::cuda::getDeviceProperties(static_cast<c10::DeviceIndex>(i));
        CudaDeviceInfo d;
        d.index = i;
        d.name = p->name;
        d.major = p->major;
        d.minor = p->minor;
        d.total_bytes = static_cast<int64_t>(p->totalGlobalMem);
        out.push_back(d);
    }
#endif
    return out;
}

bool cuda_mem_get_info(int index, int64_t* free_bytes, int64_t* total_bytes) {
#if CUSHION_WITH_CUDA
    const int n = cuda_device_count();
    if (n == 0) return false;
    const c10::DeviceIndex want =
        index < 0 ? c10::cuda::current_device() : static_cast<c10::DeviceIndex>(index);
    if (want >= n) return false;
    c10::cuda::CUDAGuard guard(want);
    size_t f = 0, t = 0;
    if (cudaMemGetInfo(&f, &t) != cudaSuccess) {
        (void)cudaGetLastError();  // clear the sticky-free error state
        return false;
    }
    *free_bytes = static_cast<int64_t>(f);
    *total_bytes = static_cast<int64_t>(t);
    return true;
#else
    (void)index;
    (void)free_bytes;
    (void)total_bytes;
    return false;
#endif
}

}  // namespace cushion
