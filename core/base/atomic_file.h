// Atomic writes: write into a temporary file beside the target, fsync, rename over it. A failure or
// cancel removes the temporary; the target is either the old file or the complete new one.
#pragma once
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace cushion {

// A file being written, every step checked: each write (a short write is retried, EINTR too), then fsync and
// close in finish(). A failure throws Error naming `name` (the path the user knows, not a temporary one) and the
// system's cause ("No space left on device", "File too large", "Read-only file system", "Permission denied").
// Unbuffered: a full disk is seen by the write that hits it, never by a flush on close that nobody checks.
class OutputFile {
public:
    // Opens `path` for writing (created or truncated).
    OutputFile(const std::string& path, const std::string& name);
    ~OutputFile();  // closes quietly when finish() was not reached (an error is already on its way)
    OutputFile(const OutputFile&) = delete;
    OutputFile& operator=(const OutputFile&) = delete;
    void write(const void* data, size_t bytes);
    void write(const std::string& text) { write(text.data(), text.size()); }
    void finish();  // fsync + close, both checked
    const std::string& name() const { return name_; }

private:
    int fd_ = -1;
    std::string name_;
};

// Calls write(tmp_path) then renames tmp_path to path. Throws Error (and removes tmp) on failure; the message
// starts "PATH: not written (the previous file is unchanged|nothing was left behind): " then the cause, with the
// temporary name replaced by PATH. Cancelled passes through unchanged.
void write_atomically(const std::string& path, const std::function<void(const std::string& tmp_path)>& write);
// The same with the temporary file opened as an OutputFile (finished, i.e. fsync'ed and closed, after write).
// Every writer of a file in the engine, the CLI and the studio goes through one of these two.
void write_file_atomically(const std::string& path, const std::function<void(OutputFile& out)>& write);
void write_text_atomically(const std::string& path, const std::string& text);
std::string read_text_file(const std::string& path);  // throws Error if unreadable
// Files that belong together (a studio session and the cushion and tuner state beside it), written as a set: every
// file into a temporary beside its target first (written, fsync'ed); only when all are written are they renamed into
// place, in order (put the file that names the others last). A failure while writing (full disk, read-only folder,
// a refused target) or a Cancelled removes every temporary and leaves every previous file as it was; the message is
// "PATH: not written (none of the N files was changed): CAUSE". A rename that fails puts back what the renames before
// it replaced (the previous files are kept as hard links until the set is in place). A process killed while it
// writes leaves temporaries: the next call for the same targets removes those of processes that no longer run.
struct FileToWrite {
    std::string path;
    std::function<void(const std::string& tmp_path)> write;  // writes the whole file at tmp_path
};
void write_files_together(const std::vector<FileToWrite>& files);
// Removes the temporaries beside `path` (".NAME.tmp-PID-..." and ".NAME.old-PID-...") left by a process PID that no
// longer runs (killed while it wrote). Returns how many were removed.
int remove_stale_temps(const std::string& path);
// The same for a directory: `fill` writes into a temporary directory beside `dir`, which then takes its
// place (an existing `dir` is swapped out, and only when `overwrite`). Any exception, Cancelled
// included, removes the temporary directory and leaves `dir` as it was.
void write_directory_atomically(const std::string& dir, bool overwrite,
                                const std::function<void(const std::filesystem::path&)>& fill);

}  // namespace cushion
