// 4-bit packing of exported packages: layout, exact round trips on every edge value, errors.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "base/error.h"
#include "quant/int4_pack.h"

using namespace cushion;

namespace {
at::Tensor i8(std::vector<int64_t> v, std::vector<int64_t> shape) {
    return at::tensor(v, at::kLong).reshape(shape).to(at::kChar);
}
}  // namespace

TEST(Int4Pack, LayoutLowNibbleIsTheEvenElement) {
    at::Tensor p = pack_int4(i8({1, -1, -8, 7, 0, 3}, {1, 6}));
    ASSERT_EQ(p.scalar_type(), at::kByte);
    ASSERT_EQ(p.sizes(), (std::vector<int64_t>{1, 3}));
    EXPECT_EQ(p[0][0].item<int64_t>(), 0xF1);  // low 1, high -1 (0xF)
    EXPECT_EQ(p[0][1].item<int64_t>(), 0x78);  // low -8 (0x8), high 7
    EXPECT_EQ(p[0][2].item<int64_t>(), 0x30);
}

TEST(Int4Pack, EveryPairOfEdgeValuesRoundTripsExactly) {
    std::vector<int64_t> v;
    for (int a = -8; a <= 7; ++a)
        for (int b = -8; b <= 7; ++b) {
            v.push_back(a);
            v.push_back(b);
        }
    at::Tensor q = i8(v, {16, 32});
    at::Tensor p = pack_int4(q);
    EXPECT_EQ(p.sizes(), (std::vector<int64_t>{16, 16}));
    // All 256 byte values occur once: the packing is a bijection on pairs.
    EXPECT_EQ(std::get<0>(at::_unique(p.reshape({-1}))).numel(), 256);
    EXPECT_TRUE(at::equal(unpack_int4(p, 32), q));
}

TEST(Int4Pack, OddLengthsPadWithZeroAndRowsAreIndependent) {
    for (int64_t n : {1, 3, 7, 129}) {
        at::Tensor q = at::randint(-8, 8, {3, 2, n}, at::kLong).to(at::kChar);
        q.select(-1, n - 1).fill_(-8);  // the last (odd) element at an edge value
        at::Tensor p = pack_int4(q);
        EXPECT_EQ(p.size(-1), (n + 1) / 2);
        EXPECT_EQ(p.select(-1, p.size(-1) - 1).div(16, "floor").sum().item<int64_t>(), 0) << "padding nibble";
        EXPECT_TRUE(at::equal(unpack_int4(p, n), q)) << n;
        // Row r of the packed tensor is the packing of row r alone.
        EXPECT_TRUE(at::equal(pack_int4(q[1][0].unsqueeze(0))[0], p[1][0]));
    }
    // Symmetric weight grid [-7, 7] from other integer types.
    at::Tensor w = at::arange(-7, 8, at::kInt).reshape({1, 15});
    EXPECT_TRUE(at::equal(unpack_int4(pack_int4(w), 15), w.to(at::kChar)));
    // Empty rows.
    EXPECT_EQ(unpack_int4(pack_int4(at::zeros({4, 0}, at::kChar)), 0).sizes(), (std::vector<int64_t>{4, 0}));
}

TEST(Int4Pack, ErrorsAreClear) {
    EXPECT_THROW(pack_int4(i8({8}, {1})), Error);
    EXPECT_THROW(pack_int4(i8({-9}, {1})), Error);
    EXPECT_THROW(pack_int4(at::zeros({}, at::kChar)), Error);
    EXPECT_THROW(pack_int4(at::zeros({2}, at::kFloat)), Error);
    at::Tensor p = pack_int4(i8({1, 2, 3}, {1, 3}));
    EXPECT_THROW(unpack_int4(p, 5), Error);             // does not fit
    EXPECT_THROW(unpack_int4(p, 2), Error);             // 2 bytes hold 3 or 4
    EXPECT_THROW(unpack_int4(p.to(at::kChar), 3), Error);  // not uint8
    at::Tensor bad = p.clone();
    bad[0][1] = 0x33;  // padding nibble of the odd row set
    EXPECT_THROW(unpack_int4(bad, 3), Error);
    EXPECT_NO_THROW(unpack_int4(bad, 4));
}
