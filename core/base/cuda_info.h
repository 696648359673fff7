// What this build of libtorch offers for CUDA, and what it sees on this machine, through libtorch's own CUDA API
// (c10/cuda, ATen/cuda). The CUDA-only code sits in cuda_info.cpp behind CUSHION_WITH_CUDA (set by CMake when
// libtorch has torch_cuda); everything else in core uses these functions and builds the same with or without it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace cushion {

struct CudaDeviceInfo {
    int index = 0;
    std::string name;          // "NVIDIA H200"
    int major = 0, minor = 0;  // compute capability
    int64_t total_bytes = 0;
};

std::string libtorch_version();  // "2.12.1" (TORCH_VERSION of the headers built against)
bool cuda_compiled();            // this build links libtorch's CUDA backend (torch_cuda)
std::string cuda_version();      // the CUDA runtime libtorch was built with ("13.0"); "" without CUDA
int cuda_device_count();         // GPUs the CUDA runtime sees now (0: none, no driver, or not compiled)
std::vector<CudaDeviceInfo> cuda_devices();

// cudaMemGetInfo on device `index` (-1: the current one). Returns false where CUDA is absent or the call fails.
bool cuda_mem_get_info(int index, int64_t* free_bytes, int64_t* total_bytes);

}  // namespace cushion
