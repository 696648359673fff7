// base/out_of_memory.h: what counts as out of memory, the halving loop, and the test-only injection.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <new>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/out_of_memory.h"

using namespace cushion;

namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kAsan = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kAsan = true;
#else
constexpr bool kAsan = false;
#endif
#else
constexpr bool kAsan = false;
#endif

// The exception an injected failure throws.
template <typename F>
bool throwsOom(F f) {
    try {
        f();
    } catch (const std::exception& e) {
        return is_out_of_memory(e);
    }
    return false;
}

}  // namespace

TEST(OutOfMemory, RecognisesWhatLibtorchThrows) {
    // The real CPU allocator failing (1 PiB): a plain c10::Error. (ASan's allocator aborts on such a request
    // instead of returning null, so the sanitizer build skips this one call.)
    if (!kAsan) {
        bool real = false;
        try {
            at::empty({int64_t(1) << 50}, at::kByte);
        } catch (const c10::Error& e) {
            real = is_out_of_memory(e);
            EXPECT_EQ(dynamic_cast<const c10::OutOfMemoryError*>(&e), nullptr) << "the CPU allocator's is a plain c10::Error";
            std::printf("libtorch's CPU allocation failure: %s\n", e.what_without_backtrace());
        }
        EXPECT_TRUE(real);
    }
    EXPECT_TRUE(is_out_of_memory(std::bad_alloc()));
    // Not out of memory: other libtorch errors, the engine's own errors, anything else.
    bool other = true;
    try {
        at::ones({2}).select(5, 0);
    } catch (const c10::Error& e) {
        other = is_out_of_memory(e);
    }
    EXPECT_FALSE(other);
    EXPECT_FALSE(is_out_of_memory(Error("greedy search: tau must be in (0, 1]")));
    EXPECT_FALSE(is_out_of_memory(std::runtime_error("x")));
}

TEST(OutOfMemory, InjectionThrowsTheSameTypes) {
    using oom_testing::OomKind;
    oom_testing::inject_out_of_memory(4, 1, OomKind::Cpu);
    EXPECT_NO_THROW(check_injected_out_of_memory(4));  // not above 4
    try {
        check_injected_out_of_memory(5);
        ADD_FAILURE() << "no exception";
    } catch (const c10::OutOfMemoryError&) {
        ADD_FAILURE() << "the CPU allocator throws a plain c10::Error";
    } catch (const c10::Error& e) {
        EXPECT_TRUE(is_out_of_memory(e));
        EXPECT_NE(std::string(e.what_without_backtrace()).find("DefaultCPUAllocator: can't allocate memory"), std::string::npos);
    }
    EXPECT_NO_THROW(check_injected_out_of_memory(100));  // count 1: spent
    EXPECT_EQ(oom_testing::injected_out_of_memory_thrown(), 1);

    oom_testing::inject_out_of_memory(0, 2, OomKind::Cuda);
    for (int i = 0; i < 2; ++i) {
        bool cuda = false;
        try {
            check_injected_out_of_memory(1);
        } catch (const c10::OutOfMemoryError& e) {
            cuda = is_out_of_memory(e);
        }
        EXPECT_TRUE(cuda);
    }
    EXPECT_NO_THROW(check_injected_out_of_memory(1));

    oom_testing::inject_out_of_memory(0, -1, OomKind::BadAlloc);
    for (int i = 0; i < 3; ++i) EXPECT_THROW(check_injected_out_of_memory(2), std::bad_alloc);
    oom_testing::clear_injected_out_of_memory();
    EXPECT_NO_THROW(check_injected_out_of_memory(2));
}

TEST(OutOfMemory, HalvesTheBatchAndRetriesTheSameItems) {
    // Items 0..22 summed in batches; batches above 5 run out of memory (the first three times).
    std::vector<int> seen(23, 0);
    std::vector<int64_t> tried;
    std::vector<std::pair<int64_t, int64_t>> halvings;
    oom_testing::inject_out_of_memory(5, 3);
    int64_t batch = 16;
    run_halving_on_oom(
        0, 23, &batch,
        [&](size_t i, int64_t b) {
            tried.push_back(b);
            check_injected_out_of_memory(b);
            for (int64_t j = 0; j < b; ++j) ++seen[i + j];
        },
        [&](int64_t o, int64_t n) { halvings.push_back({o, n}); }, "test");
    oom_testing::clear_injected_out_of_memory();
    for (int s : seen) EXPECT_EQ(s, 1);  // every item exactly once
    EXPECT_EQ(batch, 4);
    // 16 fails, 8 fails, 4 works ... ; the halved size stays.
    ASSERT_GE(tried.size(), 3u);
    EXPECT_EQ(tried[0], 16);
    EXPECT_EQ(tried[1], 8);
    EXPECT_EQ(tried[2], 4);
    for (size_t k = 2; k < tried.size(); ++k) EXPECT_LE(tried[k], 4);
    ASSERT_EQ(halvings.size(), 2u);
    EXPECT_EQ(halvings[0], std::make_pair(int64_t(16), int64_t(8)));
    EXPECT_EQ(halvings[1], std::make_pair(int64_t(8), int64_t(4)));
    EXPECT_EQ(batch_halved_message("step 1", 16, 8), "step 1: out of memory with a batch of 16 candidates, going on with 8");

    // A batch of 1 that runs out of memory: an Error naming the work, with libtorch's message.
    oom_testing::inject_out_of_memory(0, -1, oom_testing::OomKind::Cuda);
    int64_t one = 3;
    try {
        run_halving_on_oom(0, 5, &one, [&](size_t, int64_t b) { check_injected_out_of_memory(b); }, [](int64_t, int64_t) {},
                           "greedy search step 2");
        ADD_FAILURE() << "no error";
    } catch (const Error& e) {
        const std::string m = e.what();
        EXPECT_NE(m.find("greedy search step 2: out of memory with a batch of 1 candidate"), std::string::npos) << m;
        EXPECT_NE(m.find("CUDA out of memory"), std::string::npos) << m;
    }
    oom_testing::clear_injected_out_of_memory();

    // Other exceptions pass through untouched, Cancelled included.
    int64_t b2 = 4;
    EXPECT_THROW(run_halving_on_oom(0, 4, &b2, [](size_t, int64_t) { throw Cancelled(); }, {}, "x"), Cancelled);
    EXPECT_THROW(run_halving_on_oom(0, 4, &b2, [](size_t, int64_t) { at::ones({2}).select(5, 0); }, {}, "x"), c10::Error);
    EXPECT_EQ(b2, 4);
}
