#include <gtest/gtest.h>

#include "base/device_memory.h"
#include "cushion/greedy_search.h"

using namespace cushion;

TEST(DeviceMemory, ParsesMeminfo) {
    const DeviceMemory m = parse_meminfo(
        "MemTotal:       24000000 kB\nMemFree:        100 kB\nMemAvailable:   20000000 kB\nBuffers: 5 kB\n");
    EXPECT_EQ(m.total_bytes, 24000000LL * 1024);
    EXPECT_EQ(m.free_bytes, 20000000LL * 1024);
    EXPECT_EQ(m.source, "/proc/meminfo");
    EXPECT_FALSE(parse_meminfo("garbage").known());
    EXPECT_FALSE(parse_meminfo("").known());
}

TEST(DeviceMemory, ThisMachinesCpu) {
    const DeviceMemory m = query_device_memory(c10::Device(c10::kCPU));
    ASSERT_TRUE(m.known()) << "this test runs on Linux, which has /proc/meminfo";
    EXPECT_GT(m.free_bytes, 0);
    EXPECT_LE(m.free_bytes, m.total_bytes);
    // The search's CPU batch budget: cache-sized, never more than a quarter of what is free.
    const int64_t budget = default_memory_budget(c10::Device(c10::kCPU));
    EXPECT_GT(budget, 0);
    EXPECT_LE(budget, int64_t(32) << 20);
    EXPECT_LE(budget, m.free_bytes / 4 + 1);
}

TEST(DeviceMemory, FormatsBytes) {
    EXPECT_EQ(format_bytes(17), "17 B");
    EXPECT_EQ(format_bytes(3 << 20), "3.00 MiB");
    EXPECT_EQ(format_bytes(int64_t(3) << 29), "1.50 GiB");
}
