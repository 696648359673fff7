// The one colour scale of the studio's heatmaps and the CLI's PNGs (core/analysis/colormap.h).
#include <gtest/gtest.h>

#include "analysis/colormap.h"

using namespace cushion;

namespace {
double luminance(uint32_t c) { return 0.2126 * red(c) + 0.7152 * green(c) + 0.0722 * blue(c); }
}  // namespace

TEST(Colormap, InfernoRunsFromNearBlackToPaleYellowAndGetsBrighter) {
    EXPECT_LT(luminance(inferno(0)), 5);
    EXPECT_GT(luminance(inferno(1)), 230);
    EXPECT_GT(red(inferno(1)), blue(inferno(1)));  // yellow, not white or blue
    for (int i = 1; i <= 100; ++i) EXPECT_GT(luminance(inferno(i / 100.0)), luminance(inferno((i - 1) / 100.0))) << i;
    EXPECT_EQ(inferno(-1), inferno(0));
    EXPECT_EQ(inferno(7), inferno(1));
    EXPECT_EQ(inferno(std::nan("")), inferno(0));
    EXPECT_EQ(inferno(0.5) >> 24, 0xffu);  // opaque
}

TEST(Colormap, LogScaleMapsDecadesEvenly) {
    const LogScale s{1e-2, 1e2};
    EXPECT_DOUBLE_EQ(s(1e-2), 0.0);
    EXPECT_DOUBLE_EQ(s(1.0), 0.5);
    EXPECT_DOUBLE_EQ(s(1e2), 1.0);
    EXPECT_DOUBLE_EQ(s(1e5), 1.0);
    EXPECT_DOUBLE_EQ(s(0), 0.0);
    EXPECT_DOUBLE_EQ(s(-3), 0.0);
    EXPECT_DOUBLE_EQ((LogScale{1, 1})(1), 0.5);
}
