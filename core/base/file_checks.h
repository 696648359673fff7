// What a path must be before the engine reads or replaces it, checked up front with a clear message.
//   - Inputs are regular files (after symlinks): a directory, a named pipe (a read with no writer blocks for ever),
//     a device (/dev/zero never ends), a socket, a symlink loop or a missing file is refused, naming what it is.
//   - Outputs replace only regular files: an existing device, pipe, socket, directory or symlink at the target is
//     refused (an atomic rename over /dev/full would replace the device node).
#pragma once
#include <string>

namespace cushion {

// Throws Error unless `path` is a regular file. `what` names it in the message ("text file", "tokenizer", ...).
void require_regular_file(const std::string& path, const std::string& what = "file");

// Throws Error if `path` exists (lstat: the link itself) and is not a regular file.
void require_replaceable_target(const std::string& path);

// "a named pipe", "a character device", ... for a stat mode (for messages).
std::string file_kind(unsigned mode);

}  // namespace cushion
