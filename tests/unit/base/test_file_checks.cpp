// Inputs must be regular files and outputs replace only regular files (issue "hardening"): a named pipe with no
// writer is refused at once instead of blocking for ever, /dev/zero is refused instead of read without end, and
// an output over a device, pipe or symlink is refused with the device, pipe or link left as it was.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "base/atomic_file.h"
#include "base/file_checks.h"
#include "base/mapped_file.h"
#include "model/perplexity.h"
#include "base/sha256.h"
#include "tokenizer/tokenizer.h"
#include "test_support.h"

using namespace cushion;
using namespace cushion::test;
namespace fs = std::filesystem;

namespace {
// Runs f, which must throw an Error containing `needle`, within a second (a blocking read would hang here).
void expect_quick_error(const std::function<void()>& f, const std::string& needle) {
    const auto t0 = std::chrono::steady_clock::now();
    const std::string e = error_of(f);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_NE(e.find(needle), std::string::npos) << e;
    EXPECT_LT(s, 1.0) << e;
}
}  // namespace

TEST(FileChecks, InputsMustBeRegularFiles) {
    const std::string d = temp_dir("file-checks");
    const std::string fifo = d + "/pipe";
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    expect_quick_error([&] { read_documents(fifo); }, "is a named pipe, not a regular file");
    expect_quick_error([&] { read_text_file(fifo); }, "named pipe");
    expect_quick_error([&] { sha256_file(fifo); }, "named pipe");
    expect_quick_error([&] { MappedFile m(fifo); }, "named pipe");
    expect_quick_error([&] { load_sentencepiece_tokenizer(fifo); }, "named pipe");
    expect_quick_error([&] { load_llama2c_tokenizer(fifo, 512); }, "named pipe");
    expect_quick_error([&] { load_tokenizer_json(fifo); }, "named pipe");
    expect_quick_error([&] { read_documents("/dev/zero"); }, "is a character device");
    expect_quick_error([&] { read_documents(d); }, "is a directory");
    fs::create_symlink(d + "/loop-b", d + "/loop-a");
    fs::create_symlink(d + "/loop-a", d + "/loop-b");
    expect_quick_error([&] { read_documents(d + "/loop-a"); }, "symbolic link loop");
    expect_quick_error([&] { read_documents(d + "/absent.txt"); }, "No such file");
    // A symlink to a regular file is read as the file.
    std::ofstream(d + "/real.txt") << "one document\n";
    fs::create_symlink(d + "/real.txt", d + "/link.txt");
    EXPECT_EQ(read_documents(d + "/link.txt").size(), 1u);
}

TEST(FileChecks, OutputsNeverReplaceDevicesPipesOrSymlinks) {
    const std::string d = temp_dir("file-checks-out");
    const std::string fifo = d + "/pipe";
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    expect_quick_error([&] { write_text_atomically(fifo, "x"); }, "is a named pipe; refusing to replace it");
    struct stat st;
    ASSERT_EQ(::lstat(fifo.c_str(), &st), 0);
    EXPECT_TRUE(S_ISFIFO(st.st_mode));
    // /dev/full: a character device; as root a rename over it would have replaced the node.
    expect_quick_error([&] { write_text_atomically("/dev/full", "x"); }, "is a character device");
    ASSERT_EQ(::stat("/dev/full", &st), 0);
    EXPECT_TRUE(S_ISCHR(st.st_mode));
    std::ofstream(d + "/target.txt") << "old";
    fs::create_symlink(d + "/target.txt", d + "/link.txt");
    expect_quick_error([&] { write_text_atomically(d + "/link.txt", "new"); }, "is a symbolic link");
    EXPECT_EQ(read_text_file(d + "/target.txt"), "old");
    EXPECT_TRUE(fs::is_symlink(d + "/link.txt"));
    fs::create_directory(d + "/pkgdir");
    fs::create_directory_symlink(d + "/pkgdir", d + "/pkglink");
    expect_quick_error([&] { write_directory_atomically(d + "/pkglink", true, [](const fs::path&) {}); },
                       "symbolic link");
    // No temporary file is left beside any of them.
    for (const auto& e : fs::directory_iterator(d))
        EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << e.path();
    // A regular file is replaced as before.
    write_text_atomically(d + "/target.txt", "new");
    EXPECT_EQ(read_text_file(d + "/target.txt"), "new");
}
