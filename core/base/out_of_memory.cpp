#include "base/out_of_memory.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdio>
#include <new>

#include "base/error.h"

namespace cushion {

namespace {

std::string lower(std::string s) {
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

// The first line of an exception's text (libtorch appends a backtrace to what()).
std::string first_line(const std::exception& e) {
    std::string s;
    if (auto* c = dynamic_cast<const c10::Error*>(&e))
        s = c->what_without_backtrace();
    else
        s = e.what();
    const auto nl = s.find('\n');
    return nl == std::string::npos ? s : s.substr(0, nl);
}

struct Injection {
    std::atomic<bool> armed{false};
    std::atomic<int64_t> above{0};
    std::atomic<int> left{0};
    std::atomic<int> kind{0};
    std::atomic<int> thrown{0};
};
Injection& injection() {
    static Injection i;
    return i;
}

}  // namespace

bool is_out_of_memory(const std::exception& e) {
    if (dynamic_cast<const std::bad_alloc*>(&e)) return true;
    if (dynamic_cast<const c10::OutOfMemoryError*>(&e)) return true;
    if (auto* c = dynamic_cast<const c10::Error*>(&e)) {
        const std::string m = lower(c->what_without_backtrace());
        // CPU: "DefaultCPUAllocator: can't allocate memory: you tried to allocate N bytes" (older libtorch: "not
        // enough memory"); CUDA / HIP errors raised as plain c10::Error by some kernels: "out of memory".
        return m.find("can't allocate memory") != std::string::npos || m.find("not enough memory") != std::string::npos ||
               m.find("out of memory") != std::string::npos;
    }
    return false;
}

std::string batch_halved_message(const std::string& what, int64_t old_batch, int64_t new_batch) {
    return what + ": out of memory with a batch of " + std::to_string(old_batch) + " candidates, going on with " +
           std::to_string(new_batch);
}

void report_batch_halved(const std::string& what, int64_t old_batch, int64_t new_batch) {
    std::fprintf(stderr, "cushion: %s\n", batch_halved_message(what, old_batch, new_batch).c_str());
    std::fflush(stderr);
}

void run_halving_on_oom(size_t begin, size_t end, int64_t* batch, const std::function<void(size_t, int64_t)>& fn,
                        const std::function<void(int64_t, int64_t)>& on_halve, const std::string& what) {
    int64_t bs = std::max<int64_t>(1, *batch);
    size_t i = begin;
    while (i < end) {
        const int64_t b = std::min<int64_t>(bs, static_cast<int64_t>(end - i));
        bool oom = false;
        std::string message;
        try {
            fn(i, b);
        } catch (const Error&) {
            throw;  // the engine's own errors (Cancelled included) are never an allocation failure
        } catch (const std::exception& e) {
            if (!is_out_of_memory(e)) throw;
            oom = true;
            message = first_line(e);
        }
        // Out of the handler: the exception (and whatever it held) is gone before the retry allocates again.
        if (!oom) {
            i += static_cast<size_t>(b);
            continue;
        }
        if (b <= 1)
            throw Error(what + ": out of memory with a batch of 1 candidate (" + message +
                        "); use a shorter sample, a smaller dtype or a device with more memory");
        bs = std::max<int64_t>(1, b / 2);
        *batch = bs;
        if (on_halve)
            on_halve(b, bs);
        else
            report_batch_halved(what, b, bs);
    }
    *batch = bs;
}

namespace oom_testing {

void inject_out_of_memory(int64_t above, int count, OomKind kind) {
    Injection& in = injection();
    in.above = above;
    in.left = count;
    in.kind = static_cast<int>(kind);
    in.thrown = 0;
    in.armed = count != 0;
}

void clear_injected_out_of_memory() { injection().armed = false; }

int injected_out_of_memory_thrown() { return injection().thrown; }

}  // namespace oom_testing

void check_injected_out_of_memory(int64_t batch) {
    Injection& in = injection();
    if (!in.armed.load(std::memory_order_relaxed) || batch <= in.above) return;
    const int left = in.left.load();
    if (left == 0) return;
    if (left > 0 && --in.left == 0) in.armed = false;
    ++in.thrown;
    const long long bytes = static_cast<long long>(batch) * (1LL << 30);
    const auto kind = static_cast<oom_testing::OomKind>(in.kind.load());
    if (kind == oom_testing::OomKind::BadAlloc) throw std::bad_alloc();
    // What c10's CUDA caching allocator throws.
    TORCH_CHECK_WITH(OutOfMemoryError, kind != oom_testing::OomKind::Cuda, "CUDA out of memory. Tried to allocate ", bytes,
                     " bytes (injected by a test)");
    // What c10::alloc_cpu throws: a plain c10::Error.
    TORCH_CHECK(false, "DefaultCPUAllocator: can't allocate memory: you tried to allocate ", bytes,
                " bytes. Error code 12 (Cannot allocate memory) (injected by a test)");
}

}  // namespace cushion
