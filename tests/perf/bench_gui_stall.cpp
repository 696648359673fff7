// GUI-thread stalls while the studio's workers run (issue 7): not a test, a measurement (tests/perf/RESULTS.md).
//
//   xvfb-run -a -s "-screen 0 1920x1200x24" build/bin/bench_gui_stall [--runs N] [--sample] [quant] [search] [tune] [idle]
//
// Opens the real window on the embedded stories260K, probes a prompt, then per scenario and run drives the
// work the GUI tests drive (quantization W8A8 static; a greedy search step over 256 candidates, then a pruned
// one; one tuning epoch of 3 batches; `idle`: no worker, the quantization's progress signal sent at 30 Hz)
// while a 5 ms QTimer on the GUI thread measures the longest gap between its ticks.
// For the longest gap of each run it prints where the GUI thread's time went, from its CPU clock and the
// kernel's schedstat (/proc/thread-self/schedstat): on the CPU, runnable but waiting for a CPU, or off the
// CPU (sleeping or blocked); plus the longest event handled inside the gap, and the event rate over the run.
// --sample adds a 1 ms sampler thread: the system call the GUI thread sits in, and the X server's CPU time.
#include <QApplication>
#include <QDir>
#include <QElapsedTimer>
#include <QPlainTextEdit>
#include <QSurfaceFormat>
#include <QTemporaryDir>
#include <QTest>
#include <QThread>
#include <QTimer>

#include <execinfo.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "heatmap_canvas.h"
#include "main_window.h"
#include "prompt_panel.h"
#include "quant_panel.h"
#include "search_panel.h"
#include "tune_panel.h"

using namespace studio;

namespace {

QElapsedTimer g_clock;

struct Event {
    qint64 t0, dur;  // ns
    int type;
    const char* cls;
};

// Times every event the GUI thread handles (outermost notify only).
class App : public QApplication {
public:
    using QApplication::QApplication;
    bool recording = false;
    std::vector<Event> events;
    bool notify(QObject* o, QEvent* e) override {
        thread_local int depth = 0;
        if (!recording || depth > 0 || QThread::currentThread() != thread()) {
            ++depth;
            const bool r = QApplication::notify(o, e);
            --depth;
            return r;
        }
        const Event ev{g_clock.nsecsElapsed(), 0, e->type(), o->metaObject()->className()};
        ++depth;
        const bool r = QApplication::notify(o, e);
        --depth;
        events.push_back(ev);
        events.back().dur = g_clock.nsecsElapsed() - ev.t0;
        return r;
    }
};

// The GUI thread's time on the CPU and waiting in the run queue (ns), from the kernel.
struct Sched {
    qint64 cpu = 0, wait = 0;
};
Sched readSched(int fd) {
    char buf[128] = {};
    Sched s;
    long long cpu = 0;
    if (pread(fd, buf, sizeof buf - 1, 0) > 0) std::sscanf(buf, "%lld %lld", &cpu, &s.wait);
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);  // precise, where schedstat's is updated at ticks
    s.cpu = ts.tv_sec * 1000000000LL + ts.tv_nsec;
    return s;
}

struct Tick {
    qint64 t;
    Sched s;
};

// A stack of the GUI thread taken when the sampler sees it blocked for 10 ms (SIGUSR2 to that thread).
void* g_stack[64];
std::atomic<int> g_stack_depth{0};
void onStackSignal(int) {
    if (g_stack_depth.load() == 0) g_stack_depth.store(backtrace(g_stack, 64));
}

// Every 1 ms, what the GUI thread is doing in the kernel (/proc/<tid>/syscall: the system call it is blocked
// in, or "running"), and the CPU the X server (Xvfb) has used and waited for: where an off-CPU gap goes.
struct Sample {
    qint64 t;
    int syscall;  // -1: running
    Sched x;      // the X server's main thread
};
class Sampler {
public:
    void start(int gui_tid) {
        samples.clear();
        const QByteArray display = qgetenv("DISPLAY");
        for (const QString& pid : QDir("/proc").entryList(QDir::Dirs)) {
            QFile f("/proc/" + pid + "/cmdline");
            if (!pid.toInt() || !f.open(QIODevice::ReadOnly)) continue;
            const QList<QByteArray> argv = f.readAll().split('\0');
            if (argv.size() > 1 && argv[0].endsWith("Xvfb") && argv[1] == display) x_pid_ = pid.toInt();
        }
        run_ = true;
        thread_ = std::thread([this, gui_tid] {
            const int sc = open(QString("/proc/self/task/%1/syscall").arg(gui_tid).toUtf8(), O_RDONLY);
            const int xs = x_pid_ ? open(QString("/proc/%1/schedstat").arg(x_pid_).toUtf8(), O_RDONLY) : -1;
            int blocked = 0;
            while (run_) {
                char buf[256] = {};
                Sample s{g_clock.nsecsElapsed(), -1, {}};
                if (pread(sc, buf, sizeof buf - 1, 0) > 0 && buf[0] != 'r') s.syscall = std::atoi(buf);
                blocked = s.syscall == 202 ? blocked + 1 : 0;
                if (blocked == 10 && !stacked_) {
                    stacked_ = true;
                    syscall(SYS_tgkill, getpid(), gui_tid, SIGUSR2);
                }
                if (xs >= 0 && pread(xs, buf, sizeof buf - 1, 0) > 0) std::sscanf(buf, "%lld %lld", &s.x.cpu, &s.x.wait);
                samples.push_back(s);
                usleep(1000);
            }
            close(sc);
            if (xs >= 0) close(xs);
        });
    }
    void stop() {
        run_ = false;
        if (thread_.joinable()) thread_.join();
        if (stacked_) {
            for (int i = 0; i < 100 && g_stack_depth.load() == 0; ++i) usleep(1000);
            std::printf("GUI thread blocked in futex for 10 ms, its stack:\n");
            std::fflush(stdout);
            backtrace_symbols_fd(g_stack, g_stack_depth.load(), 1);
            g_stack_depth.store(0);
            stacked_ = false;
        }
    }
    std::vector<Sample> samples;

private:
    std::thread thread_;
    std::atomic<bool> run_{false};
    bool stacked_ = false;
    int x_pid_ = 0;
};

class Meter {
public:
    explicit Meter(App& app, bool sample) : app_(app), sample_(sample) {
        fd_ = open("/proc/thread-self/schedstat", O_RDONLY);
        tid_ = static_cast<int>(gettid());
        QObject::connect(&timer_, &QTimer::timeout, [this] { ticks_.push_back({g_clock.nsecsElapsed(), readSched(fd_)}); });
    }
    ~Meter() { close(fd_); }
    void start() {
        ticks_.clear();
        app_.events.clear();
        app_.recording = true;
        if (sample_) sampler_.start(tid_);
        ticks_.push_back({g_clock.nsecsElapsed(), readSched(fd_)});
        timer_.start(5);
    }
    // Prints the longest gap and its break-down; returns it in ms.
    double stop(const char* label) {
        timer_.stop();
        app_.recording = false;
        sampler_.stop();
        ticks_.push_back({g_clock.nsecsElapsed(), readSched(fd_)});
        size_t worst = 1;
        for (size_t i = 1; i < ticks_.size(); ++i)
            if (ticks_[i].t - ticks_[i - 1].t > ticks_[worst].t - ticks_[worst - 1].t) worst = i;
        const Tick &a = ticks_[worst - 1], &b = ticks_[worst];
        const double gap = (b.t - a.t) / 1e6, cpu = (b.s.cpu - a.s.cpu) / 1e6, wait = (b.s.wait - a.s.wait) / 1e6;
        const Event* longest = nullptr;
        double in_events = 0;
        for (const Event& e : app_.events) {
            if (e.t0 + e.dur < a.t || e.t0 > b.t) continue;
            in_events += (std::min(b.t, e.t0 + e.dur) - std::max(a.t, e.t0)) / 1e6;
            if (!longest || e.dur > longest->dur) longest = &e;
        }
        const double secs = (ticks_.back().t - ticks_.front().t) / 1e9;
        std::map<int, int> per_type;
        double paint_ms = 0;
        for (const Event& e : app_.events) {
            ++per_type[e.type];
            if (e.type == QEvent::UpdateRequest || e.type == QEvent::Paint) paint_ms += e.dur / 1e6;
        }
        std::printf("%-16s longest gap %6.1f ms: GUI thread on CPU %5.1f, runnable waiting %5.1f, off CPU %5.1f; "
                    "in event handlers %5.1f",
                    label, gap, cpu, wait, gap - cpu - wait, in_events);
        if (longest)
            std::printf(" (longest: type %d to %s, %.1f ms)", longest->type, longest->cls, longest->dur / 1e6);
        std::printf("\n%-16s %.2f s, %zu events (%.0f/s), window updates %d (%.1f ms painting)\n", "", secs,
                    app_.events.size(), app_.events.size() / std::max(secs, 1e-9), per_type[QEvent::UpdateRequest], paint_ms);
        if (sample_) {
            std::map<int, int> calls;
            const Sample *x0 = nullptr, *x1 = nullptr;
            for (const Sample& e : sampler_.samples) {
                if (e.t < a.t || e.t > b.t) continue;
                ++calls[e.syscall];
                if (!x0) x0 = &e;
                x1 = &e;
            }
            std::printf("%-16s GUI thread in the gap, 1 ms samples by system call (-1 = running):", "");
            for (auto [nr, n] : calls) std::printf(" %d: %d", nr, n);
            if (x0 && x1)
                std::printf("; X server on CPU %.1f ms, waiting for a CPU %.1f ms", (x1->x.cpu - x0->x.cpu) / 1e6,
                            (x1->x.wait - x0->x.wait) / 1e6);
            std::printf("\n");
        }
        std::fflush(stdout);
        return gap;
    }

private:
    App& app_;
    QTimer timer_;
    std::vector<Tick> ticks_;
    int fd_ = -1, tid_ = 0;
    bool sample_;
    Sampler sampler_;
};

bool waitFor(const std::function<bool()>& done, int ms = 300000) {
    QElapsedTimer t;
    t.start();
    while (!done()) {
        if (t.elapsed() > ms) return false;
        QTest::qWait(5);
    }
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    QTemporaryDir config;
    qputenv("XDG_CONFIG_HOME", config.path().toUtf8());
    QSurfaceFormat fmt;
    fmt.setVersion(3, 3);
    fmt.setProfile(QSurfaceFormat::CoreProfile);
    QSurfaceFormat::setDefaultFormat(fmt);
    App app(argc, argv);
    QApplication::setOrganizationName("CushionCacheBench");
    QApplication::setApplicationName("bench-gui-stall");
    g_clock.start();
    int runs = 3;
    bool sample = false;
    QStringList scenarios;
    const QStringList args = app.arguments();
    for (int i = 1; i < args.size(); ++i) {
        if (args[i] == "--runs" && i + 1 < args.size()) runs = args[++i].toInt();
        else if (args[i] == "--sample") sample = true;
        else scenarios << args[i];
    }
    if (scenarios.isEmpty()) scenarios = {"quant", "search", "tune"};

    MainWindow w(MainWindow::Options{false});
    w.show();
    if (!QTest::qWaitForWindowExposed(&w)) return 1;
    std::printf("window %d x %d\n", w.width(), w.height());
    bool loaded = false, probed = false;
    QObject::connect(&w, &MainWindow::modelLoaded, [&] { loaded = true; });
    QObject::connect(&w, &MainWindow::heatmapUpdated, [&] { probed = true; });
    w.openDefaultModel();
    if (!waitFor([&] { return loaded; })) return 1;
    w.promptPanel()->editor()->setPlainText("Tom had a big red ball. He liked to play with it in the park every day.");
    if (!waitFor([&] { return probed; })) return 1;
    QTest::qWait(500);

    Meter meter(app, sample);
    backtrace(g_stack, 1);  // loads libgcc before the signal handler needs it
    signal(SIGUSR2, onStackSignal);
    std::printf("GUI-thread stall, %d run(s) per scenario, %d cores\n", runs, QThread::idealThreadCount());
    for (const QString& sc : scenarios) {
        for (int r = 0; r < runs; ++r) {
            if (sc == "quant") {
                int done = 0;
                auto c = QObject::connect(&w, &MainWindow::quantizationDone, [&] { ++done; });
                w.quantPanel()->setSettings(defaultQuantScheme());  // W8A8 per-tensor static
                meter.start();
                w.runQuantization();
                if (!waitFor([&] { return done > 0; })) return 1;
                meter.stop("quantization");
                QObject::disconnect(c);
            } else if (sc == "search") {
                SearchSettings s;
                s.tau = 1.0;
                s.max_prefix = 5;
                s.sample_tokens = 48;
                s.candidates = "3-258";
                s.prune_window = 12;
                s.prune_keep = 8;
                for (bool pruned : {false, true}) {
                    s.pruned = pruned;
                    w.searchPanel()->setSettings(s);
                    if (!pruned) {
                        w.newSearch();
                        if (!waitFor([&] { return !w.searchBusy(); })) return 1;
                    }
                    meter.start();
                    w.searchStep();
                    if (!waitFor([&] { return !w.searchBusy(); })) return 1;
                    meter.stop(pruned ? "search (pruned)" : "search (all)");
                }
            } else if (sc == "idle") {
                // No worker: the quantization's progress signal at 30 Hz for 1.5 s, as the worker sends it.
                QTimer fake;
                int n = 0;
                QObject::connect(&fake, &QTimer::timeout, [&] {
                    ++n;
                    emit w.workers()->quant()->progress(n / 45.0, QString("calibrating: document %1").arg(n));
                });
                const int f0 = w.layerCanvas()->frameCount() + w.channelCanvas()->frameCount();
                meter.start();
                fake.start(33);
                QTest::qWait(1500);
                fake.stop();
                meter.stop("idle, progress");
                std::printf("%-16s heatmap canvas frames drawn meanwhile: %d\n", "", w.layerCanvas()->frameCount() + w.channelCanvas()->frameCount() - f0);
            } else if (sc == "tune") {
                if (!w.searchSnapshot() || w.searchSnapshot()->prefix.size() < 2) {
                    SearchSettings s;
                    s.candidates = "3-258";
                    s.sample_tokens = 48;
                    s.pruned = true;
                    w.searchPanel()->setSettings(s);
                    w.searchStep();
                    if (!waitFor([&] { return !w.searchBusy(); })) return 1;
                }
                TuneSettings t;
                t.epochs = 1;
                t.batch = 3;
                t.doc_tokens = 48;
                t.eval_docs = 3;
                w.tunePanel()->setSettings(t);
                meter.start();
                w.startTuning();
                if (!waitFor([&] { return w.tuneSnapshot() && w.tuneSnapshot()->done && !w.tuneBusy(); })) return 1;
                meter.stop("tuning");
            }
            QTest::qWait(300);
        }
    }
    return 0;
}
