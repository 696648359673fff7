#include "analysis/colormap.h"

#include <algorithm>
#include <cmath>

namespace cushion {

uint32_t inferno(double t) {
    // matplotlib's inferno sampled at 9 evenly spaced points, linearly interpolated between them.
    static const float k[9][3] = {{0.001f, 0.000f, 0.014f}, {0.088f, 0.044f, 0.224f}, {0.258f, 0.039f, 0.406f},
                                  {0.416f, 0.090f, 0.433f}, {0.578f, 0.148f, 0.404f}, {0.735f, 0.216f, 0.330f},
                                  {0.865f, 0.317f, 0.226f}, {0.954f, 0.469f, 0.098f}, {0.988f, 0.998f, 0.645f}};
    if (!(t >= 0)) t = 0;  // NaN too
    if (t > 1) t = 1;
    const double x = t * 8;
    const int i = std::min(7, static_cast<int>(x));
    const double f = x - i;
    uint32_t out = 0xff000000u;
    for (int c = 0; c < 3; ++c) {
        const double v = k[i][c] + (k[i + 1][c] - k[i][c]) * f;
        out |= static_cast<uint32_t>(std::lround(std::clamp(v, 0.0, 1.0) * 255)) << (8 * c);
    }
    return out;
}

double LogScale::operator()(double v) const {
    if (!(v > 0)) return 0;
    const double a = std::log10(lo), b = std::log10(hi);
    if (b <= a) return 0.5;
    return std::clamp((std::log10(v) - a) / (b - a), 0.0, 1.0);
}

}  // namespace cushion
