// Disk full and read-only targets (issue "hardening"): every file the engine writes goes through
// base/atomic_file, so a write that fails part-way (the disk is full), a flush that fails, or a folder that
// cannot be written gives an Error naming the target and the system's cause, leaves no temporary file, and
// leaves the previous file (or directory) as it was.
// Simulated without root or a small file system: RLIMIT_FSIZE with SIGXFSZ ignored makes a write past the limit
// fail with EFBIG ("File too large") as a full disk fails with ENOSPC; a folder of mode 0555 is read-only (as root,
// CAP_DAC_OVERRIDE is dropped from the thread's effective set for the test and raised again after).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "base/atomic_file.h"
#include "base/error.h"
#include "formats/safetensors.h"
#include "test_support.h"
#include "file_snapshot.h"
#include "write_limits.h"

using namespace cushion;
using namespace cushion::test;
namespace fs = std::filesystem;

namespace {

bool contains(const std::string& text, const std::string& needle) { return text.find(needle) != std::string::npos; }

const std::string kOld = "the previous file\n";

}  // namespace

TEST(DiskFull, TextFileKeepsThePreviousFileAndLeavesNoTemporary) {
    const std::string d = temp_dir("disk-full-text");
    const std::string target = d + "/notes.json";
    std::ofstream(target) << kOld;
    const std::string big(64 * 1024, 'x');
    std::string e;
    {
        FileSizeLimit limit(4096);
        ASSERT_TRUE(limit.ok());
        e = error_of([&] { write_text_atomically(target, big); });
    }
    EXPECT_TRUE(contains(e, target + ": not written (the previous file is unchanged): write failed: File too large")) << e;
    EXPECT_FALSE(contains(e, ".tmp-")) << "the message names the temporary file: " << e;
    EXPECT_EQ(slurp(target), kOld);
    EXPECT_EQ(entries(d), std::set<std::string>{"notes.json"});
    // A new path: nothing at all is left.
    {
        FileSizeLimit limit(4096);
        e = error_of([&] { write_text_atomically(d + "/new.json", big); });
    }
    EXPECT_TRUE(contains(e, d + "/new.json: not written (nothing was left behind): write failed: File too large")) << e;
    EXPECT_EQ(entries(d), std::set<std::string>{"notes.json"});
    // Under the limit the same call works (the limit, not the code, made it fail).
    {
        FileSizeLimit limit(1 << 20);
        write_text_atomically(target, big);
    }
    EXPECT_EQ(slurp(target), big);
}

// The tensors are written unbuffered, so the failing write is the one that reports, whatever its size; a failure
// in the header, in the first tensor or in the last one each leave the previous file.
TEST(DiskFull, SafetensorsFailAtAnyPointWithoutPartialFile) {
    const std::string d = temp_dir("disk-full-safetensors");
    const std::string target = d + "/state.safetensors";
    std::vector<std::pair<std::string, at::Tensor>> small{{"a", at::ones({4})}};
    save_safetensors(target, small, {{"format", "test"}});
    const std::string before = slurp(target);
    std::vector<std::pair<std::string, at::Tensor>> ts{{"a", at::ones({1000})}, {"b", at::ones({1000})},
                                                        {"c", at::ones({1000})}};
    for (rlim_t limit_bytes : {rlim_t(16), rlim_t(200), rlim_t(5000), rlim_t(11000)}) {
        std::string e;
        {
            FileSizeLimit limit(limit_bytes);
            e = error_of([&] { save_safetensors(target, ts, {{"format", "test"}}); });
        }
        EXPECT_TRUE(contains(e, target + ": not written (the previous file is unchanged): write failed: File too large"))
            << "limit " << limit_bytes << ": " << e;
        EXPECT_EQ(slurp(target), before) << "limit " << limit_bytes;
        EXPECT_EQ(entries(d), std::set<std::string>{"state.safetensors"}) << "limit " << limit_bytes;
    }
    save_safetensors(target, ts, {{"format", "test"}});
    EXPECT_GT(slurp(target).size(), 12000u);
}

// A directory (a package): the message names the directory and the file inside it as it would have been (not
// the temporary directory), the old directory stays, no temporary directory is left.
TEST(DiskFull, DirectoryKeepsTheExistingOneAndNamesTheFile) {
    const std::string d = temp_dir("disk-full-dir");
    const std::string pkg = d + "/pkg";
    fs::create_directories(pkg);
    std::ofstream(pkg + "/config.json") << kOld;
    auto fill = [](const fs::path& tmp) {
        write_text_atomically((tmp / "config.json").string(), "{}\n");
        save_safetensors((tmp / "model.safetensors").string(), {{"w", at::ones({4096})}}, {});
    };
    std::string e;
    {
        FileSizeLimit limit(8192);
        e = error_of([&] { write_directory_atomically(pkg, true, fill); });
    }
    EXPECT_TRUE(contains(e, pkg + ": not written (the existing directory is unchanged): " + pkg +
                                "/model.safetensors: write failed: File too large"))
        << e;
    EXPECT_FALSE(contains(e, ".tmp-")) << e;
    EXPECT_EQ(entries(d), std::set<std::string>{"pkg"});
    EXPECT_EQ(entries(pkg), std::set<std::string>{"config.json"});
    EXPECT_EQ(slurp(pkg + "/config.json"), kOld);
    {
        FileSizeLimit limit(8192);
        e = error_of([&] { write_directory_atomically(d + "/fresh", false, fill); });
    }
    EXPECT_TRUE(contains(e, d + "/fresh: not written (nothing was left behind): " + d +
                                "/fresh/model.safetensors: write failed: File too large"))
        << e;
    EXPECT_EQ(entries(d), std::set<std::string>{"pkg"});
    write_directory_atomically(d + "/fresh", false, fill);  // no limit: written
    EXPECT_EQ(entries(d + "/fresh"), (std::set<std::string>{"config.json", "model.safetensors"}));
}

TEST(ReadOnlyTarget, FileInAReadOnlyFolder) {
    const std::string d = temp_dir("read-only-file");
    const std::string ro = d + "/ro";
    fs::create_directories(ro);
    std::ofstream(ro + "/notes.json") << kOld;
    fs::permissions(ro, fs::perms::owner_read | fs::perms::owner_exec | fs::perms::group_read |
                            fs::perms::group_exec | fs::perms::others_read | fs::perms::others_exec);
    std::string e1, e2, e3;
    {
        NoPermissionOverride no_override;
        if (!no_override.ok()) GTEST_SKIP() << "cannot drop CAP_DAC_OVERRIDE here";
        e1 = error_of([&] { write_text_atomically(ro + "/notes.json", "new"); });
        e2 = error_of([&] { save_safetensors(ro + "/new.safetensors", {{"a", at::ones({2})}}, {}); });
        e3 = error_of([&] { write_directory_atomically(ro + "/pkg", false, [](const fs::path&) {}); });
    }
    fs::permissions(ro, fs::perms::owner_all);
    EXPECT_TRUE(contains(e1, ro + "/notes.json: not written (the previous file is unchanged): cannot create a "
                                  "temporary file in " + ro + ": Permission denied"))
        << e1;
    EXPECT_TRUE(contains(e2, ro + "/new.safetensors: not written (nothing was left behind): cannot create a "
                                  "temporary file in " + ro + ": Permission denied"))
        << e2;
    EXPECT_TRUE(contains(e3, ro + "/pkg: not written (nothing was left behind): cannot create a temporary "
                                  "directory in " + ro + ": Permission denied"))
        << e3;
    EXPECT_EQ(slurp(ro + "/notes.json"), kOld);
    EXPECT_EQ(entries(ro), std::set<std::string>{"notes.json"});
}

// An existing package directory in a read-only folder cannot be swapped out: it is kept, as it was.
TEST(ReadOnlyTarget, ExistingPackageInAReadOnlyFolderIsKept) {
    const std::string d = temp_dir("read-only-dir");
    const std::string ro = d + "/ro";
    fs::create_directories(ro + "/pkg");
    std::ofstream(ro + "/pkg/config.json") << kOld;
    fs::permissions(ro, fs::perms::owner_read | fs::perms::owner_exec);
    std::string e;
    {
        NoPermissionOverride no_override;
        if (!no_override.ok()) GTEST_SKIP() << "cannot drop CAP_DAC_OVERRIDE here";
        e = error_of([&] {
            write_directory_atomically(ro + "/pkg", true, [](const fs::path& tmp) {
                write_text_atomically((tmp / "config.json").string(), "{}");
            });
        });
    }
    fs::permissions(ro, fs::perms::owner_all);
    EXPECT_TRUE(contains(e, ro + "/pkg: not written (the existing directory is unchanged): cannot create a "
                                 "temporary directory in " + ro + ": Permission denied"))
        << e;
    EXPECT_EQ(entries(ro), std::set<std::string>{"pkg"});
    EXPECT_EQ(slurp(ro + "/pkg/config.json"), kOld);
}

// ------------------------------------------------------------------------------------ files written together
// write_files_together (a studio session, its cushion and its tuner state): a failure while writing any of the set
// leaves every previous file intact and no temporary; a rename that fails puts back what the renames before it
// replaced; temporaries of a killed writer are removed by the next write of the same targets.

namespace {

std::vector<FileToWrite> three(const std::string& d, const std::string& a, const std::string& b, const std::string& c) {
    auto text = [](std::string s) { return [s](const std::string& tmp) { write_text_atomically(tmp, s); }; };
    return {{d + "/s.tuner", text(a)}, {d + "/s.cushion", text(b)}, {d + "/s.cushionstudio", text(c)}};
}

void write_v1(const std::string& d) { write_files_together(three(d, "tuner 1\n", "cushion 1\n", "session 1\n")); }

void expect_v1(const std::string& d) {
    EXPECT_EQ(slurp(d + "/s.tuner"), "tuner 1\n");
    EXPECT_EQ(slurp(d + "/s.cushion"), "cushion 1\n");
    EXPECT_EQ(slurp(d + "/s.cushionstudio"), "session 1\n");
    EXPECT_EQ(entries(d), (std::set<std::string>{"s.tuner", "s.cushion", "s.cushionstudio"}));
}

}  // namespace

TEST(FilesTogether, WritesTheSetAndReplacesIt) {
    const std::string d = temp_dir("together-ok");
    write_v1(d);
    expect_v1(d);
    write_files_together(three(d, "tuner 2\n", "cushion 2\n", "session 2\n"));
    EXPECT_EQ(slurp(d + "/s.tuner"), "tuner 2\n");
    EXPECT_EQ(slurp(d + "/s.cushion"), "cushion 2\n");
    EXPECT_EQ(slurp(d + "/s.cushionstudio"), "session 2\n");
    EXPECT_EQ(entries(d).size(), 3u);
}

// The disk fills while the first, the middle or the last file of the set is written: all three stay as they were.
TEST(FilesTogether, DiskFullAtAnyFileKeepsTheWholePreviousSet) {
    const std::string big(64 * 1024, 'x');
    for (int at = 0; at < 3; ++at) {
        const std::string d = temp_dir("together-full-" + std::to_string(at));
        write_v1(d);
        auto files = three(d, at == 0 ? big : "tuner 2\n", at == 1 ? big : "cushion 2\n", at == 2 ? big : "session 2\n");
        std::string e;
        {
            FileSizeLimit limit(4096);
            ASSERT_TRUE(limit.ok());
            e = error_of([&] { write_files_together(files); });
        }
        EXPECT_TRUE(contains(e, files[at].path + ": not written (none of the 3 files was changed): write failed: File too large"))
            << "file " << at << ": " << e;
        EXPECT_FALSE(contains(e, ".tmp-")) << e;
        expect_v1(d);
    }
}

TEST(FilesTogether, ReadOnlyFolderKeepsTheWholePreviousSet) {
    const std::string d = temp_dir("together-ro");
    write_v1(d);
    fs::permissions(d, fs::perms::owner_read | fs::perms::owner_exec);
    std::string e;
    {
        NoPermissionOverride no_override;
        if (!no_override.ok()) {
            fs::permissions(d, fs::perms::owner_all);
            GTEST_SKIP() << "cannot drop CAP_DAC_OVERRIDE here";
        }
        e = error_of([&] { write_files_together(three(d, "tuner 2\n", "cushion 2\n", "session 2\n")); });
    }
    fs::permissions(d, fs::perms::owner_all);
    EXPECT_TRUE(contains(e, d + "/s.tuner: not written (none of the 3 files was changed): cannot create a temporary "
                                "file in " + d + ": Permission denied"))
        << e;
    expect_v1(d);
}

// The last rename fails (its target became a non-empty directory after the checks): the two files renamed before it
// are put back as they were.
TEST(FilesTogether, AFailedRenamePutsBackTheFilesRenamedBeforeIt) {
    const std::string d = temp_dir("together-rename");
    write_v1(d);
    fs::remove(d + "/s.cushionstudio");
    auto files = three(d, "tuner 2\n", "cushion 2\n", "session 2\n");
    const auto write_session = files[2].write;
    files[2].write = [&](const std::string& tmp) {
        write_session(tmp);
        fs::create_directories(d + "/s.cushionstudio/inside");  // rename(file, non-empty directory) fails
    };
    const std::string e = error_of([&] { write_files_together(files); });
    EXPECT_TRUE(contains(e, d + "/s.cushionstudio: not written (none of the 3 files was changed): cannot rename the "
                                "temporary file over it"))
        << e;
    EXPECT_EQ(slurp(d + "/s.tuner"), "tuner 1\n");
    EXPECT_EQ(slurp(d + "/s.cushion"), "cushion 1\n");
    EXPECT_EQ(entries(d), (std::set<std::string>{"s.tuner", "s.cushion", "s.cushionstudio"}));
    EXPECT_TRUE(fs::is_directory(d + "/s.cushionstudio"));
}

// Temporaries of a writer that was killed (its process no longer runs) are removed by the next write of the same
// targets; those of a running process (maybe writing now) are kept.
TEST(FilesTogether, TemporariesOfAKilledWriterAreRemovedNextTime) {
    const std::string d = temp_dir("together-stale");
    write_v1(d);
    const pid_t child = ::fork();
    if (child == 0) ::_exit(0);
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);  // its pid now names no process
    const std::string dead = std::to_string(child), alive = std::to_string(::getppid());
    for (const std::string& n : {".s.cushion.tmp-" + dead + "-0-ab", ".s.cushionstudio.old-" + dead + "-1",
                                 "..s.tuner.tmp-" + dead + "-2-cd.tmp-" + dead + "-3-ef", ".s.cushion.tmp-" + alive + "-0-ab"})
        std::ofstream(d + "/" + n) << "partial";
    write_files_together(three(d, "tuner 2\n", "cushion 2\n", "session 2\n"));
    EXPECT_EQ(entries(d), (std::set<std::string>{"s.tuner", "s.cushion", "s.cushionstudio", ".s.cushion.tmp-" + alive + "-0-ab"}));
    EXPECT_EQ(slurp(d + "/s.cushionstudio"), "session 2\n");
}
