// GUI tests: QtTest drives the real studio window under Xvfb, as a person would use it: open the default
// model, type a prompt and wait for the heatmap, hover/click/zoom/pan, switch probe sites, quantize and
// read the perplexities and the chart, cancel, see errors in the window, drag and drop a model, and get
// the session back from the settings. Screenshots of each stage go to resources/screenshots/.
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
#include <QSurfaceFormat>
#include <QTemporaryDir>
#include <QTimer>
#include <QTest>
#include <QTreeWidget>
#include <QUrl>

#include <QtCharts/QAbstractSeries>
#include <QtCharts/QBarSeries>
#include <QtCharts/QChart>
#include <QtCharts/QChartView>

#include <memory>
#include <random>

#include "heatmap_canvas.h"
#include "main_window.h"
#include "model_panel.h"
#include "prompt_panel.h"
#include "quant_panel.h"

using namespace studio;

namespace {

QString resource(const QString& rel) { return QString(CUSHION_TEST_RESOURCE_DIR) + "/" + rel; }

void screenshot(QWidget* w, const QString& name) {
    QDir().mkpath(CUSHION_SCREENSHOT_DIR);
    const QString path = QString(CUSHION_SCREENSHOT_DIR) + "/" + name + ".png";
    QVERIFY2(w->grab().save(path), qPrintable("cannot save " + path));
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

}  // namespace

class TestStudio : public QObject {
    Q_OBJECT
    std::unique_ptr<MainWindow> w_;

    void typePrompt(const QString& text) {
        QPlainTextEdit* e = w_->promptPanel()->editor();
        e->clear();
        e->setFocus();
        QTest::keyClicks(e, text);
    }

private slots:
    void initTestCase() {
        QSettings().clear();
        w_ = std::make_unique<MainWindow>(MainWindow::Options{false});
        w_->show();
        QVERIFY(QTest::qWaitForWindowExposed(w_.get()));
        w_->activateWindow();  // shortcuts go to the active window
        QVERIFY(QTest::qWaitForWindowActive(w_.get()));
    }

    void opensDefaultModel() {
        QSignalSpy loaded(w_.get(), &MainWindow::modelLoaded);
        w_->openDefaultModel();
        QTRY_COMPARE_WITH_TIMEOUT(loaded.count(), 1, 30000);
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
        QSignalSpy updated(w_.get(), &MainWindow::heatmapUpdated);
        typePrompt("Once upon a time, there was a little cat named Tom. Tom liked to play with a red ball.");
        QTRY_VERIFY_WITH_TIMEOUT(updated.count() >= 1, 20000);
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
        HeatmapCanvas* c = w_->layerCanvas();
        HeatmapCanvas* ch = w_->channelCanvas();
        c->resetView();
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
        QuantPanel* q = w_->quantPanel();
        QuantSettings s;
        s.wbits = 8;
        s.abits = 8;
        s.granularity = "per-tensor-static";
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
        QTRY_COMPARE_WITH_TIMEOUT(done.count(), 1, 60000);
        tick.stop();
        qInfo("longest GUI-thread stall during quantization: %lld ms", longest);
        QVERIFY2(longest < 250, qPrintable(QString("GUI thread stalled %1 ms").arg(longest)));
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
        s.granularity = "per-token";
        q->setSettings(s);
        QTest::mouseClick(q->runButton(), Qt::LeftButton);
        QTRY_COMPARE_WITH_TIMEOUT(done.count(), 2, 60000);
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
        QuantPanel* q = w_->quantPanel();
        const QString calib = q->calibPath(), old_eval = q->evalPath();
        q->setTextPaths(calib, eval);
        QSignalSpy progress(w_->workers()->quant(), &Worker::progress);
        QSignalSpy cancelled(w_->workers()->quant(), &Worker::cancelled);
        QSignalSpy done(w_.get(), &MainWindow::quantizationDone);
        w_->runQuantization();
        QTRY_VERIFY_WITH_TIMEOUT(progress.count() >= 1, 10000);
        QElapsedTimer t;
        t.start();
        w_->cancelAll();
        QTRY_COMPARE_WITH_TIMEOUT(cancelled.count(), 1, 10000);
        QVERIFY2(t.elapsed() < 3000, qPrintable(QString("cancel took %1 ms").arg(t.elapsed())));
        QCOMPARE(done.count(), 0);
        QTRY_VERIFY(q->runButton()->isEnabled());
        q->setTextPaths(calib, old_eval);
    }

    void errorsAppearInTheWindowNotAsACrash() {
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
        QTRY_COMPARE_WITH_TIMEOUT(err.count(), 2, 20000);
        QVERIFY2(w_->errorText().contains("Could not load"), qPrintable(w_->errorText()));
        QVERIFY(w_->logText().contains("error:"));
        QCOMPARE(w_->model(), before);  // the loaded model stays
        screenshot(w_.get(), "studio_error");
    }

    void dragAndDropOpensAModel() {
        QSignalSpy loaded(w_.get(), &MainWindow::modelLoaded);
        auto* mime = new QMimeData;
        mime->setUrls({QUrl::fromLocalFile(resource("models/stories260K/stories260K.gguf"))});
        QDragEnterEvent enter(QPoint(300, 300), Qt::CopyAction, mime, Qt::LeftButton, Qt::NoModifier);
        QApplication::sendEvent(w_.get(), &enter);
        QVERIFY(enter.isAccepted());
        QDropEvent drop(QPointF(300, 300), Qt::CopyAction, mime, Qt::LeftButton, Qt::NoModifier);
        QApplication::sendEvent(w_.get(), &drop);
        QTRY_COMPARE_WITH_TIMEOUT(loaded.count(), 1, 30000);
        QCOMPARE(w_->model()->format, QString("gguf"));
        QVERIFY(w_->recentFiles().size() >= 2);
        QVERIFY(w_->recentMenu()->actions().size() >= 2);
        QTRY_VERIFY_WITH_TIMEOUT(w_->heatmap() && w_->heatmap()->model_key == w_->model()->model.get(), 20000);
        delete mime;
    }

    void loadingATextFileProbesIt() {
        QSignalSpy updated(w_.get(), &MainWindow::heatmapUpdated);
        w_->loadTextFile(resource("text/tinystories-eval.txt"));
        QTRY_VERIFY_WITH_TIMEOUT(updated.count() >= 1, 20000);
        QCOMPARE(w_->heatmap()->tokens, int(w_->model()->context));  // truncated to the model's context
        QVERIFY(w_->heatmap()->truncated);
        QVERIFY(w_->promptPanel()->status().contains("truncated"));
        QTRY_VERIFY(canvasShowsMap(w_->layerCanvas()));
        screenshot(w_.get(), "studio_long_text");
    }

    void searchDockIsAPlaceholderUntilTheEngineArrives() {
        QDockWidget* d = w_->searchDock();
        QVERIFY(d);
        QVERIFY(!d->widget()->isEnabled());
        QVERIFY(d->widget()->findChild<QLabel*>("searchPlaceholder")->text().contains("arrives with the search engine"));
    }

    void settingsBringTheSessionBack() {
        const QString prompt = "The dog ran to the park.";
        QSignalSpy updated(w_.get(), &MainWindow::heatmapUpdated);
        w_->promptPanel()->setText(prompt);
        QTRY_VERIFY_WITH_TIMEOUT(updated.count() >= 1, 20000);
        w_->setSite(1);
        w_->close();
        w_.reset();
        w_ = std::make_unique<MainWindow>(MainWindow::Options{true});
        w_->show();
        QVERIFY(QTest::qWaitForWindowExposed(w_.get()));
        QTRY_VERIFY_WITH_TIMEOUT(w_->model() != nullptr, 30000);
        QCOMPARE(w_->model()->format, QString("gguf"));  // the last model opened
        QCOMPARE(w_->promptPanel()->text(), prompt);
        QCOMPARE(w_->site(), 1);
        QTRY_VERIFY_WITH_TIMEOUT(w_->heatmap() != nullptr, 20000);
        QVERIFY(w_->recentFiles().size() >= 2);
        QCOMPARE(w_->quantPanel()->settings().wbits, 4);  // the last scheme used
    }

    void cleanupTestCase() { w_.reset(); }
};

int main(int argc, char** argv) {
    QTemporaryDir config;
    qputenv("XDG_CONFIG_HOME", config.path().toUtf8());  // never touch the user's settings
    QSurfaceFormat fmt;
    fmt.setVersion(3, 3);
    fmt.setProfile(QSurfaceFormat::CoreProfile);
    QSurfaceFormat::setDefaultFormat(fmt);
    QApplication app(argc, argv);
    QApplication::setOrganizationName("CushionCacheTest");
    QApplication::setApplicationName("cushion-studio-test");
    TestStudio t;
    return QTest::qExec(&t, argc, argv);
}

#include "test_studio.moc"
