#include "test_support.h"

#include "base/error.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <vector>

namespace cushion::test {
namespace fs = std::filesystem;

std::string resource_dir() { return CUSHION_TEST_RESOURCE_DIR; }
std::string bin_dir() { return CUSHION_BIN_DIR; }
std::string stories_bin() { return resource_dir() + "/models/stories260K/stories260K.bin"; }
std::string stories_gguf() { return resource_dir() + "/models/stories260K/stories260K.gguf"; }
std::string stories_tok_bin() { return resource_dir() + "/models/stories260K/tok512.bin"; }
std::string stories_tok_model() { return resource_dir() + "/models/stories260K/tok512.model"; }
std::string calib_text() { return resource_dir() + "/text/tinystories-calib.txt"; }
std::string eval_text() { return resource_dir() + "/text/tinystories-eval.txt"; }

namespace {
std::mutex g_mu;
std::vector<std::string>* g_dirs = nullptr;
void cleanup() {
    if (!g_dirs) return;
    for (auto& d : *g_dirs) {
        std::error_code ec;
        fs::remove_all(d, ec);
    }
}
}  // namespace

std::string temp_dir(const std::string& tag) {
    std::lock_guard<std::mutex> lock(g_mu);
    if (!g_dirs) {
        g_dirs = new std::vector<std::string>();
        std::atexit(cleanup);
    }
    std::string tmpl = (fs::temp_directory_path() / ("cushion-test-" + tag + "-XXXXXX")).string();
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (!mkdtemp(buf.data())) return {};
    g_dirs->push_back(buf.data());
    return buf.data();
}

int run_command(const std::string& cmd, std::string* out) {
    FILE* p = popen(cmd.c_str(), "r");
    if (!p) return -1;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0)
        if (out) out->append(buf, n);
    int rc = pclose(p);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    } catch (const std::exception& e) {
        return std::string("<not a cushion::Error: ") + e.what() + ">";
    }
    return "<no error>";
}

}  // namespace cushion::test

#include <gtest/gtest.h>

#include "base/threads.h"

// The tests use the same thread count as the executables they are compared with (results depend on
// the reduction order, i.e. on the thread count, in the last digits).
int main(int argc, char** argv) {
    cushion::use_all_cores();
    ::testing::InitGoogleTest(&argc, argv);
    return RUN_ALL_TESTS();
}
