// GUI-thread stalls while the studio's workers run (issue 7): not a test, a measurement (tests/perf/RESULTS.md).
//
//   xvfb-run -a -s "-screen 0 1920x1200x24" build/bin/bench_gui_stall [--runs N] [--sample] [quant] [search] [tune] [idle]
//   xvfb-run -a -s "-screen 0 1920x1200x24" build/bin/bench_gui_stall --model models/SmolLM2-135M-Instruct.Q4_1.gguf \
//       --tokens 512 [--runs N] probe maps
//
// Opens the real window on the embedded stories260K, probes a prompt, then per scenario and run drives the
// work the GUI tests drive (quantization W8A8 static; a greedy search step over 256 candidates, then a pruned
// one; one tuning epoch of 3 batches; `idle`: no worker, the quantization's progress signal sent at 30 Hz)
// while a 5 ms QTimer on the GUI thread measures the longest gap between its ticks.
// For the longest gap of each run it prints where the GUI thread's time went, from its CPU clock and the
// kernel's schedstat (/proc/thread-self/schedstat): on the CPU, runnable but waiting for a CPU, or off the
// CPU (sleeping or blocked); plus the longest event handled inside the gap, and the event rate over the run.
// --sample adds a 1 ms sampler thread: the system call the GUI thread sits in, and the X server's CPU time.
// --model PATH opens that model instead (e.g. SmolLM2-135M: 30 layers, 576 channels) with a prompt of --tokens N
// tokens (default 512, cut from the evaluation text), for two more scenarios: `probe` (the longest GUI-thread gap
// while the prompt is probed and its maps are taken in) and `maps` (frame times of the two canvases, switching the
// channel map's layer and the probe site, scrolling and hovering; each with the longest GUI-thread gap). `maps`
// runs twice per run: with the channel maps of every layer of the shown site kept by the probe (the studio's
// policy) and with only the shown (layer, site) kept (the policy before), so before / after come from one run.
#include <QApplication>
#include <QDir>
#include <QElapsedTimer>
#include <QFile>
#include <QPlainTextEdit>
#include <QTest>
#include <QThread>
#include <QTimer>
#include <QWheelEvent>

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

#include "../gui/gui_test_setup.h"
#include "base/resources.h"
#include "model/model.h"
#include "heatmap_canvas.h"
#include "main_window.h"
#include "prompt_panel.h"
#include "quant_panel.h"
#include "search_panel.h"
#include "tune_panel.h"
#include "workers.h"

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

struct Stats {
    std::vector<double> v;
    void add(double x) { v.push_back(x); }
    double mean() const {
        double s = 0;
        for (double x : v) s += x;
        return v.empty() ? 0 : s / v.size();
    }
    double max() const { return v.empty() ? 0 : *std::max_element(v.begin(), v.end()); }
    double median() const {
        if (v.empty()) return 0;
        std::vector<double> c = v;
        std::nth_element(c.begin(), c.begin() + c.size() / 2, c.end());
        return c[c.size() / 2];
    }
    void print(const char* label) const {
        std::printf("%-34s n %3zu  mean %7.2f  median %7.2f  max %7.2f ms\n", label, v.size(), mean(), median(), max());
    }
};

// A prompt of about n tokens (with the model's <bos>) from the evaluation text.
QString promptOfTokens(const MainWindow& w, int n) {
    QFile f(QString::fromStdString(cushion::sample_text_path("tinystories-eval.txt")));
    if (!f.open(QIODevice::ReadOnly)) return {};
    const std::string text = QString::fromUtf8(f.readAll()).replace('\n', ' ').toStdString();
    const auto& tk = *w.model()->model->tokenizer;
    const std::vector<int32_t> ids = tk.encode(text, true);
    std::string out;
    const size_t first = !ids.empty() && ids[0] == tk.bos_id() ? 1 : 0;
    for (size_t i = first; i < ids.size() && int(i) < n; ++i) out += tk.decode_token(i ? ids[i - 1] : -1, ids[i]);
    return QString::fromStdString(out);
}

void sendWheel(QWidget* target, QPointF pos, int dy, Qt::KeyboardModifiers mods) {
    QWheelEvent e(pos, target->mapToGlobal(pos), QPoint(), QPoint(0, dy), Qt::NoButton, mods, Qt::NoScrollPhase, false);
    QApplication::sendEvent(target, &e);
}

// Waits until the channel map shows (layer, site): taken from the probe's data, or probed again.
bool waitForChannelMap(MainWindow& w, int layer, int site) {
    return waitFor([&] {
        const HeatmapDataPtr d = w.heatmap();
        return d && d->channelMap(layer, site) && w.channelCanvas()->rows() > 0;
    });
}

}  // namespace

int main(int argc, char** argv) {
    GuiTestSetup setup;  // scratch settings, the studio's OpenGL format
    App app(argc, argv);
    QApplication::setOrganizationName("CushionCacheBench");
    QApplication::setApplicationName("bench-gui-stall");
    g_clock.start();
    int runs = 3;
    bool sample = false;
    QString model_path;
    int prompt_tokens = 512;
    QStringList scenarios;
    const QStringList args = app.arguments();
    for (int i = 1; i < args.size(); ++i) {
        if (args[i] == "--runs" && i + 1 < args.size()) runs = args[++i].toInt();
        else if (args[i] == "--sample") sample = true;
        else if (args[i] == "--model" && i + 1 < args.size()) model_path = args[++i];
        else if (args[i] == "--tokens" && i + 1 < args.size()) prompt_tokens = args[++i].toInt();
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
    QString prompt = "Tom had a big red ball. He liked to play with it in the park every day.";
    if (model_path.isEmpty()) {
        w.openDefaultModel();
        if (!waitFor([&] { return loaded; })) return 1;
    } else {
        QElapsedTimer lt;
        lt.start();
        w.openModel(model_path);
        if (!waitFor([&] { return loaded; }) || !w.model()) {
            std::printf("could not open %s: %s\n", qPrintable(model_path), qPrintable(w.errorText()));
            return 1;
        }
        std::printf("model %s: %lld layers, dim %lld, hidden %lld, vocabulary %lld; opened in %.1f s\n",
                    qPrintable(model_path), w.model()->layers, w.model()->dim, w.model()->hidden, w.model()->vocab,
                    lt.elapsed() / 1000.0);
        prompt = promptOfTokens(w, prompt_tokens);
        probed = false;
    }
    w.promptPanel()->editor()->setPlainText(prompt);
    if (!waitFor([&] { return probed && w.heatmap(); })) return 1;
    std::printf("prompt: %d tokens x %d layers, probed in %.2f s\n", w.heatmap()->tokens, w.heatmap()->layers,
                w.heatmap()->seconds);
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
            } else if (sc == "probe") {
                // The prompt probed again (a new request id): the worker's forward pass and maps, then the GUI
                // thread takes them in (maps, token strip, first frames).
                probed = false;
                meter.start();
                w.requestProbe();
                if (!waitFor([&] { return probed; })) return 1;
                QTest::qWait(100);  // the canvases' first frames after the new data
                meter.stop("probe");
                std::printf("%-16s %d tokens, worker %.2f s\n", "", w.heatmap()->tokens, w.heatmap()->seconds);
            } else if (sc == "maps") {
                for (bool site_layers : {false, true}) {
                    w.workers()->probe()->setKeepSiteLayers(site_layers);
                    std::printf("--- channel maps kept by the probe: %s\n",
                                site_layers ? "every layer of the shown site (now)" : "the shown (layer, site) only (before)");
                    w.setSite(3);
                    w.selectLayer(0);
                    probed = false;
                    w.requestProbe();
                    if (!waitFor([&] { return probed; }) || !waitForChannelMap(w, 0, 3)) return 1;
                    QTest::qWait(300);
                    HeatmapCanvas* lc = w.layerCanvas();
                    HeatmapCanvas* cc = w.channelCanvas();
                    // Steady frames (textures cached), 30 each.
                    Stats lf, cf;
                    for (int i = 0; i < 30; ++i) {
                        lf.add(lc->renderFrameNow());
                        cf.add(cc->renderFrameNow());
                    }
                    std::printf("layer map %d x %d, channel map %d x %d\n", lc->rows(), lc->cols(), cc->rows(), cc->cols());
                    lf.print("frame, layer map (cached)");
                    cf.print("frame, channel map (cached)");
                    // Switching the channel map's layer: until the new layer's map is drawn.
                    Stats sw, first, gui;
                    meter.start();
                    for (int l : {1, 5, 10, 15, 20, 25, 29, 2}) {
                        QElapsedTimer t;
                        t.start();
                        w.selectLayer(l);
                        gui.add(t.nsecsElapsed() / 1e6);
                        if (!waitForChannelMap(w, l, 3)) return 1;
                        first.add(cc->renderFrameNow());
                        sw.add(t.nsecsElapsed() / 1e6);
                        QTest::qWait(50);
                    }
                    meter.stop("switch layers");
                    gui.print("layer switch, GUI-thread call");
                    first.print("layer switch, first frame (texture)");
                    sw.print("layer switch, until drawn");
                    // Switching the probe site.
                    Stats ss, sfirst;
                    meter.start();
                    for (int s : {0, 1, 2, 4, 3}) {
                        QElapsedTimer t;
                        t.start();
                        w.setSite(s);
                        if (!waitForChannelMap(w, w.selectedLayer(), s)) return 1;
                        sfirst.add(lc->renderFrameNow() + cc->renderFrameNow());
                        ss.add(t.nsecsElapsed() / 1e6);
                        QTest::qWait(50);
                    }
                    meter.stop("switch sites");
                    sfirst.print("site switch, first frames (both)");
                    ss.print("site switch, until drawn");
                    // Scrolling: zoom in on the token axis, pan, zoom out; both canvases follow (shared token axis).
                    Stats zf;
                    meter.start();
                    const QPointF mid = lc->plotRect().center();
                    auto step = [&](int dy, Qt::KeyboardModifiers m) {
                        sendWheel(lc, mid, dy, m);
                        zf.add(lc->renderFrameNow() + cc->renderFrameNow());
                        QTest::qWait(16);
                    };
                    for (int i = 0; i < 12; ++i) step(120, Qt::NoModifier);
                    for (int i = 0; i < 20; ++i) step(i < 10 ? -120 : 120, Qt::ShiftModifier);
                    for (int i = 0; i < 12; ++i) step(-120, Qt::NoModifier);
                    meter.stop("scroll");
                    zf.print("scroll step, frames (both maps)");
                    // Hovering across the channel map (tooltip text every frame).
                    Stats hf;
                    meter.start();
                    const QRectF pr = cc->plotRect();
                    for (int i = 0; i < 40; ++i) {
                        const QPointF p(pr.left() + pr.width() * (i + 0.5) / 40, pr.top() + pr.height() * ((i * 7) % 40 + 0.5) / 40);
                        QMouseEvent e(QEvent::MouseMove, p, cc->mapToGlobal(p), Qt::NoButton, Qt::NoButton, Qt::NoModifier);
                        QApplication::sendEvent(cc, &e);
                        hf.add(cc->renderFrameNow());
                        QTest::qWait(16);
                    }
                    meter.stop("hover");
                    hf.print("hover, frame (channel map)");
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
