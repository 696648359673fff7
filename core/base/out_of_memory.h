// Out of memory in batched work (the greedy search's candidate batches): recognise it, halve the batch and go on.
//
// is_out_of_memory(e): what libtorch throws when an allocation fails: c10::OutOfMemoryError (the CUDA caching
// allocator's "CUDA out of memory"), std::bad_alloc, or a c10::Error whose message says the allocator could not
// allocate (the CPU allocator's "DefaultCPUAllocator: can't allocate memory: ..." is a plain c10::Error).
//
// run_halving_on_oom: runs fn over [begin, end) in batches of *batch items; when a batch runs out of memory it
// halves *batch, tells on_halve (once per halving, with the new size) and retries the same items; with a batch of
// 1 it throws Error naming `what`. The batch's tensors are freed as the exception unwinds, so the retry reuses
// their memory (on CUDA through the caching allocator). The CPU and CUDA paths are the same code; only the CPU
// one is tested here (tests/unit/base/test_out_of_memory.cpp, tests/unit/cushion/test_greedy_search.cpp).
//
// Testing: inject_out_of_memory arms a hook that batch loops call (check_injected_out_of_memory) before they
// allocate: the next `count` batches of more than `above` items throw the exception libtorch throws.
#pragma once
#include <cstdint>
#include <exception>
#include <functional>
#include <string>

namespace cushion {

bool is_out_of_memory(const std::exception& e);

// fn(i, b): process items [i, i + b). *batch >= 1 on entry; on return, the batch size that worked last.
// on_halve(old, new) after each halving (empty: report_batch_halved's line on stderr).
void run_halving_on_oom(size_t begin, size_t end, int64_t* batch, const std::function<void(size_t, int64_t)>& fn,
                        const std::function<void(int64_t, int64_t)>& on_halve, const std::string& what);

// "<what>: out of memory with a batch of 64 candidates, going on with 32"
std::string batch_halved_message(const std::string& what, int64_t old_batch, int64_t new_batch);
// That line on stderr, prefixed "cushion: ".
void report_batch_halved(const std::string& what, int64_t old_batch, int64_t new_batch);

namespace oom_testing {
enum class OomKind {
    Cpu,       // c10::Error with the CPU allocator's message
    Cuda,      // c10::OutOfMemoryError with the CUDA caching allocator's message
    BadAlloc,  // std::bad_alloc
};
// The next `count` batches of more than `above` items throw (count < 0: every such batch). Process-wide.
void inject_out_of_memory(int64_t above, int count, OomKind kind = OomKind::Cpu);
void clear_injected_out_of_memory();
int injected_out_of_memory_thrown();  // how many were thrown since the last inject_out_of_memory
}  // namespace oom_testing

// Throws the injected exception when armed and batch > above (a no-op otherwise: one relaxed atomic load).
void check_injected_out_of_memory(int64_t batch);

}  // namespace cushion
