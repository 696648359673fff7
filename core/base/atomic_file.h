// Atomic writes: write into a temporary file beside the target, fsync, rename over it. A failure or
// cancel removes the temporary; the target is either the old file or the complete new one.
#pragma once
#include <filesystem>
#include <functional>
#include <string>

namespace cushion {

// Calls write(tmp_path) then renames tmp_path to path. Throws Error (and removes tmp) on failure.
void write_atomically(const std::string& path, const std::function<void(const std::string& tmp_path)>& write);
void write_text_atomically(const std::string& path, const std::string& text);
std::string read_text_file(const std::string& path);  // throws Error if unreadable
// The same for a directory: `fill` writes into a temporary directory beside `dir`, which then takes its
// place (an existing `dir` is swapped out, and only when `overwrite`). Any exception, Cancelled
// included, removes the temporary directory and leaves `dir` as it was.
void write_directory_atomically(const std::string& dir, bool overwrite,
                                const std::function<void(const std::filesystem::path&)>& fill);

}  // namespace cushion
