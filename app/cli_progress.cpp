#include "cli_progress.h"

#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>

namespace cushion::cli {

namespace {
std::atomic<bool> g_interrupted{false};
void on_sigint(int) { g_interrupted = true; }
}  // namespace

void install_interrupt_handler() { std::signal(SIGINT, on_sigint); }
bool interrupted() { return g_interrupted; }

ProgressBar::ProgressBar(std::string label, bool quiet)
    : label_(std::move(label)), quiet_(quiet), tty_(isatty(STDERR_FILENO)), start_(std::chrono::steady_clock::now()) {}

ProgressBar::~ProgressBar() { finish(); }

ProgressFn ProgressBar::fn() {
    return [this](double f, const std::string& what) { return update(f, what); };
}

bool ProgressBar::update(double f, const std::string& what) {
    if (g_interrupted) return false;
    if (quiet_) return true;
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    if (secs < 1.0 && !drawn_) return true;
    f = f < 0 ? 0 : f > 1 ? 1 : f;
    const double eta = f > 0 ? secs * (1 - f) / f : 0;
    if (tty_) {
        const int width = 30, fill = static_cast<int>(f * width);
        std::string bar(fill, '#');
        bar.resize(width, '.');
        std::fprintf(stderr, "\r%s [%s] %5.1f%%  %s  %.0fs elapsed, ETA %.0fs   ", label_.c_str(), bar.c_str(),
                     100 * f, what.c_str(), secs, eta);
    } else {
        const int decile = static_cast<int>(f * 10);
        if (decile == last_decile_) return true;
        last_decile_ = decile;
        std::fprintf(stderr, "%s: %3.0f%% %s (%.0fs elapsed, ETA %.0fs)\n", label_.c_str(), 100 * f, what.c_str(),
                     secs, eta);
    }
    std::fflush(stderr);
    drawn_ = true;
    return true;
}

void ProgressBar::finish() {
    if (drawn_ && tty_) std::fprintf(stderr, "\n");
    drawn_ = false;
}

}  // namespace cushion::cli
