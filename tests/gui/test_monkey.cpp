// Studio monkey test (issue 15): random valid actions on the real window, as a person would do them (clicks on
// the panels' buttons, keys into the prompt, the menus' shortcuts, the file dialogs filled in), with a fixed seed,
// on the embedded default model (stories260K). It fails on
//   - a crash: a signal handler prints the seed and the last actions before the process dies;
//   - a deadlock: after each action a queued marker must come back through the event loop within 10 s, every ~100
//     actions all work must finish within 180 s, and a watchdog thread aborts (with the action log) when the GUI
//     thread stops ticking for 30 s or one action runs for over 180 s (a modal loop nobody ends);
//   - a GUI-thread stall over 200 ms: a 5 ms timer on the GUI thread measures the gaps between its ticks (as
//     tests/perf/bench_gui_stall.cpp does); the part of a gap the GUI thread spent runnable but waiting for a CPU
//     (the kernel's /proc/thread-self/schedstat) is the machine's load, not the studio's, and is reported apart.
// On failure it prints the action log (seed, index, action) and the command that replays it:
//   xvfb-run -a -s "-screen 0 1920x1200x24" build/bin/gui_monkey_tests --seed S --actions N   (or MONKEY_SEED,
//   MONKEY_ACTIONS; --verbose prints every action as it goes).
// Replaying draws the same actions in the same order; whether a drawn action is possible (a button enabled) depends
// on how far the background work has got, so a replay follows the same path as long as the timing allows.
#include <QAbstractItemModel>
#include <QAction>
#include <QApplication>
#include <QCheckBox>
#include <QDir>
#include <QDockWidget>
#include <QElapsedTimer>
#include <QFileDialog>
#include <QFileInfo>
#include <QLineEdit>
#include <QMenu>
#include <QMenuBar>
#include <QMessageBox>
#include <QPlainTextEdit>
#include <QPushButton>
#include <QSettings>
#include <QSpinBox>
#include <QTabBar>
#include <QTabWidget>
#include <QTableView>
#include <QTemporaryDir>
#include <QTest>
#include <QTimer>
#include <QWheelEvent>

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gui_test_setup.h"
#include "export_dialog.h"
#include "heatmap_canvas.h"
#include "main_window.h"
#include "prompt_panel.h"
#include "quant_panel.h"
#include "search_panel.h"
#include "search_workers.h"
#include "stall_meter.h"
#include "tune_panel.h"

using namespace studio;

namespace {

qint64 kStallLimitMs = 200;  // MONKEY_STALL_LIMIT_MS overrides it (to see the failure report)
constexpr int kSettleMs = 10000;      // a queued marker must come back within this
constexpr int kIdleMs = 180000;       // all work must finish within this when waited for
constexpr int kWatchdogTickMs = 30000;
constexpr int kWatchdogActionMs = 180000;

// ------------------------------------------------------------------------------- the action log

// A ring of the last actions in fixed buffers, so that a signal handler can write them out.
constexpr int kRing = 64;
constexpr int kLine = 200;
char g_ring[kRing][kLine];
std::atomic<int> g_ring_next{0};
char g_header[kLine];
std::vector<std::string> g_log;  // every action (for failures the program itself detects)

void writeAll(const char* s) {
    size_t n = std::strlen(s);
    while (n > 0) {
        const ssize_t w = ::write(2, s, n);
        if (w <= 0) return;
        s += w;
        n -= size_t(w);
    }
}

void dumpRing() {
    writeAll(g_header);
    writeAll("last actions (index: action):\n");
    const int next = g_ring_next.load();
    for (int i = std::max(0, next - kRing); i < next; ++i) {
        writeAll("  ");
        writeAll(g_ring[i % kRing]);
        writeAll("\n");
    }
}

void onFatalSignal(int sig) {
    writeAll("\n*** monkey test: fatal signal ");
    char num[16];
    std::snprintf(num, sizeof num, "%d", sig);
    writeAll(num);
    writeAll(" ***\n");
    dumpRing();
    signal(sig, SIG_DFL);
    raise(sig);
}

bool g_verbose = false;

void logAction(int index, const std::string& what) {
    char line[kLine];
    std::snprintf(line, sizeof line, "%d: %s", index, what.c_str());
    const int slot = g_ring_next.load() % kRing;
    std::memcpy(g_ring[slot], line, kLine);
    g_ring_next.fetch_add(1);
    g_log.push_back(line);
    if (g_verbose) std::printf("%s\n", line), std::fflush(stdout);
}

// ------------------------------------------------------------------------------- stall meter

QElapsedTimer g_clock;
std::atomic<qint64> g_heartbeat{0};     // ms, the GUI thread's last tick
std::atomic<qint64> g_action_start{-1};  // ms, the running action's start (-1: none)
std::atomic<bool> g_stop_watchdog{false};

// ------------------------------------------------------------------------------- the monkey

class Monkey {
public:
    Monkey(MainWindow* w, uint64_t seed, const QString& scratch) : w_(w), seed_(seed), draw_(seed), scratch_(scratch) {
        // Modal dialogs (the file dialogs of Save / Open session): filled in like a person would, by a timer that
        // runs inside their event loop.
        connect_ = QObject::connect(&modal_timer_, &QTimer::timeout, [this] { answerModal(); });
        modal_timer_.start(30);
    }

    struct Action {
        const char* name;
        int weight;
        std::function<bool()> possible;
        std::function<std::string(std::mt19937_64&)> run;  // returns what it did (for the log)
    };

    std::vector<Action> actions();

    void answerModal() {
        QWidget* m = QApplication::activeModalWidget();
        if (!m) return;
        if (auto* fd = qobject_cast<QFileDialog*>(m)) {
            auto* edit = fd->findChild<QLineEdit*>("fileNameEdit");
            if (!answer_.isEmpty() && edit) {
                edit->setText(answer_);  // as pasted
                QTest::keyClick(edit, Qt::Key_Return);
                ++dialogs_answered_;
            } else {
                QTest::keyClick(fd, Qt::Key_Escape);
                ++dialogs_dismissed_;
            }
            answer_.clear();
            return;
        }
        if (auto* mb = qobject_cast<QMessageBox*>(m)) {
            QAbstractButton* yes = mb->button(QMessageBox::Yes);
            if (yes)
                QTest::mouseClick(yes, Qt::LeftButton);
            else
                QTest::keyClick(mb, Qt::Key_Escape);
            return;
        }
        QTest::keyClick(m, Qt::Key_Escape);  // any other modal window: closed
        ++dialogs_dismissed_;
    }

    bool idle() const {
        WorkerThreads* t = w_->workers();
        return !t->model()->isBusy() && !t->probe()->isBusy() && !t->quant()->isBusy() && !t->search()->isBusy() &&
               !t->tune()->isBusy() && !t->exporter()->isBusy() && !w_->searchRunning() && !w_->tuneRunning() &&
               !(w_->exportDialog() && w_->exportDialog()->isBusy());
    }

    // Drawn actions, deterministic in the seed: the action kind from one stream, its parameters from a stream
    // seeded by (seed, index), so that an action that is not possible now does not shift the later draws.
    int next(std::vector<Action>& list, int* drawn) {
        int total = 0;
        for (const Action& a : list) total += a.weight;
        for (;;) {
            ++*drawn;
            int r = int(draw_() % uint64_t(total));
            for (size_t i = 0; i < list.size(); ++i) {
                r -= list[i].weight;
                if (r < 0) {
                    if (list[i].possible()) return int(i);
                    break;
                }
            }
        }
    }

    QString answer_;  // the path the next file dialog gets
    int dialogs_answered_ = 0, dialogs_dismissed_ = 0;
    QStringList sessions_;  // saved so far
    int exports_ = 0;

private:
    QDockWidget* dock(const QString& name) const { return w_->findChild<QDockWidget*>(name); }
    // Brings a tabbed dock to the front by clicking its tab.
    void showDock(QDockWidget* d) {
        for (QTabBar* tb : w_->findChildren<QTabBar*>()) {
            if (qobject_cast<QTabWidget*>(tb->parentWidget())) continue;  // the centre's own tabs
            for (int i = 0; i < tb->count(); ++i)
                if (tb->tabText(i) == d->windowTitle() && tb->isVisible()) {
                    QTest::mouseClick(tb, Qt::LeftButton, {}, tb->tabRect(i).center());
                    return;
                }
        }
    }
    bool clickButton(QDockWidget* d, QPushButton* b) {
        showDock(d);
        if (!b->isEnabled() || !b->isVisible()) return false;
        QTest::mouseClick(b, Qt::LeftButton);
        return true;
    }
    // A key on the window; its menus' shortcuts work while one of the studio's windows is active, so when none is
    // (a closed dialog leaves none active under Xvfb, which has no window manager) the main window is activated first,
    // as a person would click it.
    void key(int k, Qt::KeyboardModifiers mods = Qt::NoModifier) {
        if (!QApplication::activeWindow()) {
            w_->activateWindow();
            (void)QTest::qWaitForWindowActive(w_, 2000);
        }
        QTest::keyClick(w_, static_cast<Qt::Key>(k), mods);
    }

    MainWindow* w_;
    uint64_t seed_;
    std::mt19937_64 draw_;
    QString scratch_;
    QTimer modal_timer_;
    QMetaObject::Connection connect_;
};

std::vector<Monkey::Action> Monkey::actions() {
    static const char* words[] = {"Once", "upon", "a", "time", "there", "was", "little", "cat", "named", "Tom", "He",
                                  "liked", "to", "play", "with", "red", "ball", "in", "the", "park", "every", "day",
                                  ".", ",", "!", "Lily", "dog", "sun", "happy", "big"};
    const int nwords = int(sizeof words / sizeof *words);
    SearchPanel* sp = w_->searchPanel();
    TunePanel* tp = w_->tunePanel();
    QuantPanel* qp = w_->quantPanel();
    QDockWidget* sd = dock("searchDock");
    QDockWidget* td = dock("tuneDock");
    QDockWidget* qd = dock("quantDock");
    auto always = [] { return true; };
    auto hasModel = [this] { return w_->model() != nullptr; };
    std::vector<Action> a;

    // The prompt.
    a.push_back({"type", 8, always, [=](std::mt19937_64& r) {
                     key(Qt::Key_L, Qt::ControlModifier);  // View > Focus prompt
                     QPlainTextEdit* e = w_->promptPanel()->editor();
                     const bool replace = r() % 3 == 0;
                     if (replace)
                         QTest::keyClick(e, Qt::Key_A, Qt::ControlModifier);
                     else
                         QTest::keyClick(e, Qt::Key_End, Qt::ControlModifier);
                     QString text;
                     const int n = 1 + int(r() % 6);
                     for (int i = 0; i < n; ++i) text += QString(" ") + words[r() % nwords];
                     QTest::keyClicks(e, text);
                     return std::string(replace ? "type over the prompt:" : "type at the end:") + text.toStdString();
                 }});
    a.push_back({"erase", 3, always, [=](std::mt19937_64& r) {
                     key(Qt::Key_L, Qt::ControlModifier);
                     QPlainTextEdit* e = w_->promptPanel()->editor();
                     QTest::keyClick(e, Qt::Key_End, Qt::ControlModifier);
                     const int n = 1 + int(r() % 12);
                     for (int i = 0; i < n; ++i) QTest::keyClick(e, Qt::Key_Backspace);
                     return "backspace x" + std::to_string(n);
                 }});
    a.push_back({"probe", 1, always, [=](std::mt19937_64&) {
                     key(Qt::Key_F5);
                     return std::string("F5 (probe now)");
                 }});
    // The views.
    a.push_back({"site", 5, always, [=](std::mt19937_64& r) {
                     const int s = int(r() % 5);
                     key(Qt::Key_1 + s, Qt::AltModifier);
                     return "Alt+" + std::to_string(s + 1) + " (site)";
                 }});
    a.push_back({"layer", 4, always, [=](std::mt19937_64& r) {
                     const bool up = r() % 2;
                     key(up ? Qt::Key_Up : Qt::Key_Down, Qt::AltModifier);
                     return std::string(up ? "Alt+Up (previous layer)" : "Alt+Down (next layer)");
                 }});
    a.push_back({"centre tab", 4, always, [=](std::mt19937_64& r) {
                     QTabBar* tb = w_->centreTabs()->tabBar();
                     const int i = int(r() % uint64_t(tb->count()));
                     QTest::mouseClick(tb, Qt::LeftButton, {}, tb->tabRect(i).center());
                     return "centre tab " + std::to_string(i);
                 }});
    a.push_back({"click map", 4, [this] { return w_->heatmap() && w_->layerCanvas()->isVisible(); },
                 [=](std::mt19937_64& r) {
                     HeatmapCanvas* c = w_->layerCanvas();
                     const QRectF p = c->plotRect();
                     const QPoint at(int(p.left() + p.width() * double(r() % 1000) / 1000),
                                     int(p.top() + p.height() * double(r() % 1000) / 1000));
                     QTest::mouseClick(c, Qt::LeftButton, {}, at);
                     return "click the layer map at " + std::to_string(at.x()) + "," + std::to_string(at.y());
                 }});
    a.push_back({"zoom", 2, [this] { return w_->heatmap() && w_->layerCanvas()->isVisible(); },
                 [=](std::mt19937_64& r) {
                     HeatmapCanvas* c = w_->layerCanvas();
                     const QPointF at = c->plotRect().center();
                     const int delta = (r() % 2 ? 1 : -1) * 120 * int(1 + r() % 3);
                     QWheelEvent wheel(at, c->mapToGlobal(at), QPoint(), QPoint(0, delta), Qt::NoButton, Qt::NoModifier,
                                       Qt::NoScrollPhase, false);
                     QApplication::sendEvent(c, &wheel);
                     return "wheel " + std::to_string(delta) + " on the layer map";
                 }});
    a.push_back({"reset zoom", 1, always, [=](std::mt19937_64&) {
                     key(Qt::Key_0, Qt::ControlModifier);
                     return std::string("Ctrl+0 (reset zoom)");
                 }});
    a.push_back({"dock", 4, always, [=](std::mt19937_64& r) {
                     QDockWidget* d = std::vector<QDockWidget*>{qd, sd, td}[r() % 3];
                     showDock(d);
                     return "show the " + d->windowTitle().toStdString() + " dock";
                 }});
    // The greedy search: its panel's buttons and the Run menu's keys.
    struct B {
        const char* name;
        QPushButton* b;
    };
    for (B b : {B{"search New", sp->newButton()}, B{"search Step", sp->stepButton()}, B{"search Score", sp->scoreButton()},
                B{"search Run", sp->runButton()}, B{"search Pause", sp->pauseButton()}, B{"search Cancel", sp->cancelButton()},
                B{"search Accept best", sp->acceptButton()}, B{"search Use selected", sp->useButton()},
                B{"search Undo", sp->undoButton()}}) {
        const int weight = std::strcmp(b.name, "search New") == 0 ? 2 : 5;
        a.push_back({b.name, weight, [b] { return b.b->isEnabled(); }, [=](std::mt19937_64&) {
                         return std::string(clickButton(sd, b.b) ? "click " : "(disabled by now) ") + b.name;
                     }});
    }
    a.push_back({"select candidate", 4, [sp] { return sp->candidateRows() > 0; }, [=](std::mt19937_64& r) {
                     showDock(sd);
                     QTableView* t = sp->candidateView();
                     const int rows = t->model()->rowCount();
                     if (rows == 0) return std::string("(no candidates by now)");
                     const int row = int(r() % uint64_t(std::min(rows, 20)));
                     const QModelIndex i = t->model()->index(row, 0);
                     t->scrollTo(i);
                     QTest::mouseClick(t->viewport(), Qt::LeftButton, {}, t->visualRect(i).center());
                     return "click candidate row " + std::to_string(row);
                 }});
    a.push_back({"search keys", 4, always, [=](std::mt19937_64& r) {
                     switch (r() % 4) {
                         case 0: key(Qt::Key_F6); return std::string("F6 (search step)");
                         case 1: key(Qt::Key_F7); return std::string("F7 (search run)");
                         case 2: key(Qt::Key_F7, Qt::ShiftModifier); return std::string("Shift+F7 (search pause)");
                         default: key(Qt::Key_F6, Qt::ShiftModifier); return std::string("Shift+F6 (search undo)");
                     }
                 }});
    // Tuning.
    for (B b : {B{"tune Start", tp->startButton()}, B{"tune Pause", tp->pauseButton()}, B{"tune Resume", tp->resumeButton()},
                B{"tune Step", tp->stepButton()}, B{"tune Cancel", tp->cancelButton()}, B{"tune Perplexity", tp->measureButton()}}) {
        a.push_back({b.name, 3, [b] { return b.b->isEnabled(); }, [=](std::mt19937_64&) {
                         return std::string(clickButton(td, b.b) ? "click " : "(disabled by now) ") + b.name;
                     }});
    }
    a.push_back({"F8", 1, always, [=](std::mt19937_64&) {
                     key(Qt::Key_F8);
                     return std::string("F8 (tune)");
                 }});
    // Quantization.
    a.push_back({"quantize", 2, hasModel, [=](std::mt19937_64&) {
                     key(Qt::Key_R, Qt::ControlModifier);
                     return std::string("Ctrl+R (quantize and evaluate)");
                 }});
    a.push_back({"quant Cancel", 2, [qp] { return qp->findChild<QPushButton*>("quantCancelButton") && qp->findChild<QPushButton*>("quantCancelButton")->isEnabled(); },
                 [=](std::mt19937_64&) {
                     QPushButton* b = qp->findChild<QPushButton*>("quantCancelButton");
                     return std::string(clickButton(qd, b) ? "click " : "(disabled by now) ") + "quant Cancel";
                 }});
    a.push_back({"cancel all", 2, always, [=](std::mt19937_64&) {
                     key(Qt::Key_Period, Qt::ControlModifier);
                     return std::string("Ctrl+. (cancel running work)");
                 }});
    // Export: the dialog, a new directory in the scratch folder, 1 evaluation document; then Export.
    a.push_back({"export", 2, hasModel, [=](std::mt19937_64& r) {
                     key(Qt::Key_E, Qt::ControlModifier);
                     ExportDialog* d = w_->exportDialog();
                     if (!d || !d->isVisible()) return std::string("Ctrl+E: no dialog");
                     if (d->isBusy()) return std::string("Ctrl+E: the dialog is exporting");
                     auto* dir = d->findChild<QLineEdit*>("exportDir");
                     const QString path = QDir(scratch_).filePath(QString("package-%1").arg(++exports_));
                     dir->selectAll();
                     QTest::keyClicks(dir, path);
                     auto* docs = d->findChild<QSpinBox*>("exportEvalDocs");
                     docs->selectAll();
                     QTest::keyClicks(docs, "1");
                     if (r() % 4 == 0) QTest::mouseClick(d->findChild<QCheckBox*>("exportOverwrite"), Qt::LeftButton);
                     if (!d->exportButton()->isEnabled()) return "Ctrl+E, " + path.toStdString() + ": Export disabled (no cushion)";
                     QTest::mouseClick(d->exportButton(), Qt::LeftButton);
                     return "Ctrl+E, export to " + path.toStdString();
                 }});
    a.push_back({"export Cancel/Close", 3, [this] { return w_->exportDialog() && w_->exportDialog()->isVisible(); },
                 [=](std::mt19937_64& r) {
                     ExportDialog* d = w_->exportDialog();
                     if (r() % 2) {
                         QTest::keyClick(d, Qt::Key_Escape);
                         return std::string("Esc on the export dialog");
                     }
                     QTest::mouseClick(d->cancelButton(), Qt::LeftButton);
                     return std::string("click the export dialog's ") + d->cancelButton()->text().toStdString();
                 }});
    // Sessions: File > Save session as… / Save session / Open session…, through their file dialogs.
    a.push_back({"save session as", 2, hasModel, [=](std::mt19937_64&) {
                     const QString path = QDir(scratch_).filePath(QString("session-%1.cushionstudio").arg(sessions_.size() + 1));
                     answer_ = path;
                     key(Qt::Key_S, Qt::ControlModifier | Qt::ShiftModifier);
                     answer_.clear();
                     sessions_ << path;
                     return "Ctrl+Shift+S (save session as) " + path.toStdString();
                 }});
    a.push_back({"save session", 1, [this] { return !w_->sessionPath().isEmpty(); }, [=](std::mt19937_64&) {
                     key(Qt::Key_S, Qt::ControlModifier);
                     return "Ctrl+S (save session) " + w_->sessionPath().toStdString();
                 }});
    a.push_back({"open session", 1, [this] { return !sessions_.isEmpty(); }, [=](std::mt19937_64& r) {
                     // Only sessions whose save has finished (their file exists); else the dialog is cancelled.
                     const QString path = sessions_[int(r() % uint64_t(sessions_.size()))];
                     answer_ = QFileInfo::exists(path) ? path : QString();
                     key(Qt::Key_O, Qt::ControlModifier | Qt::AltModifier);
                     const bool had = !answer_.isEmpty() || QFileInfo::exists(path);
                     answer_.clear();
                     return std::string("Ctrl+Alt+O (open session) ") + (had ? path.toStdString() : "cancelled: not saved yet");
                 }});
    a.push_back({"open default model", 1, always, [=](std::mt19937_64&) {
                     key(Qt::Key_D, Qt::ControlModifier | Qt::ShiftModifier);
                     return std::string("Ctrl+Shift+D (open the default model)");
                 }});
    // Pauses: a person reads the screen; now and then waits for the work to finish.
    a.push_back({"wait", 6, always, [=](std::mt19937_64& r) {
                     const int ms = 100 + int(r() % 900);
                     QTest::qWait(ms);
                     return "wait " + std::to_string(ms) + " ms";
                 }});
    return a;
}

bool settle() {
    // A marker queued now comes back once the events before it were handled.
    bool back = false;
    QTimer::singleShot(0, [&] { back = true; });
    QElapsedTimer t;
    t.start();
    while (!back) {
        if (t.elapsed() > kSettleMs) return false;
        QTest::qWait(1);
    }
    return true;
}

bool waitIdle(Monkey& m, int ms) {
    QElapsedTimer t;
    t.start();
    while (!m.idle()) {
        if (t.elapsed() > ms) return false;
        QTest::qWait(20);
    }
    return true;
}

void printLog(uint64_t seed, int actions) {
    std::fprintf(stderr, "\naction log (seed %llu):\n", (unsigned long long)seed);
    for (const std::string& l : g_log) std::fprintf(stderr, "  %s\n", l.c_str());
    std::fprintf(stderr, "replay: xvfb-run -a -s \"-screen 0 1920x1200x24\" gui_monkey_tests --seed %llu --actions %d --verbose\n",
                 (unsigned long long)seed, actions);
}

}  // namespace

int main(int argc, char** argv) {
    GuiTestSetup setup;  // scratch settings, the studio's OpenGL format
    QApplication app(argc, argv);
    QApplication::setOrganizationName("CushionCacheTest");
    QApplication::setApplicationName("cushion-studio-monkey");
    QSettings().clear();
    g_clock.start();

    if (qEnvironmentVariableIsSet("MONKEY_STALL_LIMIT_MS")) kStallLimitMs = qEnvironmentVariableIntValue("MONKEY_STALL_LIMIT_MS");
    uint64_t seed = qEnvironmentVariableIsSet("MONKEY_SEED") ? qEnvironmentVariable("MONKEY_SEED").toULongLong() : 20251201;
    int actions = qEnvironmentVariableIsSet("MONKEY_ACTIONS") ? qEnvironmentVariableIntValue("MONKEY_ACTIONS") : 1000;
    const QStringList args = app.arguments();
    for (int i = 1; i < args.size(); ++i) {
        if (args[i] == "--seed" && i + 1 < args.size())
            seed = args[++i].toULongLong();
        else if (args[i] == "--actions" && i + 1 < args.size())
            actions = args[++i].toInt();
        else if (args[i] == "--verbose")
            g_verbose = true;
        else {
            std::fprintf(stderr, "usage: %s [--seed N] [--actions N] [--verbose]\n", argv[0]);
            return 2;
        }
    }
    std::snprintf(g_header, sizeof g_header, "monkey test: seed %llu, %d actions; replay with --seed %llu --actions %d\n",
                  (unsigned long long)seed, actions, (unsigned long long)seed, actions);
    for (int sig : {SIGSEGV, SIGABRT, SIGFPE, SIGBUS, SIGILL}) signal(sig, onFatalSignal);
    std::printf("%s", g_header);
    std::fflush(stdout);

    QTemporaryDir scratch;
    MainWindow w(MainWindow::Options{false});
    w.resize(1600, 1000);
    w.show();
    if (!QTest::qWaitForWindowExposed(&w)) {
        std::fprintf(stderr, "the window was not shown\n");
        return 1;
    }
    w.activateWindow();
    (void)QTest::qWaitForWindowActive(&w);
    // Small work so that a step, a tuning run or an export takes seconds on a busy 2-core machine: the settings a
    // person would type into the panels.
    SearchSettings ss;
    ss.tau = 0.95;
    ss.max_prefix = 4;
    ss.sample_tokens = 32;
    ss.candidates = "3-40";
    ss.prune_window = 8;
    ss.prune_keep = 4;
    w.searchPanel()->setSettings(ss);
    TuneSettings ts;
    ts.epochs = 1;
    ts.batch = 2;
    ts.doc_tokens = 32;
    ts.eval_docs = 2;
    w.tunePanel()->setSettings(ts);

    // The watchdog: a GUI thread that stops ticking, or an action that never returns (a modal loop).
    std::thread watchdog([] {
        while (!g_stop_watchdog.load()) {
            std::this_thread::sleep_for(std::chrono::milliseconds(500));
            const qint64 now = g_clock.elapsed();
            const qint64 beat = g_heartbeat.load(), started = g_action_start.load();
            const bool gui_stuck = beat > 0 && now - beat > kWatchdogTickMs;
            const bool action_stuck = started >= 0 && now - started > kWatchdogActionMs;
            if (gui_stuck || action_stuck) {
                writeAll(gui_stuck ? "\n*** monkey test: the GUI thread has not ticked for 30 s (deadlock?) ***\n"
                                   : "\n*** monkey test: one action has run for 180 s (a modal loop or a hang) ***\n");
                dumpRing();
                std::abort();
            }
        }
    });

    StallMeter meter(kStallLimitMs);
    meter.onTick([] { g_heartbeat.store(g_clock.elapsed()); });
    Monkey monkey(&w, seed, scratch.path());
    // Errors the window shows (not failures by themselves: printed, with the action that led to them).
    std::vector<std::string> errors;
    // What the actions got done, from the window's signals.
    int loaded = 0, probed = 0, quantized = 0, searched = 0, tuned = 0, perplexities = 0, exported = 0, saved = 0, opened = 0;
    QObject::connect(&w, &MainWindow::modelLoaded, [&] { ++loaded; });
    QObject::connect(&w, &MainWindow::heatmapUpdated, [&] { ++probed; });
    QObject::connect(&w, &MainWindow::quantizationDone, [&] { ++quantized; });
    QObject::connect(&w, &MainWindow::searchUpdated, [&] { ++searched; });
    QObject::connect(&w, &MainWindow::tuningUpdated, [&] { ++tuned; });
    QObject::connect(&w, &MainWindow::perplexityMeasured, [&] { ++perplexities; });
    QObject::connect(&w, &MainWindow::exportDone, [&] { ++exported; });
    QObject::connect(&w, &MainWindow::sessionSaved, [&] { ++saved; });
    QObject::connect(&w, &MainWindow::sessionOpened, [&] { ++opened; });
    QObject::connect(&w, &MainWindow::errorShown, [&](const QString& m) {
        errors.push_back("after action " + std::to_string(int(g_log.size()) - 1) + ": " + m.toStdString());
    });
    std::vector<Monkey::Action> list = monkey.actions();
    std::vector<int> count(list.size(), 0);
    QElapsedTimer run_time;
    run_time.start();
    meter.start();
    bool failed = false;
    std::string failure;

    // Action 0: open the default model (File > Open default model), and wait for it.
    auto perform = [&](int index, int which) {
        std::mt19937_64 params(seed * 1000003ULL + uint64_t(index));
        g_action_start.store(g_clock.elapsed());
        meter.setAction(index, list[which].name);
        const std::string what = list[which].run(params);
        g_action_start.store(-1);
        logAction(index, what);
        meter.setAction(index, what);
        ++count[which];
    };
    {
        g_action_start.store(g_clock.elapsed());
        QTest::keyClick(&w, Qt::Key_D, Qt::ControlModifier | Qt::ShiftModifier);
        g_action_start.store(-1);
        logAction(0, "Ctrl+Shift+D (open the default model)");
        QElapsedTimer t;
        t.start();
        while (!w.model() && t.elapsed() < kIdleMs) QTest::qWait(20);
        if (!w.model()) {
            failed = true;
            failure = "the default model did not load";
        }
    }
    int drawn = 0, idle_waits = 0;
    for (int i = 1; i <= actions && !failed; ++i) {
        const int which = monkey.next(list, &drawn);
        perform(i, which);
        if (!settle()) {
            failed = true;
            failure = "the event loop did not settle within 10 s after action " + std::to_string(i);
            break;
        }
        std::mt19937_64 pause(seed * 7919ULL + uint64_t(i));
        QTest::qWait(int(pause() % 60));
        if (i % 100 == 0) {
            ++idle_waits;
            if (!waitIdle(monkey, kIdleMs)) {
                failed = true;
                failure = "the work started by the actions did not finish within 180 s (after action " + std::to_string(i) + ")";
                break;
            }
            std::printf("%d actions, %.0f s, longest stall %lld ms (GUI thread's own %lld ms)\n", i,
                        run_time.elapsed() / 1000.0, meter.longestGap().gap_ms, meter.longestOwn().own_ms);
            std::fflush(stdout);
        }
    }
    if (!failed && !waitIdle(monkey, kIdleMs)) {
        failed = true;
        failure = "the work did not finish within 180 s after the last action";
    }
    meter.stop();
    const double secs = run_time.elapsed() / 1000.0;
    if (!failed && meter.over(kStallLimitMs) > 0) {
        failed = true;
        failure = std::to_string(meter.over(kStallLimitMs)) + " GUI-thread stall(s) over " + std::to_string(kStallLimitMs) + " ms";
    }

    std::printf("\nmonkey test, seed %llu: %d actions run (%d drawn; drawn ones not possible at the time were drawn again), "
                "%.1f s, %d idle checkpoints\n",
                (unsigned long long)seed, int(g_log.size()) - 1, drawn, secs, idle_waits);
    std::printf("per action:");
    for (size_t i = 0; i < list.size(); ++i) std::printf(" %s %d;", list[i].name, count[i]);
    std::printf("\nfile dialogs answered %d, dismissed %d; exports started %d; sessions saved %d\n", monkey.dialogs_answered_,
                monkey.dialogs_dismissed_, monkey.exports_, int(monkey.sessions_.size()));
    std::printf("done: models loaded %d, heatmaps %d, quantizations %d, search updates %d, tuning updates %d, perplexities %d, "
                "exports %d, sessions saved %d, opened %d\n",
                loaded, probed, quantized, searched, tuned, perplexities, exported, saved, opened);
    std::printf("GUI-thread timer ticks %lld; longest gap %lld ms (action %d: %s); longest gap less the time waiting for a CPU "
                "%lld ms (action %d: %s)\n",
                meter.ticks(), meter.longestGap().gap_ms, meter.longestGap().action, meter.longestGap().what.c_str(),
                meter.longestOwn().own_ms, meter.longestOwn().action, meter.longestOwn().what.c_str());
    std::vector<StallMeter::Stall> worst = meter.stalls();
    std::stable_sort(worst.begin(), worst.end(), [](const StallMeter::Stall& a, const StallMeter::Stall& b) { return a.own_ms > b.own_ms; });
    if (worst.size() > 20) worst.resize(20);
    for (const StallMeter::Stall& s : worst)
        std::printf("  stall %lld ms (own %lld ms) at action %d: %s\n", s.gap_ms, s.own_ms, s.action, s.what.c_str());
    std::printf("errors shown in the window: %zu\n", errors.size());
    for (const std::string& e : errors) std::printf("  %s\n", e.c_str());
    std::fflush(stdout);
    if (failed) {
        std::fprintf(stderr, "\nFAILED: %s\n", failure.c_str());
        printLog(seed, actions);
    }
    w.close();
    g_stop_watchdog.store(true);
    watchdog.join();
    return failed ? 1 : 0;
}
