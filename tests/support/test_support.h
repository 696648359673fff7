// Paths and small helpers shared by the tests.
#pragma once
#include <functional>
#include <string>

namespace cushion::test {

std::string resource_dir();    // the repo's resources/
std::string bin_dir();         // build/bin (the cushion CLI, llama2c_ref)
std::string stories_bin();     // resources/models/stories260K/stories260K.bin
std::string stories_gguf();
std::string stories_tok_bin();
std::string stories_tok_model();
std::string calib_text();      // resources/text/tinystories-calib.txt
std::string eval_text();
// A fresh empty directory under the system temp dir, removed at process exit.
std::string temp_dir(const std::string& tag);
// Runs a shell command, returns its exit code; captures stdout into *out if given.
int run_command(const std::string& cmd, std::string* out = nullptr);
// Runs f and returns the message of the cushion::Error it throws; "<no error>" if it throws nothing, and
// "<not a cushion::Error: ...>" for any other exception (so a test expecting a clear error fails).
std::string error_of(const std::function<void()>& f);

}  // namespace cushion::test
