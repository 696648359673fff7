// The README's SmolLM2 screenshots (not a test; tests/gui/smollm2_screenshots.sh runs it under Xvfb):
//   smollm2_outliers.png  the studio on SmolLM2-135M: a short prompt's per-token max |x| at the down-projection
//                         inputs, layers x tokens, with the massive activation of its first token (<|endoftext|>)
//                         selected and its channels x tokens map of that layer below;
//   smollm2_cure.png      the same prompt before / after the cushion (<|endoftext|>'s KV as the prefix) on one colour
//                         scale, and the Tuning dock's perplexities without and with it under W8A8 per-tensor static.
//   smollm2_screenshots MODEL.gguf OUT_DIR
#include <QApplication>
#include <QDir>
#include <QDockWidget>
#include <QDoubleSpinBox>
#include <QElapsedTimer>
#include <QPainter>
#include <QPlainTextEdit>
#include <QTabWidget>
#include <QTest>

#include <cstdio>
#include <functional>

#include "gui_test_setup.h"
#include "heatmap_canvas.h"
#include "main_window.h"
#include "prompt_panel.h"
#include "search_panel.h"
#include "tune_panel.h"
#include "window_grab.h"

using namespace studio;

namespace {

bool waitFor(const std::function<bool()>& done, int ms) {
    QElapsedTimer t;
    t.start();
    while (!done()) {
        if (t.elapsed() > ms) return false;
        QTest::qWait(20);
    }
    return true;
}

// The window as a person sees it, its GL canvases drawn in.
bool save(MainWindow& w, const QString& path) {
    QTest::qWait(300);
    const QPixmap base = grabWithCanvases(&w);
    const bool ok = base.save(path, "PNG", 9);
    std::printf("%s %s\n", ok ? "wrote" : "could not write", qPrintable(path));
    return ok;
}

}  // namespace

int main(int argc, char** argv) {
    GuiTestSetup setup;  // scratch settings, the studio's OpenGL format
    QApplication app(argc, argv);
    QApplication::setOrganizationName("CushionCacheScreenshots");
    QApplication::setApplicationName("smollm2-screenshots");
    if (argc < 3) {
        std::fprintf(stderr, "usage: smollm2_screenshots MODEL.gguf OUT_DIR\n");
        return 2;
    }
    const QString model = argv[1], out = argv[2];
    QDir().mkpath(out);

    MainWindow w(MainWindow::Options{false});
    w.resize(1440, 900);
    w.show();
    if (!QTest::qWaitForWindowExposed(&w)) return 1;
    bool loaded = false;
    int probes = 0, measured = 0, compares = 0;
    QObject::connect(&w, &MainWindow::modelLoaded, [&] { loaded = true; });
    QObject::connect(&w, &MainWindow::heatmapUpdated, [&] { ++probes; });
    QObject::connect(&w, &MainWindow::perplexityMeasured, [&] { ++measured; });
    QObject::connect(&w, &MainWindow::compareUpdated, [&] { ++compares; });
    w.openModel(model);
    if (!waitFor([&] { return loaded; }, 300000) || !w.model()) {
        std::fprintf(stderr, "could not open %s: %s\n", qPrintable(model), qPrintable(w.errorText()));
        return 1;
    }

    // 1. The disease: the first token's massive activation at the down-projection inputs. The token strip marks
    // tokens over max/median 3000 (at PrefixQuant's 64 every SmolLM2 token is marked somewhere: tests/perf/RESULTS.md).
    w.setSite(3);
    if (auto* thr = w.findChild<QDoubleSpinBox*>("thresholdSpin")) thr->setValue(3000);
    w.promptPanel()->editor()->setPlainText(
        "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends.");
    if (!waitFor([&] { return probes > 0 && w.heatmap(); }, 300000)) return 1;
    const HeatmapDataPtr d = w.heatmap();
    int hot_layer = 0;
    for (int l = 1; l < d->layers; ++l)
        if (d->token_max[3][size_t(l) * d->tokens] > d->token_max[3][size_t(hot_layer) * d->tokens]) hot_layer = l;
    HeatmapCanvas* lc = w.layerCanvas();
    QTest::mouseClick(lc, Qt::LeftButton, {}, lc->cellCenter(hot_layer, 0).toPoint());
    if (!waitFor([&] { return w.channelCanvas()->rows() > 0 && w.selectedLayer() == hot_layer; }, 300000)) return 1;
    std::printf("%d tokens; the first token's largest |x| at layer %d: %.1f\n", d->tokens, hot_layer,
                d->token_max[3][size_t(hot_layer) * d->tokens]);
    if (!save(w, out + "/smollm2_outliers.png")) return 1;

    // 2. The cure: the cushion (a search started on the calibration text: its prefix, <|endoftext|>, is the cushion
    // the search keeps on SmolLM2) before / after, and the perplexities under W8A8 per-tensor static.
    SearchSettings s;
    s.sample_tokens = 128;
    w.searchPanel()->setSettings(s);
    w.newSearch();
    if (!waitFor([&] { return w.searchSnapshot() && !w.searchBusy(); }, 600000) || !w.currentCushion()) return 1;
    w.tuneDock()->raise();
    w.measurePerplexity();
    if (!waitFor([&] { return measured >= 2 && !w.tuneBusy(); }, 1800000)) return 1;
    for (PplWhich which : {PplWhich::None, PplWhich::Before})
        if (const PplResultPtr r = w.tunePanel()->perplexity(which))
            std::printf("perplexity %s: FP %.4f, %s %.4f\n", which == PplWhich::None ? "without a cushion" : "with the cushion",
                        r->fp, qPrintable(r->scheme), r->quant);
    w.centreTabs()->setCurrentIndex(1);
    if (!waitFor([&] { return w.comparison() != nullptr; }, 600000)) return 1;
    std::printf("%s\n", qPrintable(w.compareSummary()));
    if (!save(w, out + "/smollm2_cure.png")) return 1;
    return 0;
}
