// The studio on a real LLM (issue 13 item 6, issue 14 item 4): SmolLM2-135M-Instruct (30 layers, dim 576, FFN 1536,
// 49152 tokens; models/SmolLM2-135M-Instruct.Q4_1.gguf, fetched by packaging/fetch_smollm2.sh, which the set-up
// runs). Label `reference` like the other SmolLM2 tests: never skipped, a missing file fails naming the fetch script.
// QtTest drives the real window under Xvfb: the fetched model is offered in File > Open recent and the Open dialog
// starts in its folder; it is opened through File > Open model file (the dialog answered as a person would); a
// 512-token prompt shows the massive activation on its first token, and the channel maps of every layer come with
// the probe; a search step with the default kind (fast, at this size) over all 49152 candidates shows progress and
// is cancelled within 5 s; a fast step over 1024 candidates on a 64-token sample runs to the end and fills the
// candidate table and the histogram (the screen's estimate of every candidate). The GUI thread's longest stall is
// measured throughout (a 5 ms timer), as in gui_studio_tests.
#include <QAction>
#include <QApplication>
#include <QDir>
#include <QDockWidget>
#include <QElapsedTimer>
#include <QFile>
#include <QFileDialog>
#include <QFileInfo>
#include <QLabel>
#include <QLineEdit>
#include <QMenu>
#include <QMenuBar>
#include <QPainter>
#include <QPlainTextEdit>
#include <QPushButton>
#include <QScrollBar>
#include <QSettings>
#include <QSignalSpy>
#include <QTableView>
#include <QTest>
#include <QTimer>
#include <QtCharts/QAreaSeries>
#include <QtCharts/QChart>
#include <QtCharts/QChartView>
#include <QtCharts/QLineSeries>

#include <cmath>
#include <memory>

#include "gui_test_setup.h"
#include "base/resources.h"
#include "heatmap_canvas.h"
#include "main_window.h"
#include "model/model.h"
#include "prompt_panel.h"
#include "search_panel.h"
#include "stall_meter.h"
#include "window_grab.h"
#include "workers.h"

using namespace studio;

namespace {

const QString kModel = QStringLiteral(CUSHION_SMOLLM2_PATH);

// A prompt of n tokens with the model's first token (the tokenizer's <bos>: <|endoftext|> for SmolLM2), cut from the
// evaluation text.
QString promptOfTokens(const cushion::Model& m, int n) {
    QFile f(QString::fromStdString(cushion::sample_text_path("tinystories-eval.txt")));
    if (!f.open(QIODevice::ReadOnly)) return {};
    const std::string text = QString::fromUtf8(f.readAll()).replace('\n', ' ').toStdString();
    const auto& tk = *m.tokenizer;
    const std::vector<int32_t> ids = tk.encode(text, true);
    const size_t first = !ids.empty() && ids[0] == tk.bos_id() ? 1 : 0;
    std::string out;
    for (size_t i = first; i < ids.size() && int(i) < n; ++i) out += tk.decode_token(i ? ids[i - 1] : -1, ids[i]);
    return QString::fromStdString(out);
}

QAction* findAction(QWidget* w, const QString& text_prefix) {
    for (QAction* a : w->findChildren<QAction*>())
        if (a->text().startsWith(text_prefix)) return a;
    return nullptr;
}

void screenshot(MainWindow* w, const QString& name) {
    QTest::qWait(50);
    QDir().mkpath(CUSHION_SCREENSHOT_DIR);
    QVERIFY(grabWithCanvases(w).save(QString(CUSHION_SCREENSHOT_DIR) + "/" + name + ".png"));
}

}  // namespace

class TestStudioSmolLM2 : public QObject {
    Q_OBJECT
    std::unique_ptr<MainWindow> w_;
    qint64 worst_stall_ = 0;

    void stalled(const char* what, qint64 ms) {
        qInfo("longest GUI-thread stall, %s: %lld ms", what, ms);
        worst_stall_ = std::max(worst_stall_, ms);
        QVERIFY2(ms < 1000, qPrintable(QString("GUI thread stalled %1 ms (%2)").arg(ms).arg(what)));
    }

private slots:
    void initTestCase() {
        QVERIFY2(QFileInfo::exists(kModel),
                 qPrintable(kModel + " is missing: run `bash packaging/fetch_smollm2.sh` (packaging/setup.sh does)"));
        QSettings().clear();
        w_ = std::make_unique<MainWindow>(MainWindow::Options{false});
        w_->show();
        QVERIFY(QTest::qWaitForWindowExposed(w_.get()));
    }

    void offersTheFetchedModelAndOpensItThroughFileOpen() {
        const QString canonical = QFileInfo(kModel).canonicalFilePath();
        // File > Open recent offers the fetched model before it was ever opened.
        QVERIFY(w_->recentFiles().isEmpty());
        QVERIFY(w_->recentMenu()->isEnabled());
        bool offered = false;
        for (QAction* a : w_->recentMenu()->actions()) offered |= a->data().toString() == canonical;
        QVERIFY2(offered, "File > Open recent does not offer models/SmolLM2-135M-Instruct.Q4_1.gguf");

        // File > Open model file: the dialog starts in the fetched models' folder; pick the file there.
        QAction* open = findAction(w_.get(), tr("&Open model file"));
        QVERIFY(open);
        QString dialog_dir;
        bool answered = false;
        QTimer poll;
        connect(&poll, &QTimer::timeout, [&] {
            auto* d = qobject_cast<QFileDialog*>(QApplication::activeModalWidget());
            if (!d || !d->isVisible()) return;
            if (answered) return;
            answered = true;
            dialog_dir = d->directory().canonicalPath();
            // Type the file's name into the dialog's name field and press Enter, as a person would.
            auto* edit = d->findChild<QLineEdit*>("fileNameEdit");
            QVERIFY(edit);
            edit->setFocus();
            QTest::keyClicks(edit, QFileInfo(canonical).fileName());
            QTest::keyClick(edit, Qt::Key_Return);
        });
        poll.start(50);
        QSignalSpy loaded(w_.get(), &MainWindow::modelLoaded);
        open->trigger();  // returns when the dialog was answered
        poll.stop();
        QVERIFY(answered);
        QCOMPARE(dialog_dir, QFileInfo(canonical).absolutePath());
        QTRY_COMPARE_WITH_TIMEOUT(loaded.count(), 1, 300000);
        QVERIFY(w_->model());
        QCOMPARE(w_->model()->layers, 30);
        QCOMPARE(w_->model()->dim, 576);
        QCOMPARE(w_->model()->hidden, 1536);
        QCOMPARE(w_->model()->vocab, 49152);
        QVERIFY2(w_->errorText().isEmpty(), qPrintable(w_->errorText()));
        QCOMPARE(QFileInfo(w_->recentFiles().first()).canonicalFilePath(), canonical);
    }

    void a512TokenPromptShowsTheMassiveActivationOnItsFirstToken() {
        QVERIFY(w_->model());
        const QString prompt = promptOfTokens(*w_->model()->model, 512);
        QVERIFY(!prompt.isEmpty());
        w_->setSite(3);  // down-projection inputs: where SmolLM2's massive activations are
        QSignalSpy heat(w_.get(), &MainWindow::heatmapUpdated);
        StallMeter meter;
        meter.start();
        w_->promptPanel()->editor()->setPlainText(prompt);
        QTRY_VERIFY_WITH_TIMEOUT(heat.count() >= 1 && w_->heatmap() && w_->heatmap()->tokens > 500, 300000);
        QTest::qWait(200);
        stalled("probing 512 tokens", meter.stop());
        const HeatmapDataPtr d = w_->heatmap();
        QCOMPARE(d->layers, 30);
        QVERIFY2(d->tokens >= 500 && d->tokens <= 512, qPrintable(QString::number(d->tokens)));
        QCOMPARE(d->token_ids.front(), int(w_->model()->model->tokenizer->bos_id()));
        // The largest |x| of the layer x token map sits on the first token, far above its layer's median.
        const auto& mx = d->token_max[3];
        const size_t best = std::max_element(mx.begin(), mx.end()) - mx.begin();
        const int best_token = int(best % d->tokens), best_layer = int(best / d->tokens);
        qInfo("largest down_in |x|: %.1f at token %d, layer %d, max/median %.0f", mx[best], best_token, best_layer,
              d->token_ratio[3][best]);
        QCOMPARE(best_token, 0);
        QVERIFY(d->token_ratio[3][best] > 64);  // PrefixQuant's outlier-token threshold
        float other = 0;
        for (int l = 0; l < d->layers; ++l)
            for (int t = 1; t < d->tokens; ++t) other = std::max(other, mx[size_t(l) * d->tokens + t]);
        QVERIFY2(mx[best] > 10 * other, qPrintable(QString("%1 vs %2").arg(mx[best]).arg(other)));
        HeatmapCanvas* lc = w_->layerCanvas();
        QCOMPARE(lc->rows(), 30);
        QCOMPARE(lc->cols(), d->tokens);
        // The probe kept the channel maps of every layer at the shown site (30 x 512 x 1536 floats):
        // changing the channel map's layer needs no new forward pass.
        for (int l = 0; l < 30; ++l) QVERIFY2(d->channelMap(l, 3), qPrintable(QString("layer %1").arg(l)));
        const int probes = heat.count();
        meter.start();
        QElapsedTimer t;
        t.start();
        for (int l : {5, 17, 29}) {
            w_->selectLayer(l);
            QCOMPARE(w_->channelCanvas()->rows(), 1536);
            QCOMPARE(w_->channelCanvas()->cols(), d->tokens);
            w_->channelCanvas()->renderFrameNow();
        }
        qInfo("three layer changes drawn in %lld ms", t.elapsed());
        QTest::qWait(100);
        stalled("changing layers", meter.stop());
        QCOMPARE(heat.count(), probes);  // no new probe
        screenshot(w_.get(), "smollm2_heatmap");
    }

    void searchStepOverAllCandidatesShowsProgressAndCancels() {
        SearchPanel* sp = w_->searchPanel();
        sp->setSettings(SearchSettings{});  // the defaults: every candidate, a 512-token sample, automatic step kind
        w_->searchDock()->raise();
        QSignalSpy su(w_.get(), &MainWindow::searchUpdated);
        QSignalSpy progress(w_->workers()->search(), &Worker::progress);
        QSignalSpy cancelled(w_->workers()->search(), &Worker::cancelled);
        StallMeter meter;
        meter.start();
        QTest::mouseClick(sp->stepButton(), Qt::LeftButton);  // starts a search, then steps
        QTRY_VERIFY_WITH_TIMEOUT(w_->searchSnapshot() && !w_->searchSnapshot()->scores, 300000);
        const SearchSnapshotPtr s0 = w_->searchSnapshot();
        QVERIFY2(s0->candidates > 49000, qPrintable(QString::number(s0->candidates)));
        QCOMPARE(s0->sample_tokens, 512);
        QCOMPARE(int(s0->prefix.size()), 1);
        // The screen's batches report progress: wait for two of them, moving forward.
        auto screened = [&] {
            QList<double> f;
            for (const QList<QVariant>& a : progress)
                if (a[1].toString().contains("(screen)") && a[1].toString().contains("candidates")) f << a[0].toDouble();
            return f;
        };
        QTRY_VERIFY_WITH_TIMEOUT(screened().size() >= 2 && screened().last() > screened().first(), 600000);
        QVERIFY(w_->searchBusy());
        qInfo("screen progress %.4f -> %.4f", screened().first(), screened().last());
        QElapsedTimer t;
        t.start();
        QVERIFY(sp->cancelButton()->isEnabled());
        QTest::mouseClick(sp->cancelButton(), Qt::LeftButton);
        QTRY_COMPARE_WITH_TIMEOUT(cancelled.count(), 1, 60000);
        const qint64 cancel_ms = t.elapsed();
        qInfo("cancel of a fast step over %lld candidates returned in %lld ms", (long long)s0->candidates, cancel_ms);
        QVERIFY2(cancel_ms < 5000, qPrintable(QString("cancel took %1 ms").arg(cancel_ms)));
        QTRY_VERIFY(!w_->searchBusy());
        stalled("a fast step over all candidates, then cancel", meter.stop());
        QCOMPARE(w_->searchSnapshot(), s0);  // nothing published, nothing changed
        QVERIFY2(w_->errorText().isEmpty(), qPrintable(w_->errorText()));
        QVERIFY(sp->stepButton()->isEnabled());
    }

    void fastStepFillsTheCandidateTableAndTheHistogram() {
        SearchPanel* sp = w_->searchPanel();
        SearchSettings s;
        s.candidates = "100-1123";  // 1024 ordinary tokens
        s.sample_tokens = 64;
        sp->setSettings(s);
        QSignalSpy su(w_.get(), &MainWindow::searchUpdated);
        QTest::mouseClick(sp->newButton(), Qt::LeftButton);
        QTRY_VERIFY_WITH_TIMEOUT(su.count() >= 1 && !w_->searchBusy(), 300000);
        QCOMPARE(w_->searchSnapshot()->candidates, 1024);
        StallMeter meter;
        meter.start();
        QElapsedTimer t;
        t.start();
        QTest::mouseClick(sp->stepButton(), Qt::LeftButton);
        QTRY_VERIFY_WITH_TIMEOUT(su.count() >= 2 && !w_->searchBusy(), 900000);
        qInfo("fast step over 1024 candidates (64-token sample): %.1f s", t.elapsed() / 1000.0);
        stalled("a fast step over 1024 candidates", meter.stop());
        QVERIFY2(w_->errorText().isEmpty(), qPrintable(w_->errorText()));
        const SearchSnapshotPtr snap = w_->searchSnapshot();
        QVERIFY(snap->scores);
        const SearchScores& sc = *snap->scores;
        QVERIFY(sc.fast && !sc.pruned && sc.committed);
        // Every candidate has the screen's estimate; the shortlist has exact losses, and the table lists them.
        int screened = 0, positive = 0;
        for (double x : sc.window_loss) {
            screened += std::isfinite(x);
            positive += std::isfinite(x) && x > 0;
        }
        QCOMPARE(screened, 1024);
        QCOMPARE(int(sc.shortlist.size()), 16);
        QCOMPARE(sp->candidateRows(), 16);
        for (int r = 1; r < sp->candidateRows(); ++r) QVERIFY(sc.loss[sp->candidateAt(r)] >= sc.loss[sp->candidateAt(r - 1)]);
        QCOMPARE(sp->candidateAt(0), sc.best_token);
        // The histogram: the screen's estimate of every candidate (its bins add up to them), with the markers.
        QChart* hist = sp->histogramView()->chart();
        QVERIFY2(hist->title().contains("estimate") && hist->title().contains(QString::number(positive)),
                 qPrintable(hist->title()));
        auto* area = qobject_cast<QAreaSeries*>(hist->series().first());
        QVERIFY(area);
        double total = 0;
        const QList<QPointF> pts = area->upperSeries()->points();
        for (int i = 0; i < pts.size(); i += 2) total += pts[i].y();  // two points per bin
        QCOMPARE(int(total), positive);
        QVERIFY(positive >= 1000);
        QCOMPARE(hist->series().size(), 4);  // estimates, L_q(prefix), tau line, best (re-scored)

        // The table and the histogram stay responsive: select rows, scroll, resize the chart.
        QTableView* table = sp->candidateView();
        meter.start();
        t.restart();
        for (int r = 0; r < sp->candidateRows(); ++r) {
            table->selectRow(r);
            table->scrollTo(table->model()->index(r, 0));
            QTest::qWait(10);
        }
        sp->histogramView()->resize(sp->histogramView()->width(), sp->histogramView()->height() + 40);
        QTest::qWait(100);
        sp->histogramView()->resize(sp->histogramView()->width(), sp->histogramView()->height() - 40);
        QTest::qWait(100);
        qInfo("16 row selections and two chart resizes: %lld ms", t.elapsed());
        stalled("browsing the candidates", meter.stop());
        screenshot(w_.get(), "smollm2_search");
        qInfo("worst GUI-thread stall in this test: %lld ms", worst_stall_);
    }

    void cleanupTestCase() { w_.reset(); }
};

int main(int argc, char** argv) {
    GuiTestSetup setup;  // scratch settings, the studio's OpenGL format
    QApplication::setAttribute(Qt::AA_DontUseNativeDialogs);  // Qt's own file dialog, which the test answers
    QApplication app(argc, argv);
    QApplication::setOrganizationName("CushionCacheTest");
    QApplication::setApplicationName("cushion-studio-smollm2-test");
    TestStudioSmolLM2 t;
    return QTest::qExec(&t, argc, argv);
}

#include "test_studio_smollm2.moc"
