// A minimal PNG writer (RGB8, stored deflate blocks) so the CLI can write heatmaps without Qt.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace cushion::cli {

// rgb: width * height * 3 bytes, row-major. Written atomically; throws Error on failure.
void write_png(const std::string& path, int width, int height, const std::vector<uint8_t>& rgb);

}  // namespace cushion::cli
