// The heatmaps' colour scale, one for the studio's maps and the CLI's PNGs: a perceptually uniform map
// (matplotlib's "inferno") and a log scale.
#pragma once
#include <cstdint>

namespace cushion {

// t in [0, 1] -> packed RGBA (R in the low byte, as OpenGL's GL_RGBA / GL_UNSIGNED_BYTE reads it).
uint32_t inferno(double t);
inline uint8_t red(uint32_t c) { return c & 0xff; }
inline uint8_t green(uint32_t c) { return (c >> 8) & 0xff; }
inline uint8_t blue(uint32_t c) { return (c >> 16) & 0xff; }

// Maps values to [0, 1] on a log10 scale between lo and hi (both > 0); values <= 0 map to 0.
struct LogScale {
    double lo = 1e-3, hi = 1;
    double operator()(double v) const;
};

}  // namespace cushion
