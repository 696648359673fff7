// A minimal PNG writer (RGB8, stored deflate blocks) so the CLI can write heatmaps without Qt.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace cushion::cli {

// rgb: width * height * 3 bytes, row-major. Written atomically; throws Error on failure.
void write_png(const std::string& path, int width, int height, const std::vector<uint8_t>& rgb);

// Colour for t in [0, 1] on a perceptual dark-blue -> yellow ramp (viridis-like).
void colormap(double t, uint8_t* rgb);

}  // namespace cushion::cli
