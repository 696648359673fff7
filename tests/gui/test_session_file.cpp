// The studio's session file alone (views/session.cpp, session_files.cpp; issue 15 "hardening"), no window, no display:
//   - the reader (core's JsonFields): a field of the wrong type is an error naming the file and the field (a string
//     where a number belongs was silently the default), absent fields take their defaults, what it writes reads back;
//   - opening refuses a named pipe (with no writer: it must not hang), a directory, a device, a symlink loop, with
//     core's rule for inputs (base/file_checks.h), as the CLI does;
//   - the session, its cushion and its tuner state are saved as one set: a full disk (RLIMIT_FSIZE) at any of the
//     three or a read-only folder leaves the three previous files byte-identical and no temporary; a cushion or
//     tuner file that is not the one saved with the session (SHA-256) is reported and not restored.
// The engine's headers (ATen) before Qt's: Qt's `slots` macro breaks ATen's ivalue.h.
#include "base/error.h"
#include "cushion/cushion.h"
#include "session_files.h"
#include "../support/file_snapshot.h"
#include "../support/write_limits.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include <QByteArray>
#include <QString>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>

#include "session.h"

namespace {

std::string error_of(const std::string& json) {
    try {
        studio::sessionFromJson(QByteArray::fromStdString(json), "/tmp/x.cushionstudio");
    } catch (const std::runtime_error& e) {
        return e.what();
    }
    return "<no error>";
}

std::string session(const std::string& fields) {
    return "{\"format\":\"cushion-studio-session\",\"version\":1" + (fields.empty() ? "" : "," + fields) + "}";
}

}  // namespace

// Read with core's JsonFields (base/json_file.h): the file and the field named, and the value that is wrong.
TEST(SessionFile, FieldsOfTheWrongTypeAreNamed) {
    const std::string f = "/tmp/x.cushionstudio: field ";
    const std::string i32 = "must be a whole number in [-2147483648, 2147483647], it is ";
    EXPECT_EQ(error_of(session("\"search\":{\"tau\":\"0.5\"}")), f + "'search.tau' must be a number, it is \"0.5\"");
    EXPECT_EQ(error_of(session("\"quantization\":{\"wbits\":\"8\"}")), f + "'quantization.wbits' " + i32 + "\"8\"");
    EXPECT_EQ(error_of(session("\"quantization\":{\"wbits\":8.5}")), f + "'quantization.wbits' " + i32 + "8.5");
    EXPECT_EQ(error_of(session("\"quantization\":{\"smoothquant\":1}")),
              f + "'quantization.smoothquant' must be true or false, it is 1");
    EXPECT_EQ(error_of(session("\"model\":\"stories.bin\"")), f + "'model' must be an object, it is \"stories.bin\"");
    EXPECT_EQ(error_of(session("\"model\":{\"path\":5}")), f + "'model.path' must be a string, it is 5");
    EXPECT_EQ(error_of(session("\"search\":{\"prefix\":[1,\"a\"]}")),
              f + "'search.prefix[1]' must be a whole number in [0, 2147483647], it is \"a\"");
    EXPECT_EQ(error_of(session("\"search\":{\"prefix\":[1,-3]}")),
              f + "'search.prefix[1]' must be a whole number in [0, 2147483647], it is -3");
    EXPECT_EQ(error_of(session("\"tuning\":{\"points\":[{\"ce\":\"low\"}]}")),
              f + "'tuning.points[0].ce' must be a number, it is \"low\"");
    EXPECT_EQ(error_of(session("\"tuning\":{\"points\":[3]}")), f + "'tuning.points[0]' must be an object, it is 3");
    EXPECT_EQ(error_of(session("\"tuning\":{\"points\":{}}")), f + "'tuning.points' must be an array, it is an object");
    EXPECT_EQ(error_of(session("\"quantization\":{\"group\":1e300}")).rfind(f + "'quantization.group' must be a whole number", 0), 0u);
    EXPECT_EQ(error_of(session("\"view\":{\"site\":1e12}")).rfind(f + "'view.site' " + i32, 0), 0u);
    EXPECT_EQ(error_of("[1]"), "/tmp/x.cushionstudio: not a session file (the JSON is not an object)");
    EXPECT_EQ(error_of("{\"format\":\"other\"}"), "/tmp/x.cushionstudio: not a cushion-studio session file (format \"other\")");
    EXPECT_EQ(error_of(session("").substr(1)).rfind("/tmp/x.cushionstudio: invalid JSON", 0), 0u);
}

TEST(SessionFile, DefaultsAndRoundTrip) {
    const studio::SessionData d = studio::sessionFromJson(QByteArray::fromStdString(session("")), "/tmp/x.cushionstudio");
    EXPECT_EQ(d.search.tau, studio::SearchSettings().tau);
    EXPECT_EQ(d.site, 3);
    studio::SessionData s = d;
    s.search.tau = 0.25;
    s.prefix = {1, 42};
    s.quant.smoothquant_alpha = 0.8;
    const QByteArray j = studio::sessionToJson(s, "/tmp/x.cushionstudio");
    const studio::SessionData back = studio::sessionFromJson(j, "/tmp/x.cushionstudio");
    EXPECT_EQ(back.search.tau, 0.25);
    EXPECT_EQ(back.prefix, (std::vector<int>{1, 42}));
    EXPECT_DOUBLE_EQ(back.quant.smoothquant_alpha, 0.8);
}

namespace {

namespace fs = std::filesystem;
using cushion::test::entries;
using cushion::test::slurp;

std::string fresh_dir(const std::string& tag) {
    const fs::path d = fs::temp_directory_path() / ("cushion-session-" + tag + "-" + std::to_string(::getpid()));
    fs::remove_all(d);
    fs::create_directories(d);
    return d.string();
}

// readSessionFile on another thread, given `seconds` to answer: its error text, "<no error>", or "<hung>" (then a
// writer is opened on `fifo` to let the blocked open return).
std::string open_error(const std::string& path, int seconds = 20, const std::string& fifo = "") {
    auto f = std::async(std::launch::async, [path] {
        try {
            studio::readSessionFile(QString::fromStdString(path));
        } catch (const std::exception& e) {
            return std::string(e.what());
        }
        return std::string("<no error>");
    });
    if (f.wait_for(std::chrono::seconds(seconds)) == std::future_status::ready) return f.get();
    if (!fifo.empty()) ::close(::open(fifo.c_str(), O_RDWR | O_NONBLOCK));
    f.wait();
    return "<hung>";
}

// A cushion and a tuner state with `n` floats per tensor (contents from `seed`): save_cushion does not need a model.
studio::CushionPtr fake_cushion(int64_t n, float seed) {
    auto c = std::make_shared<cushion::Cushion>();
    c->prefix_ids = {1, 42};
    c->prefix_text = "<s> x";
    c->model_fingerprint = "test-model";
    for (int l = 0; l < 2; ++l) {
        c->kv.k.push_back(at::full({1, 1, 2, n}, seed + l));
        c->kv.v.push_back(at::full({1, 1, 2, n}, seed - l));
    }
    c->last_logits = at::full({32}, seed);
    return c;
}
studio::TunerStatePtr fake_tuner(int64_t n, float seed) {
    auto t = std::make_shared<studio::TunerState>();
    t->tensors = {{"tune.k.0", at::full({n}, seed)}, {"tune.v.0", at::full({n}, -seed)}};
    t->state_json = "{\"t\": " + std::to_string(seed) + "}";
    return t;
}

}  // namespace

// Opening a named pipe with no writer, a directory, a character device, a symbolic link loop: refused at once with
// what it is (the open of the pipe would wait for a writer for ever), by core's rule.
TEST(SessionFile, OpeningWhatIsNotARegularFileIsRefused) {
    const std::string d = fresh_dir("inputs");
    const std::string fifo = d + "/pipe.cushionstudio";
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    EXPECT_EQ(open_error(fifo, 20, fifo), fifo + ": the session file is a named pipe, not a regular file");
    EXPECT_EQ(open_error(d), d + ": the session file is a directory, not a regular file");
    EXPECT_EQ(open_error("/dev/zero"), "/dev/zero: the session file is a character device, not a regular file");
    fs::create_symlink(d + "/loop-b", d + "/loop-a");
    fs::create_symlink(d + "/loop-a", d + "/loop-b");
    EXPECT_EQ(open_error(d + "/loop-a"), d + "/loop-a: cannot read the session file: a symbolic link loop");
    EXPECT_EQ(open_error(d + "/missing"), d + "/missing: cannot open the session file: No such file or directory");
    fs::remove_all(d);
}

// The session, the cushion beside it and the tuner state are one set: a save that fails at any of the three (disk
// full) or in a read-only folder leaves the previous three byte-identical, no temporary, and an error naming the file.
TEST(SessionFile, AFailedSaveKeepsThePreviousSessionCushionAndTuner) {
    const std::string d = fresh_dir("pair");
    const QString path = QString::fromStdString(d + "/work.cushionstudio");
    const std::string sp = path.toStdString(), cp = studio::sessionCushionPath(path).toStdString(),
                      tp = studio::sessionTunerPath(path).toStdString();
    studio::SessionData s1;
    s1.prompt = "first";
    s1.prefix = {1, 42};
    studio::writeSessionFiles(path, s1, fake_cushion(16, 1.0f), fake_tuner(16, 1.0f));
    const std::set<std::string> files{"work.cushionstudio", "work.cushion", "work.tuner"};
    ASSERT_EQ(entries(d), files);
    const std::string session1 = slurp(sp), cushion1 = slurp(cp), tuner1 = slurp(tp);
    {
        studio::SessionData r = studio::readSessionFile(path);
        EXPECT_EQ(r.prompt, QString("first"));
        EXPECT_EQ(r.cushion_file.toStdString(), cp);
        EXPECT_EQ(r.tuner_file.toStdString(), tp);
        EXPECT_EQ(r.cushion_sha256.size(), 64);
        EXPECT_TRUE(studio::checkSessionFiles(&r).isEmpty());
        EXPECT_EQ(cushion::load_cushion(cp).prefix_ids, (std::vector<int32_t>{1, 42}));
    }
    auto expect_first = [&](const std::string& when) {
        EXPECT_EQ(slurp(sp), session1) << when;
        EXPECT_EQ(slurp(cp), cushion1) << when;
        EXPECT_EQ(slurp(tp), tuner1) << when;
        EXPECT_EQ(entries(d), files) << when;
    };
    // The disk fills at the tuner state, at the cushion, at the session JSON (a big search state: the two files
    // before it were written; with the old save they were already in place).
    const int64_t big = 64 * 1024;
    struct Case {
        const char* what;
        int64_t tuner_n, cushion_n;
        int state_bytes;
        std::string failing;
    };
    for (const Case& k : {Case{"tuner", big, 16, 0, tp}, Case{"cushion", 16, big, 0, cp}, Case{"session", 16, 16, 200000, sp}}) {
        studio::SessionData s2 = s1;
        s2.prompt = "second";
        s2.search_state = QString(k.state_bytes, 'x');
        std::string e = "<no error>";
        {
            cushion::test::FileSizeLimit limit(64 * 1024);
            ASSERT_TRUE(limit.ok());
            try {
                studio::writeSessionFiles(path, s2, fake_cushion(k.cushion_n, 2.0f), fake_tuner(k.tuner_n, 2.0f));
            } catch (const std::exception& x) {
                e = x.what();
            }
        }
        EXPECT_EQ(e.rfind(k.failing + ": not written (none of the 3 files was changed): ", 0), 0u) << k.what << ": " << e;
        EXPECT_NE(e.find("File too large"), std::string::npos) << e;
        expect_first(std::string("disk full at the ") + k.what);
    }
    // A read-only folder (skipped as root, who writes anyway).
    if (::geteuid() != 0) {
        fs::permissions(d, fs::perms::owner_read | fs::perms::owner_exec);
        std::string e;
        try {
            studio::writeSessionFiles(path, s1, fake_cushion(16, 3.0f), fake_tuner(16, 3.0f));
        } catch (const std::exception& x) {
            e = x.what();
        }
        fs::permissions(d, fs::perms::owner_all);
        EXPECT_NE(e.find("Permission denied"), std::string::npos) << e;
        expect_first("read-only folder");
    }
    // A cancelled save (the export worker's Cancel) changes nothing either.
    EXPECT_THROW(studio::writeSessionFiles(path, s1, fake_cushion(16, 4.0f), fake_tuner(16, 4.0f), [] { return true; }),
                 cushion::Cancelled);
    expect_first("cancelled");
    // A cushion that is not the one saved with the session (replaced alone): reported, not restored.
    cushion::save_cushion(*fake_cushion(16, 5.0f), cp);
    studio::SessionData r = studio::readSessionFile(path);
    const QStringList problems = studio::checkSessionFiles(&r);
    ASSERT_EQ(problems.size(), 1);
    EXPECT_TRUE(problems[0].contains("its SHA-256 differs")) << problems[0].toStdString();
    EXPECT_TRUE(r.cushion_file.isEmpty());
    EXPECT_EQ(r.tuner_file.toStdString(), tp);
    fs::remove(tp);
    r = studio::readSessionFile(path);
    EXPECT_EQ(studio::checkSessionFiles(&r).size(), 2);
    fs::remove_all(d);
}
