// GUI tests: QtTest drives the real studio window under Xvfb, as a person would use it: open the default
// model, type a prompt and wait for the heatmap, hover/click/zoom/pan, switch probe sites, quantize and
// read the perplexities and the chart, cancel, step the greedy search (override a step, undo, score
// first, run / pause / cancel), tune the prefix with live loss curves, export a package with progress and
// cancel, save a session and reopen it in a new window, see errors in the window, drag and drop a model,
// and get the session back from the settings. Each test function sets up what it needs through small idempotent
// helpers (ensureModelLoaded, ensureHeatmap, ensureSearchStepped, ensureTuned, ensureExported: the UI steps,
// only when not yet done), so they pass in any order (ctest gui_studio_tests_order runs them reversed:
// tests/gui/run_shuffled.py). Screenshots of each stage go to CUSHION_SCREENSHOT_DIR (build/screenshots, or resources/screenshots with -DCUSHION_UPDATE_SCREENSHOTS=ON).
#include <QAction>
#include <QApplication>
#include <QDir>
#include <QDockWidget>
#include <QElapsedTimer>
#include <QLabel>
#include <QFile>
#include <QMenu>
#include <QMimeData>
#include <QPlainTextEdit>
#include <QPushButton>
#include <QSettings>
#include <QSignalSpy>
#include <QTemporaryDir>
#include <QTimer>
#include <QTest>
#include <QTreeWidget>
#include <QUrl>

#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>
#include <QPainter>
#include <QSpinBox>
#include <QTabWidget>
#include <QTableView>
#include <QTableWidget>
#include <QtCharts/QAbstractSeries>
#include <QtCharts/QAreaSeries>
#include <QtCharts/QBarSeries>
#include <QtCharts/QChart>
#include <QtCharts/QChartView>
#include <QtCharts/QLineSeries>

#include <cmath>
#include <memory>
#include <random>

#include "gui_test_setup.h"
#include "export_dialog.h"
#include "heatmap_canvas.h"
#include "main_window.h"
#include "model_panel.h"
#include "prompt_panel.h"
#include "quant_panel.h"
#include "search_panel.h"
#include "stall_meter.h"
#include "window_grab.h"
#include "search_workers.h"
#include "session.h"
#include "tune_panel.h"

using namespace studio;

namespace {

QString resource(const QString& rel) { return QString(CUSHION_TEST_RESOURCE_DIR) + "/" + rel; }

void screenshot(QWidget* w, const QString& name) {
    QTest::qWait(50);  // let pending layouts settle (a label that just changed its text)
    QDir().mkpath(CUSHION_SCREENSHOT_DIR);
    const QString path = QString(CUSHION_SCREENSHOT_DIR) + "/" + name + ".png";
    QVERIFY2(grabWithCanvases(w).save(path), qPrintable("cannot save " + path));
}

// A canvas pixel well inside the plot is not the background: the map was really drawn.
bool canvasShowsMap(HeatmapCanvas* c) {
    const QImage img = c->grabFramebuffer();
    const QRectF p = c->plotRect();
    const double dpr = c->devicePixelRatioF();
    int coloured = 0, samples = 0;
    for (int i = 1; i < 10; ++i)
        for (int j = 1; j < 10; ++j) {
            const QColor px = img.pixelColor(int((p.left() + p.width() * i / 10) * dpr), int((p.top() + p.height() * j / 10) * dpr));
            ++samples;
            // background is (28, 28, 33); inferno's low end is near black, its upper part is bright
            if (px.red() > 60 || px.green() > 60) ++coloured;
        }
    return coloured > 0;
}

// A dialog drawn over the window it belongs to, for the screenshots.
void screenshotWithDialog(QWidget* w, QWidget* dialog, const QString& name) {
    QTest::qWait(50);
    QDir().mkpath(CUSHION_SCREENSHOT_DIR);
    QPixmap base = grabWithCanvases(w);
    const QPixmap d = grabWithCanvases(dialog);
    {
        // Xvfb has no window manager: draw a title bar like one would.
        QPainter p(&base);
        const int bar = 26;
        const QPoint at((base.width() - d.width()) / 2, (base.height() - d.height() - bar) / 3 + bar);
        const QRect frame(at - QPoint(1, bar), QSize(d.width() + 2, d.height() + bar + 1));
        p.fillRect(frame.translated(6, 6), QColor(0, 0, 0, 90));  // a shadow
        p.fillRect(frame, QColor(58, 60, 66));
        p.setPen(Qt::white);
        p.drawText(QRect(frame.left() + 10, frame.top(), frame.width() - 20, bar), Qt::AlignVCenter, dialog->windowTitle());
        p.drawPixmap(at, d);
    }
    const QString path = QString(CUSHION_SCREENSHOT_DIR) + "/" + name + ".png";
    QVERIFY2(base.save(path), qPrintable("cannot save " + path));
}

bool isSortedByLoss(SearchPanel* sp, const SearchScores& sc) {
    for (int r = 1; r < sp->candidateRows(); ++r)
        if (sc.loss[sp->candidateAt(r)] < sc.loss[sp->candidateAt(r - 1)]) return false;
    return true;
}

}  // namespace

class TestStudio : public QObject {
    Q_OBJECT
    std::unique_ptr<MainWindow> w_;
    QTemporaryDir package_dir_;  // the packages exported here (the export test's, or ensureExported's)
    QString exported_pkg_;       // a package exported with W8A8 per-tensor-static, for the test that opens it
    bool searched_ = false;      // w_ has started a search (its first one shows the before / after view)

    static constexpr const char* kStory =
        "Once upon a time, there was a little cat named Tom. Tom liked to play with a red ball.";

    void typePrompt(const QString& text) {
        QPlainTextEdit* e = w_->promptPanel()->editor();
        e->clear();
        e->setFocus();
        QTest::keyClicks(e, text);
    }

    // ---- Set-up helpers: each does the UI steps only when they are not done yet, so that any test can run
    // first (and after any other). They return false when the step did not come about in time.

    // The default model (stories260K.bin, llama2c), not a package or the GGUF copy another test opened.
    bool ensureModelLoaded() {
        const auto isDefault = [this] {
            const ModelInfoPtr m = w_->model();
            return m && !m->package && m->format == "llama2c" && m->path.endsWith("stories260K.bin");
        };
        if (isDefault()) return true;
        w_->openDefaultModel();
        if (!QTest::qWaitFor(isDefault, 120000)) return false;
        // The prompt's probe on the new model has landed (a test's spy hears only its own).
        return w_->promptPanel()->text().isEmpty() ||
               QTest::qWaitFor([this] { return w_->heatmap() && w_->heatmap()->model_key == w_->model()->model.get(); },
                               120000);
    }
    // The default model's heatmaps of kStory at the down-projection input (site 3), on the activation tab.
    bool ensureHeatmap() {
        if (!ensureModelLoaded()) return false;
        w_->centreTabs()->setCurrentIndex(0);
        if (w_->site() != 3) w_->setSite(3);
        if (w_->promptPanel()->text() != QString(kStory)) typePrompt(kStory);
        return QTest::qWaitFor(
            [this] {
                const HeatmapDataPtr d = w_->heatmap();
                return d && d->model_key == w_->model()->model.get() && d->tokens > 15 && !d->truncated &&
                       w_->layerCanvas()->cols() == d->tokens && w_->channelCanvas()->rows() == 172;
            },
            120000);
    }
    // The small search settings of these tests (256 candidates, a 48-token sample).
    static SearchSettings smallSearch() {
        SearchSettings s;
        s.tau = 1.0;  // accept any improvement: every step grows the prefix
        s.max_prefix = 5;
        s.sample_tokens = 48;
        s.candidates = "3-258";
        s.pruned = false;
        s.prune_window = 12;
        s.prune_keep = 8;
        return s;
    }
    // A search on the default model with a cushion (one step at least) and the small settings.
    bool ensureSearchStepped() {
        if (!ensureHeatmap()) return false;
        const SearchSnapshotPtr s = w_->searchSnapshot();
        if (s && !w_->searchBusy() && s->prefix.size() >= 2 && !s->done && s->settings.candidates == "3-258" &&
            s->settings.sample_tokens == 48)
            return true;
        return freshSearch();
    }
    // A new search with the small settings, one step made.
    bool freshSearch() {
        if (!ensureHeatmap()) return false;
        if (!QTest::qWaitFor([this] { return !w_->searchBusy() && !w_->tuneBusy(); }, 120000)) return false;
        SearchPanel* sp = w_->searchPanel();
        sp->setSettings(smallSearch());
        QSignalSpy su(w_.get(), &MainWindow::searchUpdated);
        QTest::mouseClick(sp->newButton(), Qt::LeftButton);
        searched_ = true;
        if (!QTest::qWaitFor([&] { return su.count() >= 1 && !w_->searchBusy(); }, 120000) ||
            w_->searchSnapshot()->prefix.size() != 1)
            return false;
        QTest::mouseClick(sp->stepButton(), Qt::LeftButton);
        return QTest::qWaitFor([&] { return su.count() >= 2 && !w_->searchBusy(); }, 180000) &&
               w_->searchSnapshot()->prefix.size() == 2;
    }
    // The small tuning settings of these tests (2 epochs of 3 batches of 3 documents cut to 48 tokens).
    void setSmallTuning() {
        TuneSettings t = w_->tunePanel()->settings();
        t.epochs = 2;
        t.batch = 3;
        t.doc_tokens = 48;
        t.eval_docs = 3;
        w_->tunePanel()->setSettings(t);
    }
    // A finished tuning of the search's cushion: the current cushion is the tuned one.
    bool ensureTuned() {
        if (!ensureSearchStepped()) return false;
        if (w_->cushionIsTuned() && w_->tuneSnapshot() && w_->tuneSnapshot()->done && !w_->tuneBusy()) return true;
        setSmallTuning();
        TunePanel* tp = w_->tunePanel();
        if (!tp->startButton()->isEnabled()) return false;
        QTest::mouseClick(tp->startButton(), Qt::LeftButton);
        return QTest::qWaitFor([&] { return w_->tuneSnapshot() && w_->tuneSnapshot()->done && !w_->tuneBusy() &&
                                            w_->cushionIsTuned(); }, 240000);
    }
    // W8A8 per-tensor-static, the scheme of the exported package.
    static cushion::QuantConfig w8a8Static() {
        cushion::QuantConfig s;
        s.wbits = 8;
        s.abits = 8;
        s.act = cushion::ActGranularity::PerTensorStatic;
        return s;
    }
    // A package exported with W8A8 per-tensor-static and 3 evaluation documents: its directory, or empty.
    QString ensureExported() {
        if (!exported_pkg_.isEmpty() && QFileInfo::exists(exported_pkg_ + "/quantization.json")) return exported_pkg_;
        if (!ensureSearchStepped()) return QString();
        QuantPanel* q = w_->quantPanel();
        const cushion::QuantConfig old = q->settings();
        q->setSettings(w8a8Static());
        const QString pkg = package_dir_.filePath(QString("package-%1").arg(++packages_));
        QTest::keyClick(w_.get(), Qt::Key_E, Qt::ControlModifier);
        ExportDialog* d = w_->exportDialog();
        if (!d || !QTest::qWaitFor([d] { return d->isVisible(); }, 5000)) return QString();
        d->setDirectory(pkg);
        d->setEvalDocs(3);
        QSignalSpy done(w_.get(), &MainWindow::exportDone);
        QTest::mouseClick(d->exportButton(), Qt::LeftButton);
        const bool ok = QTest::qWaitFor([&] { return done.count() == 1; }, 180000);
        d->hide();
        q->setSettings(old);
        if (!ok || !QFileInfo::exists(pkg + "/quantization.json")) return QString();
        exported_pkg_ = pkg;
        return pkg;
    }
    int packages_ = 0;

private slots:
    void initTestCase() {
        QSettings().clear();
        w_ = std::make_unique<MainWindow>(MainWindow::Options{false});
        w_->show();
        QVERIFY(QTest::qWaitForWindowExposed(w_.get()));
        w_->activateWindow();  // shortcuts go to the active window
        QVERIFY(QTest::qWaitForWindowActive(w_.get()));
    }

    // Before each test: no error banner left by the one before, the window active (shortcuts go to it).
    void init() {
        if (auto* banner = w_->findChild<QWidget*>("errorBanner")) banner->hide();
        if (!w_->isActiveWindow()) {
            w_->activateWindow();
            QVERIFY(QTest::qWaitForWindowActive(w_.get()));
        }
    }

    void opensDefaultModel() {
        QSignalSpy loaded(w_.get(), &MainWindow::modelLoaded);
        w_->openDefaultModel();
        QTRY_COMPARE_WITH_TIMEOUT(loaded.count(), 1, 120000);
        QVERIFY(w_->model());
        QCOMPARE(w_->model()->layers, 5);
        QCOMPARE(w_->model()->dim, 64);
        QCOMPARE(w_->model()->format, QString("llama2c"));
        const auto items = w_->modelPanel()->details()->findItems("Layers", Qt::MatchExactly);
        QCOMPARE(items.size(), 1);
        QCOMPARE(items[0]->text(1), QString("5"));
        QVERIFY(w_->statusDevice().contains("cpu"));
        QVERIFY(w_->recentFiles().first().endsWith("stories260K.bin"));
        QVERIFY(w_->errorText().isEmpty());
    }

    void typingAPromptRefreshesTheHeatmapOnceAfterTheDebounce() {
        QVERIFY(ensureModelLoaded());
        w_->centreTabs()->setCurrentIndex(0);
        w_->setSite(3);
        if (!w_->promptPanel()->text().isEmpty())  // the probe the set-up posted has landed
            QTRY_VERIFY_WITH_TIMEOUT(w_->heatmap() && w_->heatmap()->model_key == w_->model()->model.get(), 120000);
        QTest::qWait(2 * w_->promptPanel()->debounceMs());
        QSignalSpy updated(w_.get(), &MainWindow::heatmapUpdated);
        typePrompt(kStory);
        QTRY_VERIFY_WITH_TIMEOUT(updated.count() >= 1, 120000);
        QTest::qWait(2 * w_->promptPanel()->debounceMs());
        QCOMPARE(updated.count(), 1);  // many keystrokes, one probe
        const HeatmapDataPtr d = w_->heatmap();
        QVERIFY(d);
        QCOMPARE(d->layers, 5);
        QVERIFY(d->tokens > 15);
        QCOMPARE(d->token_ids.front(), 1);  // <bos>
        HeatmapCanvas* c = w_->layerCanvas();
        QCOMPARE(c->rows(), 5);
        QCOMPARE(c->cols(), d->tokens);
        QVERIFY(c->scaleHi() > c->scaleLo());
        QTRY_VERIFY(c->frameCount() > 0);
        QVERIFY(canvasShowsMap(c));
        QVERIFY(canvasShowsMap(w_->channelCanvas()));
        QVERIFY(w_->promptPanel()->status().contains("tokens"));
        screenshot(w_.get(), "studio_heatmap");
    }

    void hoverShowsTokenLayerAndValue() {
        QVERIFY(ensureHeatmap());
        HeatmapCanvas* c = w_->layerCanvas();
        const HeatmapDataPtr d = w_->heatmap();
        const int t = 6, l = 2;
        QSignalSpy hovered(c, &HeatmapCanvas::cellHovered);
        QTest::mouseMove(c, c->cellCenter(l, t).toPoint());
        QTRY_VERIFY(hovered.count() >= 1);
        QCOMPARE(c->hovered(), QPoint(t, l));
        const QString tip = c->tooltipText(l, t);
        QVERIFY2(tip.contains(d->token_text[t]), qPrintable(tip));
        QVERIFY(tip.contains("position 6"));
        QVERIFY(tip.contains("layer 2"));
        QVERIFY(w_->selectionText().contains("layer 2"));
        screenshot(w_.get(), "studio_hover");
    }

    void clickSelectsTokenAndLayerForTheChannelMap() {
        QVERIFY(ensureHeatmap());
        HeatmapCanvas* c = w_->layerCanvas();
        QSignalSpy clicked(c, &HeatmapCanvas::cellClicked);
        QTest::mouseClick(c, Qt::LeftButton, {}, c->cellCenter(3, 4).toPoint());
        QCOMPARE(clicked.count(), 1);
        QCOMPARE(c->selection(), QPoint(4, 3));
        QCOMPARE(w_->selectedLayer(), 3);
        HeatmapCanvas* ch = w_->channelCanvas();
        // down_in of stories260K: 172 FFN channels x tokens of layer 3, the same numbers the probe kept
        QCOMPARE(ch->rows(), 172);
        QCOMPARE(ch->cols(), w_->heatmap()->tokens);
        const ChannelMap* m = w_->heatmap()->channelMap(3, 3);
        QVERIFY(m);
        float mx = 0;
        for (int ch_i = 0; ch_i < m->channels; ++ch_i) mx = std::max(mx, m->values[size_t(ch_i) * m->tokens + 4]);
        const int T = w_->heatmap()->tokens;
        QCOMPARE(mx, w_->heatmap()->token_max[3][size_t(3) * T + 4]);  // channel map max == layer map cell
        QVERIFY(w_->selectionText().startsWith("Selected"));
    }

    void wheelZoomsAndDragPansBothMapsTogether() {
        QVERIFY(ensureHeatmap());
        HeatmapCanvas* c = w_->layerCanvas();
        HeatmapCanvas* ch = w_->channelCanvas();
        c->resetView();
        QTest::mouseClick(c, Qt::LeftButton, {}, c->cellCenter(3, 4).toPoint());  // a selection the drag keeps
        QCOMPARE(c->selection(), QPoint(4, 3));
        const double w0 = c->view().width();
        const QPointF at = c->plotRect().center();
        QWheelEvent wheel(at, c->mapToGlobal(at), QPoint(), QPoint(0, 360), Qt::NoButton, Qt::NoModifier,
                          Qt::NoScrollPhase, false);
        QApplication::sendEvent(c, &wheel);
        QVERIFY(c->view().width() < w0 * 0.6);
        QCOMPARE(ch->view().width(), c->view().width());  // token axes stay in sync
        const double x0 = c->view().x();
        QTest::mousePress(c, Qt::LeftButton, {}, at.toPoint());
        for (int i = 1; i <= 10; ++i) QTest::mouseMove(c, (at + QPointF(12 * i, 0)).toPoint());
        QTest::mouseRelease(c, Qt::LeftButton, {}, (at + QPointF(120, 0)).toPoint());
        QVERIFY2(c->view().x() < x0, qPrintable(QString("%1 -> %2").arg(x0).arg(c->view().x())));
        QCOMPARE(ch->view().x(), c->view().x());
        QCOMPARE(c->selection(), QPoint(4, 3));  // a drag is not a click
        screenshot(w_.get(), "studio_zoomed");
        c->resetView();
    }

    void shortcutsSwitchTheProbeSite() {
        QVERIFY(ensureHeatmap());
        QTest::keyClick(w_.get(), Qt::Key_1, Qt::AltModifier);
        QCOMPARE(w_->site(), 0);
        QCOMPARE(w_->channelCanvas()->rows(), 64);  // q/k/v input: dim channels
        QTest::keyClick(w_.get(), Qt::Key_5, Qt::AltModifier);
        QCOMPARE(w_->site(), 4);
        QTest::keyClick(w_.get(), Qt::Key_4, Qt::AltModifier);
        QCOMPARE(w_->site(), 3);
        QCOMPARE(w_->channelCanvas()->rows(), 172);
    }

    void quantizationShowsPerplexitiesAndPerLayerChart() {
        QVERIFY(ensureModelLoaded());
        QuantPanel* q = w_->quantPanel();
        cushion::QuantConfig s;
        s.wbits = 8;
        s.abits = 8;
        s.act = cushion::ActGranularity::PerTensorStatic;
        q->setSettings(s);
        QSignalSpy done(w_.get(), &MainWindow::quantizationDone);
        // The GUI thread must keep running while the worker calibrates and evaluates: measure its longest
        // stall with a 5 ms timer.
        QElapsedTimer gap;
        gap.start();
        qint64 longest = 0;
        QTimer tick;
        connect(&tick, &QTimer::timeout, [&] {
            longest = std::max(longest, gap.restart());
        });
        tick.start(5);
        QTest::keyClick(w_.get(), Qt::Key_R, Qt::ControlModifier);
        QTRY_COMPARE_WITH_TIMEOUT(done.count(), 1, 180000);
        tick.stop();
        qInfo("longest GUI-thread stall during quantization: %lld ms", longest);
        QVERIFY2(longest < 1000, qPrintable(QString("GUI thread stalled %1 ms").arg(longest)));
        const QuantResultPtr r = q->result();
        QVERIFY(r);
        QVERIFY(r->fp_ppl > 1 && r->fp_ppl < 100);
        QVERIFY(r->q_ppl > 1);
        QCOMPARE(r->eval_docs, 10);
        QCOMPARE(int(r->residual_drift.size()), 5);
        for (int s2 = 0; s2 < 4; ++s2)
            for (double e : r->act_error[s2]) QVERIFY(e > 0 && e < 1);  // 8-bit: small but nonzero
        QChart* chart = q->chartView()->chart();
        QCOMPARE(chart->series().size(), 2);  // bars + drift line
        auto* bars = qobject_cast<QBarSeries*>(chart->series().first());
        QVERIFY(bars);
        QCOMPARE(bars->count(), 4);
        QVERIFY(q->resultText().contains("W8A8"));
        QVERIFY(w_->errorText().isEmpty());
        screenshot(w_.get(), "studio_quantization");

        // 4-bit weights and activations hurt more than 8-bit.
        s.wbits = 4;
        s.abits = 4;
        s.act = cushion::ActGranularity::PerToken;
        q->setSettings(s);
        QTest::mouseClick(q->runButton(), Qt::LeftButton);
        QTRY_COMPARE_WITH_TIMEOUT(done.count(), 2, 180000);
        QVERIFY(q->result()->q_ppl > r->q_ppl);
        QCOMPARE(q->result()->fp_ppl, r->fp_ppl);
    }

    void quantizationCancelsPromptly() {
        // A long evaluation text, so there is something to cancel.
        QTemporaryDir dir;
        const QString eval = dir.filePath("long-eval.txt");
        {
            QFile src(resource("text/tinystories-eval.txt"));
            QVERIFY(src.open(QIODevice::ReadOnly));
            const QByteArray text = src.readAll();
            QFile out(eval);
            QVERIFY(out.open(QIODevice::WriteOnly));
            for (int i = 0; i < 300; ++i) out.write(text);
        }
        QVERIFY(ensureModelLoaded());
        QuantPanel* q = w_->quantPanel();
        const QString calib = q->calibPath(), old_eval = q->evalPath();
        q->setTextPaths(calib, eval);
        QSignalSpy progress(w_->workers()->quant(), &Worker::progress);
        QSignalSpy cancelled(w_->workers()->quant(), &Worker::cancelled);
        QSignalSpy done(w_.get(), &MainWindow::quantizationDone);
        w_->runQuantization();
        QTRY_VERIFY_WITH_TIMEOUT(progress.count() >= 1, 120000);
        QElapsedTimer t;
        t.start();
        w_->cancelAll();
        QTRY_COMPARE_WITH_TIMEOUT(cancelled.count(), 1, 120000);
        QVERIFY2(t.elapsed() < 3000, qPrintable(QString("cancel took %1 ms").arg(t.elapsed())));
        QCOMPARE(done.count(), 0);
        QTRY_VERIFY(q->runButton()->isEnabled());
        q->setTextPaths(calib, old_eval);
    }

    // ---- CushionCache in the studio: search, tuning, export, sessions (issue 7, items 4-6).
    // Small settings so the whole file stays near a minute on 2 busy cores: 256 candidate tokens, a
    // 48-token sample, pruned second steps, 1 tuning epoch over documents cut to 48 tokens.

    void searchStepsOverridesAndUndoes() {
        QSignalSpy loaded(w_.get(), &MainWindow::modelLoaded);
        w_->openDefaultModel();
        QTRY_COMPARE_WITH_TIMEOUT(loaded.count(), 1, 120000);
        QSignalSpy heat(w_.get(), &MainWindow::heatmapUpdated);
        typePrompt("Tom had a big red ball. He liked to play with it in the park every day.");
        QTRY_VERIFY_WITH_TIMEOUT(heat.count() >= 1, 120000);

        SearchPanel* sp = w_->searchPanel();
        const SearchSettings s = smallSearch();
        sp->setSettings(s);
        w_->searchDock()->raise();
        QVERIFY(sp->isEnabled());
        QVERIFY(sp->stepButton()->isEnabled());
        QVERIFY(!sp->acceptButton()->isEnabled());
        QSignalSpy su(w_.get(), &MainWindow::searchUpdated);

        // Step 1 (exhaustive over 256 candidates), measuring the GUI thread's longest stall.
        const bool first_search = !searched_;
        StallMeter meter;
        meter.start();
        QTest::mouseClick(sp->stepButton(), Qt::LeftButton);
        searched_ = true;
        QTRY_VERIFY_WITH_TIMEOUT(su.count() >= 2 && !w_->searchBusy(), 180000);  // started, stepped
        const qint64 stall1 = meter.stop();
        SearchSnapshotPtr s1 = w_->searchSnapshot();
        QVERIFY(s1);
        QCOMPARE(int(s1->prefix.size()), 2);
        QCOMPARE(s1->prefix[0], 1);  // <bos>
        QCOMPARE(s1->candidates, 256);
        QCOMPARE(s1->sample_tokens, 48);
        QVERIFY(s1->scores && s1->scores->committed && !s1->scores->pruned);
        QCOMPARE(sp->candidateRows(), 256);
        QVERIFY(isSortedByLoss(sp, *s1->scores));
        QCOMPARE(sp->candidateAt(0), s1->prefix[1]);  // the best was appended
        QVERIFY(s1->loss < s1->initial_loss);
        QVERIFY2(sp->decisionText().contains("accept"), qPrintable(sp->decisionText()));
        QVERIFY(sp->prefixText().contains(s1->vocab->at(s1->prefix[1])));
        // The ratio column is L_q / L_q(prefix).
        const QModelIndex ratio = sp->candidateView()->model()->index(0, 4);
        QCOMPARE(ratio.data().toString(), QString::number(s1->scores->best_loss / s1->scores->loss_before, 'f', 4));
        QChart* hist = sp->histogramView()->chart();
        QCOMPARE(hist->series().size(), 4);  // candidates, L_q(prefix), tau line, best
        QVERIFY(qobject_cast<QAreaSeries*>(hist->series().first()));

        // Step 2, pruned.
        sp->setSettings([&] { SearchSettings p = s; p.pruned = true; return p; }());
        meter.start();
        QTest::mouseClick(sp->stepButton(), Qt::LeftButton);
        QTRY_VERIFY_WITH_TIMEOUT(su.count() >= 3 && !w_->searchBusy(), 180000);
        const qint64 stall2 = meter.stop();
        qInfo("longest GUI-thread stall during a search step: %lld ms (exhaustive), %lld ms (pruned)", stall1, stall2);
        QVERIFY2(std::max(stall1, stall2) < 1000, qPrintable(QString("GUI thread stalled %1 ms").arg(std::max(stall1, stall2))));
        SearchSnapshotPtr s2 = w_->searchSnapshot();
        QCOMPARE(int(s2->prefix.size()), 3);
        QVERIFY(s2->scores->pruned);
        QCOMPARE(sp->candidateRows(), 8);  // the shortlist re-scored on the whole sample
        QVERIFY(isSortedByLoss(sp, *s2->scores));
        QCOMPARE(int(s2->history.size()), 2);

        // Pick another candidate instead of the best of step 2 (override_step replaces the step).
        const int other = sp->candidateAt(2);
        QVERIFY(other != s2->prefix.back());
        QVERIFY(sp->selectCandidate(other));
        QCOMPARE(sp->useSelectedMode(), 1);
        QVERIFY(sp->useButton()->isEnabled());
        QTest::mouseClick(sp->useButton(), Qt::LeftButton);
        QTRY_VERIFY_WITH_TIMEOUT(su.count() >= 4 && !w_->searchBusy(), 120000);
        SearchSnapshotPtr s3 = w_->searchSnapshot();
        QCOMPARE(int(s3->prefix.size()), 3);
        QCOMPARE(s3->prefix.back(), other);
        QCOMPARE(int(s3->history.size()), 2);
        QVERIFY(s3->history.back().overridden);
        QVERIFY(std::fabs(s3->loss - s2->scores->loss[other]) <= 1e-6 * s3->loss);  // L_q as scored

        // Undo: back to the prefix after step 1, with the same L_q.
        QTest::mouseClick(sp->undoButton(), Qt::LeftButton);
        QTRY_VERIFY_WITH_TIMEOUT(su.count() >= 5 && !w_->searchBusy(), 120000);
        SearchSnapshotPtr s4 = w_->searchSnapshot();
        QCOMPARE(s4->prefix, s1->prefix);
        QCOMPARE(int(s4->history.size()), 1);
        QVERIFY(std::fabs(s4->loss - s1->loss) <= 1e-9 * s1->loss);

        // Score first (exhaustive this time; nothing changes), then accept the best: the same as a step.
        sp->setSettings(s);
        QTest::mouseClick(sp->scoreButton(), Qt::LeftButton);
        QTRY_VERIFY_WITH_TIMEOUT(su.count() >= 6 && !w_->searchBusy(), 120000);
        SearchSnapshotPtr s5 = w_->searchSnapshot();
        QCOMPARE(s5->prefix, s1->prefix);
        QVERIFY(!s5->scores->committed);
        QVERIFY(!s5->scores->pruned);
        QCOMPARE(sp->candidateRows(), 256);
        QVERIFY(sp->decisionText().contains("not committed"));
        {  // The log says what tau would decide (it was empty: the reason was read after the result was moved).
            const QString log = w_->logText();
            const int at = log.lastIndexOf("tau would say: ");
            QVERIFY2(at >= 0, qPrintable(log.right(300)));
            const QString reason = log.mid(at + 15).section('\n', 0, 0).trimmed();
            QVERIFY2(!reason.isEmpty(), qPrintable(log.right(300)));
        }
        QVERIFY(sp->acceptButton()->isEnabled());
        QTest::mouseClick(sp->acceptButton(), Qt::LeftButton);
        QTRY_VERIFY_WITH_TIMEOUT(su.count() >= 7 && !w_->searchBusy(), 120000);
        SearchSnapshotPtr s6 = w_->searchSnapshot();
        QCOMPARE(int(s6->prefix.size()), 3);
        QCOMPARE(s6->prefix.back(), s5->scores->best_token);
        QCOMPARE(int(s6->history.size()), 2);
        QVERIFY(!s6->history.back().overridden);
        QVERIFY(std::fabs(s6->loss - s5->scores->best_loss) <= 1e-6 * s6->loss);

        // Before / after heatmaps of the prompt, side by side on one scale: the window's first search showed
        // them (after another test's search, they are shown here).
        if (first_search) QCOMPARE(w_->centreTabs()->currentIndex(), 1);
        w_->centreTabs()->setCurrentIndex(1);
        QTRY_VERIFY_WITH_TIMEOUT(w_->comparison() && w_->comparison()->prefix_len == 3, 120000);
        const CompareDataPtr cmp = w_->comparison();
        QCOMPARE(cmp->before->tokens, cmp->after->tokens + 1);  // the text has no <bos> after the cushion
        QCOMPARE(w_->beforeCanvas()->cols(), cmp->before->tokens);
        QCOMPARE(w_->afterCanvas()->cols(), cmp->after->tokens);
        QCOMPARE(w_->beforeCanvas()->scaleHi(), w_->afterCanvas()->scaleHi());
        QTRY_VERIFY(w_->beforeCanvas()->frameCount() > 0 && w_->afterCanvas()->frameCount() > 0);
        QVERIFY(canvasShowsMap(w_->beforeCanvas()));
        QVERIFY(canvasShowsMap(w_->afterCanvas()));
        QVERIFY(w_->compareSummary().contains("→"));
        QCOMPARE(sp->histogramView()->chart()->series().size(), 4);  // exhaustive: with the L_q and tau markers
        QVERIFY(w_->errorText().isEmpty());
        screenshot(w_.get(), "studio_search");
    }

    void searchCancelsMidStepAndRunPausesBetweenSteps() {
        QVERIFY(ensureSearchStepped());
        SearchPanel* sp = w_->searchPanel();
        QSignalSpy su(w_.get(), &MainWindow::searchUpdated);
        const SearchSettings small = w_->searchSnapshot()->settings;

        // Cancel in the middle of an exhaustive step over the whole vocabulary on a 400-token sample, one
        // candidate per batch (8 MiB): the search stays exactly as it was.
        SearchSettings big = small;
        big.candidates.clear();
        big.sample_tokens = 400;
        big.memory_mb = 8;
        big.pruned = false;
        sp->setSettings(big);
        QTest::mouseClick(sp->newButton(), Qt::LeftButton);
        searched_ = true;
        QTRY_VERIFY_WITH_TIMEOUT(su.count() >= 1 && !w_->searchBusy(), 120000);
        const SearchSnapshotPtr s0 = w_->searchSnapshot();
        QCOMPARE(int(s0->prefix.size()), 1);
        QVERIFY(s0->candidates > 500);
        QSignalSpy cancelled(w_->workers()->search(), &Worker::cancelled);
        QSignalSpy progress(w_->workers()->search(), &Worker::progress);
        QTest::keyClick(w_.get(), Qt::Key_F6);  // Search: step
        QVERIFY(w_->searchBusy());
        QTRY_VERIFY_WITH_TIMEOUT(progress.count() >= 2, 120000);
        QElapsedTimer t;
        t.start();
        QTest::mouseClick(sp->cancelButton(), Qt::LeftButton);
        QTRY_COMPARE_WITH_TIMEOUT(cancelled.count(), 1, 120000);
        QVERIFY2(t.elapsed() < 3000, qPrintable(QString("cancel took %1 ms").arg(t.elapsed())));
        QTRY_VERIFY(!w_->searchBusy());
        QCOMPARE(w_->searchSnapshot(), s0);  // nothing published, nothing changed
        QVERIFY(w_->errorText().isEmpty());

        // Run (pruned steps) on a new small search, Pause after the first step: the loop stops between steps.
        SearchSettings run = small;
        run.pruned = true;
        sp->setSettings(run);
        QTest::mouseClick(sp->newButton(), Qt::LeftButton);
        QTRY_VERIFY_WITH_TIMEOUT(su.count() >= 2 && !w_->searchBusy(), 120000);
        QCOMPARE(int(w_->searchSnapshot()->prefix.size()), 1);
        QTest::mouseClick(sp->runButton(), Qt::LeftButton);
        QVERIFY(w_->searchRunning());
        QVERIFY(sp->pauseButton()->isEnabled());
        QTRY_VERIFY_WITH_TIMEOUT(su.count() >= 3, 120000);
        QTest::mouseClick(sp->pauseButton(), Qt::LeftButton);
        QVERIFY(!w_->searchRunning());
        QTRY_VERIFY_WITH_TIMEOUT(!w_->searchBusy(), 120000);
        const int after_pause = su.count();
        QTest::qWait(300);
        QCOMPARE(su.count(), after_pause);  // no step after the pause
        const SearchSnapshotPtr paused = w_->searchSnapshot();
        QVERIFY(paused->prefix.size() == 2 || paused->prefix.size() == 3);  // the step in flight completes
        if (paused->done) {
            // The second step stopped the search (tau): Step is off until Undo removes the stop.
            QVERIFY(!sp->stepButton()->isEnabled());
            QVERIFY(sp->undoButton()->isEnabled());
            QTest::mouseClick(sp->undoButton(), Qt::LeftButton);
            QTRY_VERIFY_WITH_TIMEOUT(!w_->searchBusy() && w_->searchSnapshot() != paused, 120000);
            QVERIFY(!w_->searchSnapshot()->done);
            QCOMPARE(w_->searchSnapshot()->prefix, paused->prefix);
        }
        // A step goes on from there.
        const SearchSnapshotPtr before_step = w_->searchSnapshot();
        QVERIFY(sp->stepButton()->isEnabled());
        QTest::mouseClick(sp->stepButton(), Qt::LeftButton);
        QTRY_VERIFY_WITH_TIMEOUT(!w_->searchBusy() && w_->searchSnapshot() != before_step, 120000);
        QCOMPARE(w_->searchSnapshot()->history.size(), before_step->history.size() + 1);
        QVERIFY(w_->errorText().isEmpty());
    }

    void tuningShowsLiveLossCurvesAndPerplexity() {
        // A search step since the last tuning (if any), as after the search tests: the tuning starts afresh.
        QTRY_VERIFY_WITH_TIMEOUT(!w_->tuneBusy(), 120000);
        QVERIFY(w_->tuneSnapshot() ? freshSearch() : ensureSearchStepped());
        w_->centreTabs()->setCurrentIndex(1);  // the before / after view, as the search tests leave it
        TunePanel* tp = w_->tunePanel();
        QVERIFY(tp->startButton()->isEnabled());
        TuneSettings t;
        t.epochs = 2;
        t.batch = 3;
        t.doc_tokens = 48;
        t.eval_docs = 3;
        tp->setSettings(t);
        QSignalSpy tu(w_.get(), &MainWindow::tuningUpdated);
        QSignalSpy pm(w_.get(), &MainWindow::perplexityMeasured);
        QTest::mouseClick(tp->startButton(), Qt::LeftButton);
        QVERIFY(w_->tuneRunning());
        // Perplexity without and with the search's cushion first, then the batches (3 a epoch: 9 documents).
        QTRY_VERIFY_WITH_TIMEOUT(w_->tuneSnapshot() && w_->tuneSnapshot()->steps_done >= 1, 180000);
        QCOMPARE(pm.count(), 2);
        QVERIFY(tp->perplexity(PplWhich::None) && tp->perplexity(PplWhich::Before));
        QCOMPARE(w_->tuneSnapshot()->total_steps, 6);
        // Pause between batches, then resume.
        QTest::mouseClick(tp->pauseButton(), Qt::LeftButton);
        QTRY_VERIFY_WITH_TIMEOUT(!w_->tuneBusy(), 120000);
        const qint64 paused_at = w_->tuneSnapshot()->steps_done;
        QVERIFY(paused_at < 6);
        QTest::qWait(200);
        QCOMPARE(w_->tuneSnapshot()->steps_done, paused_at);
        QVERIFY(w_->cushionIsTuned());
        QVERIFY(tp->resumeButton()->isEnabled());
        QTest::mouseClick(tp->resumeButton(), Qt::LeftButton);
        QTRY_VERIFY_WITH_TIMEOUT(w_->tuneSnapshot()->done, 180000);
        QTRY_VERIFY_WITH_TIMEOUT(pm.count() == 3 && !w_->tuneBusy(), 180000);  // and after tuning
        const TuneSnapshotPtr ts = w_->tuneSnapshot();
        QCOMPARE(int(ts->points.size()), 6);
        for (const TunePoint& p : ts->points) {
            QVERIFY(std::isfinite(p.ce) && p.ce > 0);
            QVERIFY(p.lq > 0);
            QVERIFY(std::fabs(p.total - (p.ce + t.lambda * p.lq)) < 1e-6 * p.total);
        }
        QVERIFY(ts->points[2].epoch_end);
        QChart* chart = tp->chartView()->chart();
        QCOMPARE(chart->series().size(), 3);  // CE, total, L_q
        for (QAbstractSeries* a : chart->series()) QCOMPARE(qobject_cast<QLineSeries*>(a)->count(), 6);
        const PplResultPtr none = tp->perplexity(PplWhich::None), before = tp->perplexity(PplWhich::Before),
                           after = tp->perplexity(PplWhich::After);
        QVERIFY(none && before && after);
        for (const PplResultPtr& r : {none, before, after}) {
            QVERIFY(r->fp > 1 && r->fp < 1000);
            QVERIFY(r->quant > 1);
            QCOMPARE(r->docs, 3);
        }
        QCOMPARE(before->tokens, after->tokens);
        QCOMPARE(none->tokens, before->tokens);  // the same predicted tokens in every row
        QVERIFY(after->fp != before->fp);  // the tuned KV changed the predictions
        QVERIFY(tp->perplexityTable()->item(2, 0)->text() != "–");
        // The before/after view now uses the tuned cushion.
        QTRY_VERIFY_WITH_TIMEOUT(w_->comparison() && w_->afterCanvas()->frameCount() > 0, 120000);
        QVERIFY(w_->errorText().isEmpty());
        screenshot(w_.get(), "studio_tuning");
    }

    void exportWritesAPackageWithProgressAndCancel() {
        QVERIFY(ensureSearchStepped());
        QuantPanel* q = w_->quantPanel();
        const cushion::QuantConfig old = q->settings();
        q->setSettings(w8a8Static());
        QTemporaryDir& dir = package_dir_;  // kept: openingAnExportedPackage... opens it
        const QString pkg = dir.filePath(QString("package-%1").arg(++packages_));
        QTest::keyClick(w_.get(), Qt::Key_E, Qt::ControlModifier);
        ExportDialog* d = w_->exportDialog();
        QVERIFY(d);
        QTRY_VERIFY(d->isVisible());
        d->setDirectory(pkg);
        d->setEvalDocs(3);
        QSignalSpy progress(w_->workers()->exporter(), &Worker::progress);
        QSignalSpy done(w_.get(), &MainWindow::exportDone);
        QTest::mouseClick(d->exportButton(), Qt::LeftButton);
        QVERIFY(d->isBusy());
        QTRY_COMPARE_WITH_TIMEOUT(done.count(), 1, 180000);
        QVERIFY(progress.count() >= 2);
        for (const char* f : {"model.safetensors", "cushion.safetensors", "quantization.json", "config.json"})
            QVERIFY2(QFile::exists(pkg + "/" + f), f);
        QVERIFY2(d->resultText().contains("with the cushion"), qPrintable(d->resultText()));
        QVERIFY(d->resultText().contains("W8A8"));
        QVERIFY(w_->errorText().isEmpty());
        screenshotWithDialog(w_.get(), d, "studio_export");
        exported_pkg_ = pkg;

        // Cancel: a long evaluation text so the export is still running; nothing is left behind.
        const QString eval = dir.filePath("long-eval.txt");
        {
            QFile src(resource("text/tinystories-eval.txt"));
            QVERIFY(src.open(QIODevice::ReadOnly));
            const QByteArray text = src.readAll();
            QFile out(eval);
            QVERIFY(out.open(QIODevice::WriteOnly));
            for (int i = 0; i < 200; ++i) out.write(text);
        }
        const QString calib = q->calibPath(), old_eval = q->evalPath();
        q->setTextPaths(calib, eval);
        const QString pkg2 = dir.filePath("cancelled");
        d->setDirectory(pkg2);
        d->setEvalDocs(0);
        QSignalSpy cancelled(w_->workers()->exporter(), &Worker::cancelled);
        progress.clear();
        QTest::mouseClick(d->exportButton(), Qt::LeftButton);
        QTRY_VERIFY_WITH_TIMEOUT(progress.count() >= 1, 120000);
        QTest::mouseClick(d->cancelButton(), Qt::LeftButton);
        QTRY_COMPARE_WITH_TIMEOUT(cancelled.count(), 1, 120000);
        QTRY_VERIFY(!d->isBusy());  // the spy hears the worker first; the dialog hears it through the event loop
        QVERIFY(d->stateText().contains("Cancelled"));
        QVERIFY(!QFileInfo::exists(pkg2));
        QCOMPARE(done.count(), 1);
        q->setTextPaths(calib, old_eval);
        q->setSettings(old);
        d->hide();
    }

    void sessionSavesAndReopensInANewWindow() {
        QVERIFY(ensureTuned());
        QTemporaryDir dir;
        const QString path = dir.filePath("story.cushionstudio");
        QSignalSpy saved(w_.get(), &MainWindow::sessionSaved);
        w_->saveSession(path);
        QTRY_COMPARE_WITH_TIMEOUT(saved.count(), 1, 120000);
        QVERIFY(QFile::exists(path));
        QVERIFY(QFile::exists(sessionCushionPath(path)));
        QCOMPARE(w_->sessionPath(), path);
        {
            QFile f(path);
            QVERIFY(f.open(QIODevice::ReadOnly));
            const QJsonObject root = QJsonDocument::fromJson(f.readAll()).object();
            if (qEnvironmentVariableIsSet("SHOW_SESSION")) qInfo("%s", QJsonDocument(root).toJson().constData());
            QCOMPARE(root["format"].toString(), QString("cushion-studio-session"));
            QCOMPARE(root["cushion"].toObject()["file"].toString(), QString("story.cushion"));  // beside it
            QCOMPARE(root["cushion"].toObject()["kind"].toString(), QString("tuned"));
            QVERIFY(!root["search"].toObject()["state"].toString().isEmpty());
            QCOMPARE(root["search"].toObject()["prefix"].toArray().size(), qsizetype(w_->searchSnapshot()->prefix.size()));
        }
        const SearchSnapshotPtr snap = w_->searchSnapshot();
        const SearchSettings ss = w_->searchPanel()->settings();
        const TuneSettings ts = w_->tunePanel()->settings();
        const size_t points = w_->tunePanel()->points().size();
        const QString prompt = w_->promptPanel()->text();

        auto w2 = std::make_unique<MainWindow>(MainWindow::Options{false});
        w2->show();
        QVERIFY(QTest::qWaitForWindowExposed(w2.get()));
        QSignalSpy opened(w2.get(), &MainWindow::sessionOpened);
        w2->openSession(path);
        QTRY_COMPARE_WITH_TIMEOUT(opened.count(), 1, 180000);
        QVERIFY2(w2->errorText().isEmpty(), qPrintable(w2->errorText()));
        QVERIFY(w2->model());
        QVERIFY(w2->model()->path.endsWith("stories260K.bin"));
        QVERIFY(w2->searchSnapshot());
        QCOMPARE(w2->searchSnapshot()->prefix, snap->prefix);
        QCOMPARE(w2->searchSnapshot()->loss, snap->loss);
        QCOMPARE(w2->searchSnapshot()->history.size(), snap->history.size());
        QVERIFY(w2->searchPanel()->settings() == ss);
        QCOMPARE(w2->tunePanel()->settings().epochs, ts.epochs);
        QCOMPARE(w2->tunePanel()->settings().batch, ts.batch);
        QCOMPARE(w2->tunePanel()->settings().doc_tokens, ts.doc_tokens);
        QCOMPARE(w2->tunePanel()->settings().lr, ts.lr);
        QCOMPARE(w2->tunePanel()->points().size(), points);
        QVERIFY(w2->cushionIsTuned());
        QCOMPARE(w2->promptPanel()->text(), prompt);
        QCOMPARE(w2->quantPanel()->calibPath(), w_->quantPanel()->calibPath());
        // The search goes on from the restored state.
        QTRY_VERIFY2(w2->searchPanel()->undoButton()->isEnabled(),
                     qPrintable(QString("busy %1, prefix %2, done %3").arg(w2->searchBusy()).arg(w2->searchSnapshot()->prefix.size()).arg(w2->searchSnapshot()->done)));
        w2->close();
        w2.reset();

        // A file that is not a session is an error in the window.
        const QString bad = dir.filePath("bad.cushionstudio");
        {
            QFile f(bad);
            QVERIFY(f.open(QIODevice::WriteOnly));
            f.write("{\"format\": \"something-else\"}");
        }
        QSignalSpy err(w_.get(), &MainWindow::errorShown);
        w_->openSession(bad);
        QCOMPARE(err.count(), 1);
        QVERIFY(w_->errorText().contains("not a cushion-studio session"));
        w_->centreTabs()->setCurrentIndex(0);  // the later tests look at the activation maps
        w_->quantDock()->raise();
    }

    void sessionResumesTuningWhereItStopped() {
        // Tune part of the way, pause, save; a new window reopens the session and resumes: the same batches
        // as this window going on (the tuner's state, Adam's moments included, travels in "<name>.tuner").
        QVERIFY(ensureSearchStepped());
        QTRY_VERIFY_WITH_TIMEOUT(!w_->tuneBusy(), 120000);
        setSmallTuning();
        TunePanel* tp = w_->tunePanel();
        w_->tuneDock()->raise();
        QVERIFY(tp->startButton()->isEnabled());
        QTest::mouseClick(tp->startButton(), Qt::LeftButton);
        QTRY_VERIFY_WITH_TIMEOUT(w_->tuneSnapshot() && w_->tuneSnapshot()->steps_done >= 1, 180000);
        QTest::mouseClick(tp->pauseButton(), Qt::LeftButton);
        QTRY_VERIFY_WITH_TIMEOUT(!w_->tuneBusy(), 120000);
        const qint64 paused_at = w_->tuneSnapshot()->steps_done;
        const qint64 total = w_->tuneSnapshot()->total_steps;
        QVERIFY(paused_at < total);

        QTemporaryDir dir;
        const QString path = dir.filePath("resume.cushionstudio");
        QSignalSpy saved(w_.get(), &MainWindow::sessionSaved);
        w_->saveSession(path);
        QTRY_COMPARE_WITH_TIMEOUT(saved.count(), 1, 120000);
        QVERIFY(QFile::exists(sessionTunerPath(path)));
        {
            QFile f(path);
            QVERIFY(f.open(QIODevice::ReadOnly));
            const QJsonObject root = QJsonDocument::fromJson(f.readAll()).object();
            QCOMPARE(root["tuning"].toObject()["state"].toString(), QString("resume.tuner"));  // beside it
        }

        auto w2 = std::make_unique<MainWindow>(MainWindow::Options{false});
        w2->show();
        QVERIFY(QTest::qWaitForWindowExposed(w2.get()));
        QSignalSpy opened(w2.get(), &MainWindow::sessionOpened);
        w2->openSession(path);
        QTRY_COMPARE_WITH_TIMEOUT(opened.count(), 1, 180000);
        QVERIFY2(w2->errorText().isEmpty(), qPrintable(w2->errorText()));
        QVERIFY(w2->tuneSnapshot());
        QCOMPARE(w2->tuneSnapshot()->steps_done, paused_at);
        QCOMPARE(w2->tuneSnapshot()->total_steps, total);
        QVERIFY(w2->cushionIsTuned());
        QTRY_VERIFY(!w2->tuneBusy());
        QVERIFY(w2->tunePanel()->resumeButton()->isEnabled());
        QTest::mouseClick(w2->tunePanel()->resumeButton(), Qt::LeftButton);
        QTest::mouseClick(tp->resumeButton(), Qt::LeftButton);
        QTRY_VERIFY_WITH_TIMEOUT(w2->tuneSnapshot()->done && w_->tuneSnapshot()->done, 240000);
        QTRY_VERIFY_WITH_TIMEOUT(!w2->tuneBusy() && !w_->tuneBusy(), 180000);
        const auto& a = w_->tuneSnapshot()->points;
        const auto& b = w2->tuneSnapshot()->points;
        QCOMPARE(qint64(b.size()), total);
        QCOMPARE(a.size(), b.size());
        for (size_t i = 0; i < a.size(); ++i) {
            QCOMPARE(b[i].step, a[i].step);
            QVERIFY2(std::fabs(b[i].total - a[i].total) <= 1e-6 * std::fabs(a[i].total),
                     qPrintable(QString("batch %1: %2 vs %3").arg(i + 1).arg(b[i].total, 0, 'g', 17).arg(a[i].total, 0, 'g', 17)));
        }
        QVERIFY(w2->errorText().isEmpty());
        w2->close();
        w2.reset();
        w_->quantDock()->raise();
    }

    void openingAnExportedPackageShowsItsSchemeAndCushion() {
        const QString pkg = ensureExported();
        QVERIFY(!pkg.isEmpty());
        QJsonObject info;
        {
            QFile f(pkg + "/quantization.json");
            QVERIFY(f.open(QIODevice::ReadOnly));
            info = QJsonDocument::fromJson(f.readAll()).object();
        }
        QSignalSpy loaded(w_.get(), &MainWindow::modelLoaded);
        QSignalSpy err(w_.get(), &MainWindow::errorShown);
        w_->openModel(pkg);  // what File > Open model or package folder… does with the chosen directory
        QTRY_VERIFY_WITH_TIMEOUT(loaded.count() == 1 || err.count() > 0, 120000);
        QVERIFY2(err.count() == 0, qPrintable(w_->errorText()));  // fail at once, with the studio's message
        const ModelInfoPtr m = w_->model();
        QVERIFY(m->package);
        QCOMPARE(m->format, QString("package"));
        QCOMPARE(err.count(), 0);
        // The quantization panel: the package's scheme, fixed, and the perplexities measured at export.
        QuantPanel* q = w_->quantPanel();
        QVERIFY2(q->packageText().contains("W8A8 per-tensor-static"), qPrintable(q->packageText()));
        QVERIFY(q->packageText().contains("attn_in,o_in,mlp_in,down_in"));
        QVERIFY(q->packageText().contains(pkg));
        QCOMPARE(q->settings().wbits, 8);
        QCOMPARE(q->settings().abits, 8);
        QCOMPARE(q->settings().act, cushion::ActGranularity::PerTensorStatic);
        QVERIFY(!q->runButton()->isEnabled());
        QVERIFY(!q->findChild<QWidget*>("wbitsCombo")->isEnabled());
        const QJsonObject ppl = info["perplexity"].toObject();
        QVERIFY(ppl["quantized_cushion"].toDouble() > 1);
        QCOMPARE(q->findChild<QLabel*>("fpPpl")->text(), QString::number(ppl["fp_cushion"].toDouble(), 'f', 3));
        QCOMPARE(q->findChild<QLabel*>("quantPpl")->text(), QString::number(ppl["quantized_cushion"].toDouble(), 'f', 3));
        // Its cushion is the current cushion: the before / after view shows the prompt after it.
        QVERIFY(w_->currentCushion() && w_->currentCushion() == m->package->cushion);
        QCOMPARE(cushionLength(w_->currentCushion()), qint64(info["cushion"].toObject()["length"].toInt()));
        w_->centreTabs()->setCurrentIndex(1);
        QTRY_VERIFY_WITH_TIMEOUT(w_->comparison() && w_->comparison()->model_key == m->model.get(), 120000);
        QCOMPARE(qint64(w_->comparison()->prefix_len), cushionLength(m->package->cushion));
        QTRY_VERIFY(w_->afterCanvas()->frameCount() > 0);
        QVERIFY(canvasShowsMap(w_->afterCanvas()));
        QCOMPARE(w_->recentFiles().first(), pkg);
        QVERIFY(w_->errorText().isEmpty());
        screenshot(w_.get(), "studio_package");

        // A damaged package (a file that no longer matches its sha256) or one from another tool version:
        // an error in the window, the open package stays.
        auto copyPackage = [&](const QString& to) {
            QDir().mkpath(to);
            for (const QString& f : QDir(pkg).entryList(QDir::Files))
                if (!QFile::copy(pkg + "/" + f, to + "/" + f)) return false;
            return true;
        };
        const QString damaged = package_dir_.filePath("damaged");
        QVERIFY(copyPackage(damaged));
        {
            QFile f(damaged + "/config.json");
            QVERIFY(f.open(QIODevice::Append));
            f.write(" ");
        }
        w_->openModel(damaged);
        QTRY_COMPARE_WITH_TIMEOUT(err.count(), 1, 120000);
        QVERIFY2(w_->errorText().contains("sha256"), qPrintable(w_->errorText()));
        QCOMPARE(w_->model(), m);
        const QString other = package_dir_.filePath("other-version");
        QVERIFY(copyPackage(other));
        {
            QFile f(other + "/quantization.json");
            QVERIFY(f.open(QIODevice::ReadOnly));
            QJsonObject j = QJsonDocument::fromJson(f.readAll()).object();
            f.close();
            j["tool_version"] = "0.0.1-elsewhere";
            QVERIFY(f.open(QIODevice::WriteOnly | QIODevice::Truncate));
            f.write(QJsonDocument(j).toJson());
        }
        w_->openModel(other);
        QTRY_COMPARE_WITH_TIMEOUT(err.count(), 2, 120000);
        QVERIFY2(w_->errorText().contains("0.0.1-elsewhere"), qPrintable(w_->errorText()));
        QCOMPARE(w_->model(), m);

        // Drag and drop of the directory, and the recent-files entry, open it the same way.
        auto* mime = new QMimeData;
        mime->setUrls({QUrl::fromLocalFile(pkg)});
        QDragEnterEvent enter(QPoint(300, 300), Qt::CopyAction, mime, Qt::LeftButton, Qt::NoModifier);
        QApplication::sendEvent(w_.get(), &enter);
        QVERIFY(enter.isAccepted());
        QDropEvent drop(QPointF(300, 300), Qt::CopyAction, mime, Qt::LeftButton, Qt::NoModifier);
        QApplication::sendEvent(w_.get(), &drop);
        QTRY_COMPARE_WITH_TIMEOUT(loaded.count(), 2, 120000);
        QVERIFY(w_->model()->package && w_->model() != m);
        delete mime;
        QAction* recent = w_->recentMenu()->actions().first();
        QVERIFY(recent->text().contains(pkg));
        recent->trigger();
        QTRY_COMPARE_WITH_TIMEOUT(loaded.count(), 3, 120000);
        QVERIFY(w_->model()->package);
        QCOMPARE(err.count(), 2);
        w_->centreTabs()->setCurrentIndex(0);
    }

    void errorsAppearInTheWindowNotAsACrash() {
        QVERIFY(ensureModelLoaded());
        const ModelInfoPtr before = w_->model();
        QSignalSpy err(w_.get(), &MainWindow::errorShown);
        w_->openModel("/nonexistent/model.bin");
        QCOMPARE(err.count(), 1);
        QVERIFY(w_->errorText().contains("No such file"));
        QTemporaryDir dir;
        const QString bad = dir.filePath("broken.gguf");
        {
            QFile f(bad);
            QVERIFY(f.open(QIODevice::WriteOnly));
            f.write("GGUF\x03\x00\x00\x00garbage that is not a model");
        }
        w_->openModel(bad);
        QTRY_COMPARE_WITH_TIMEOUT(err.count(), 2, 120000);
        QVERIFY2(w_->errorText().contains("Could not load"), qPrintable(w_->errorText()));
        QVERIFY(w_->logText().contains("error:"));
        QCOMPARE(w_->model(), before);  // the loaded model stays
        screenshot(w_.get(), "studio_error");
    }

    void dragAndDropOpensAModel() {
        QVERIFY(ensureHeatmap());  // the default model (one recent file) and a prompt to probe
        QSignalSpy loaded(w_.get(), &MainWindow::modelLoaded);
        auto* mime = new QMimeData;
        mime->setUrls({QUrl::fromLocalFile(resource("models/stories260K/stories260K.gguf"))});
        QDragEnterEvent enter(QPoint(300, 300), Qt::CopyAction, mime, Qt::LeftButton, Qt::NoModifier);
        QApplication::sendEvent(w_.get(), &enter);
        QVERIFY(enter.isAccepted());
        QDropEvent drop(QPointF(300, 300), Qt::CopyAction, mime, Qt::LeftButton, Qt::NoModifier);
        QApplication::sendEvent(w_.get(), &drop);
        QTRY_COMPARE_WITH_TIMEOUT(loaded.count(), 1, 120000);
        QCOMPARE(w_->model()->format, QString("gguf"));
        QVERIFY(w_->recentFiles().size() >= 2);
        QVERIFY(w_->recentMenu()->actions().size() >= 2);
        QTRY_VERIFY_WITH_TIMEOUT(w_->heatmap() && w_->heatmap()->model_key == w_->model()->model.get(), 120000);
        delete mime;
    }

    void loadingATextFileProbesIt() {
        QVERIFY(ensureModelLoaded());
        QSignalSpy updated(w_.get(), &MainWindow::heatmapUpdated);
        w_->loadTextFile(resource("text/tinystories-eval.txt"));
        QTRY_VERIFY_WITH_TIMEOUT(updated.count() >= 1, 120000);
        QCOMPARE(w_->heatmap()->tokens, int(w_->model()->context));  // truncated to the model's context
        QVERIFY(w_->heatmap()->truncated);
        QVERIFY(w_->promptPanel()->status().contains("truncated"));
        QTRY_VERIFY(canvasShowsMap(w_->layerCanvas()));
        screenshot(w_.get(), "studio_long_text");
    }

    void settingsBringTheSessionBack() {
        // The last model opened is the GGUF copy (after the default one: two recent files); the scheme chosen
        // last is W4A4 per token.
        QVERIFY(ensureModelLoaded());
        {
            QSignalSpy loaded(w_.get(), &MainWindow::modelLoaded);
            w_->openModel(resource("models/stories260K/stories260K.gguf"));
            QTRY_COMPARE_WITH_TIMEOUT(loaded.count(), 1, 120000);
            QCOMPARE(w_->model()->format, QString("gguf"));
        }
        cushion::QuantConfig q4;
        q4.wbits = 4;
        q4.abits = 4;
        q4.act = cushion::ActGranularity::PerToken;
        w_->quantPanel()->setSettings(q4);
        const QString prompt = "The dog ran to the park.";
        QSignalSpy updated(w_.get(), &MainWindow::heatmapUpdated);
        w_->promptPanel()->setText(prompt);
        QTRY_VERIFY_WITH_TIMEOUT(updated.count() >= 1, 120000);
        w_->setSite(1);
        w_->close();
        w_.reset();
        w_ = std::make_unique<MainWindow>(MainWindow::Options{true});
        searched_ = false;
        w_->show();
        QVERIFY(QTest::qWaitForWindowExposed(w_.get()));
        QTRY_VERIFY_WITH_TIMEOUT(w_->model() != nullptr, 120000);
        QCOMPARE(w_->model()->format, QString("gguf"));  // the last model opened
        QCOMPARE(w_->promptPanel()->text(), prompt);
        QCOMPARE(w_->site(), 1);
        QTRY_VERIFY_WITH_TIMEOUT(w_->heatmap() != nullptr, 120000);
        QVERIFY(w_->recentFiles().size() >= 2);
        QCOMPARE(w_->quantPanel()->settings().wbits, 4);  // the last scheme used
        w_->activateWindow();  // the tests after this one use the restored window
        QVERIFY(QTest::qWaitForWindowActive(w_.get()));
    }

    void cleanupTestCase() { w_.reset(); }
};

int main(int argc, char** argv) {
    GuiTestSetup setup;  // scratch settings, the studio's OpenGL format
    QApplication app(argc, argv);
    QApplication::setOrganizationName("CushionCacheTest");
    QApplication::setApplicationName("cushion-studio-test");
    TestStudio t;
    return QTest::qExec(&t, argc, argv);
}

#include "test_studio.moc"
