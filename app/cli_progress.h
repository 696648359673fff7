// A progress bar on stderr for the command line: drawn only once work has taken over a second,
// redrawn in place on a terminal, a line per 10% otherwise. Ctrl-C makes it return false (cancel).
#pragma once
#include <chrono>
#include <string>

#include "base/progress.h"

namespace cushion::cli {

void install_interrupt_handler();  // SIGINT sets a flag the progress callbacks see
bool interrupted();

class ProgressBar {
public:
    explicit ProgressBar(std::string label, bool quiet = false);
    ~ProgressBar();
    ProgressFn fn();                 // callback for core functions
    bool update(double fraction, const std::string& what);
    void finish();

private:
    std::string label_;
    bool quiet_, tty_, drawn_ = false;
    int last_decile_ = -1;
    std::chrono::steady_clock::time_point start_;
};

}  // namespace cushion::cli
