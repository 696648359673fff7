// The studio's controllers alone, without a widget (QCoreApplication): a cancel token per job, the search's
// state machine (start -> step -> score -> accept / undo, Run, Pause, Cancel), tuning's pause and resume, a
// session's save / open round trip, the prompt's probes and comparison (what a request carries, stale results
// dropped, a cancel that stops only the jobs posted before it) and the export's rules, on the embedded
// stories260K model with small settings. Each test sets up what it needs (ensureSearch, ensureTuned), so they
// pass in any order (ctest gui_controller_tests_order runs them reversed and shuffled: tests/gui/run_shuffled.py).
#include <QCoreApplication>
#include <QDir>
#include <QElapsedTimer>
#include <QSignalSpy>
#include <QTemporaryDir>
#include <QTest>
#include <QThread>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>

#include "base/error.h"
#include "model_controller.h"
#include "probe_controller.h"
#include "quant_controller.h"
#include "search_controller.h"
#include "search_workers.h"
#include "session_controller.h"
#include "tune_controller.h"
#include "workers.h"

using namespace studio;

namespace {
// A job that polls its cancel token until it is released.
class SpinWorker : public Worker {
    Q_OBJECT
public:
    std::atomic<int> running{0};
    std::atomic<bool> release{false};
    void spin() {
        runJob("spin", [this] {
            ++running;
            while (!release.load()) {
                if (!report(0.5, "spinning")) {
                    --running;
                    throw cushion::Cancelled();
                }
                QThread::msleep(2);
            }
            --running;
        });
    }
};

const QString kResources = CUSHION_TEST_RESOURCE_DIR;
}  // namespace

class TestControllers : public QObject {
    Q_OBJECT
    std::unique_ptr<WorkerThreads> workers_;
    std::unique_ptr<ModelController> model_;
    std::unique_ptr<SearchController> search_;
    std::unique_ptr<TuneController> tune_;
    std::unique_ptr<SessionController> session_;
    std::unique_ptr<ProbeController> probe_;
    std::unique_ptr<QuantController> quant_;
    SearchSettings settings_;
    TuneSettings tune_settings_;
    ProbeController::Inputs probe_inputs_;
    QuantController::Inputs quant_inputs_;

    // Blocks a worker's thread until the returned flag is set: jobs posted meanwhile queue behind it.
    static std::shared_ptr<std::atomic<bool>> block(Worker* w) {
        auto release = std::make_shared<std::atomic<bool>>(false);
        WorkerThreads::post(w, [release] {
            while (!release->load()) QThread::msleep(2);
        });
        return release;
    }

    // A search with a cushion (one step), for the tests that need one.
    bool ensureSearch() {
        if (search_->snapshot() && search_->snapshot()->cushion) return true;
        search_->step();
        return waitIdle() && search_->snapshot() && search_->snapshot()->cushion;
    }
    // A finished tuning of the search's cushion (and so a tuned cushion and a tuner), for the session test.
    bool ensureTuned() {
        if (!ensureSearch()) return false;
        if (tune_->snapshot() && tune_->snapshot()->done && tune_->tunedCushion()) return true;
        tune_->start();
        return waitIdle() && tune_->snapshot() && tune_->snapshot()->done && tune_->tunedCushion();
    }

    bool waitIdle(int ms = 240000) {
        QElapsedTimer t;
        t.start();
        while (t.elapsed() < ms) {
            if (search_->idle() && tune_->idle()) {
                QTest::qWait(20);  // let queued signals land
                if (search_->idle() && tune_->idle()) return true;
            }
            QTest::qWait(20);
        }
        return false;
    }

private slots:
    void initTestCase() {
        workers_ = std::make_unique<WorkerThreads>();
        model_ = std::make_unique<ModelController>(workers_->model());
        settings_.tau = 1.0;  // accept any improvement
        settings_.max_prefix = 5;
        settings_.sample_tokens = 48;
        settings_.candidates = "3-258";
        tune_settings_.epochs = 1;
        tune_settings_.batch = 4;
        tune_settings_.doc_tokens = 48;
        tune_settings_.eval_docs = 3;
        const QString calib = kResources + "/text/tinystories-calib.txt";
        const QString eval = kResources + "/text/tinystories-eval.txt";
        search_ = std::make_unique<SearchController>(workers_->search(), [this, calib] {
            return SearchController::Inputs{settings_, calib};
        });
        tune_ = std::make_unique<TuneController>(workers_->tune(), search_.get(), [this, calib, eval] {
            return TuneController::Inputs{tune_settings_, defaultQuantScheme(), calib, eval};
        });
        session_ = std::make_unique<SessionController>(model_.get(), search_.get(), tune_.get(), workers_->exporter());
        probe_ = std::make_unique<ProbeController>(workers_->probe(), [this] { return probe_inputs_; });
        quant_inputs_ = {defaultQuantScheme(), calib, eval, nullptr};
        quant_ = std::make_unique<QuantController>(workers_->quant(), workers_->exporter(), [this] { return quant_inputs_; });
        connect(search_.get(), &SearchController::updated, tune_.get(), [this](const SearchSnapshotPtr&, bool changed) {
            if (changed) tune_->invalidate("the prefix changed");
        });
        connect(session_.get(), &SessionController::error, this, [](const QString& e) { qWarning("session: %s", qPrintable(e)); });
        connect(search_.get(), &SearchController::failed, this, [](const QString& e) { qWarning("search: %s", qPrintable(e)); });
        connect(search_.get(), &SearchController::error, this, [](const QString& e) { qWarning("search: %s", qPrintable(e)); });
        connect(tune_.get(), &TuneController::failed, this, [](const QString& e) { qWarning("tuning: %s", qPrintable(e)); });
        QSignalSpy loaded(model_.get(), &ModelController::loaded);
        model_->open(kResources + "/models/stories260K/stories260K.bin", "cpu", "fp32");
        QVERIFY(loaded.wait(120000));
        search_->setModel(model_->model());
        tune_->setModel(model_->model());
        probe_->setModel(model_->model());
        quant_->setModel(model_->model());
        session_->modelLoaded();
    }

    // Cancelling a job and posting the next one at once: the old job stops, the new one runs (one flag per
    // worker, cleared when the next job was posted, let the old job run on).
    void cancellingThenPostingLeavesTheNewJobRunning() {
        QThread thread;
        auto* w = new SpinWorker;
        w->moveToThread(&thread);
        thread.start();
        QSignalSpy cancelled(w, &Worker::cancelled), finished(w, &Worker::finished);
        WorkerThreads::post(w, [w] { w->spin(); });
        QTRY_COMPARE_WITH_TIMEOUT(w->running.load(), 1, 10000);
        w->requestCancel();
        const cushion::CancelToken second = WorkerThreads::post(w, [w] { w->spin(); });
        QTRY_COMPARE_WITH_TIMEOUT(cancelled.count(), 1, 10000);
        QTRY_COMPARE_WITH_TIMEOUT(w->running.load(), 1, 10000);  // the second job runs
        QTest::qWait(200);
        QCOMPARE(w->running.load(), 1);
        QCOMPARE(cancelled.count(), 1);
        QVERIFY(!second.cancelled());
        w->release = true;
        QTRY_COMPARE_WITH_TIMEOUT(finished.count(), 2, 10000);
        QCOMPARE(cancelled.count(), 1);
        // A token cancels its own job only.
        w->release = false;
        const cushion::CancelToken third = WorkerThreads::post(w, [w] { w->spin(); });
        QTRY_COMPARE_WITH_TIMEOUT(w->running.load(), 1, 10000);
        third.cancel();
        QTRY_COMPARE_WITH_TIMEOUT(cancelled.count(), 2, 10000);
        QMetaObject::invokeMethod(w, [w] { delete w; }, Qt::QueuedConnection);
        thread.quit();
        thread.wait();
    }

    void searchStepScoreAcceptUndoCancel() {
        search_->reset();  // from no search (another test may have left one)
        QVERIFY(waitIdle());
        QVERIFY(!search_->snapshot());
        QSignalSpy started(search_.get(), &SearchController::started);
        // Step with no search: it starts one, then steps.
        search_->step();
        QVERIFY(search_->busy());
        QVERIFY(waitIdle());
        QCOMPARE(started.count(), 1);
        SearchSnapshotPtr s1 = search_->snapshot();
        QVERIFY(s1);
        QCOMPARE(s1->prefix.size(), s1->start.size() + 1);
        QVERIFY(s1->scores && s1->scores->committed);
        QVERIFY(s1->cushion);

        // Score: nothing changes but the scores.
        search_->score();
        QVERIFY(waitIdle());
        SearchSnapshotPtr s2 = search_->snapshot();
        QCOMPARE(s2->prefix, s1->prefix);
        QVERIFY(s2->scores && !s2->scores->committed);
        QCOMPARE(s2->scores->scored_prefix, s1->prefix);
        const int best = s2->scores->best_token;
        QVERIFY(best >= 3 && best <= 258);

        // Accept: the scored best is appended.
        search_->acceptBest();
        QVERIFY(waitIdle());
        SearchSnapshotPtr s3 = search_->snapshot();
        QCOMPARE(s3->prefix.size(), s1->prefix.size() + 1);
        QCOMPARE(s3->prefix.back(), best);

        // Undo: back to the prefix before.
        search_->undo();
        QVERIFY(waitIdle());
        QCOMPARE(search_->snapshot()->prefix, s1->prefix);

        // Cancel right after Run: the step is interrupted, the search is as before it, Run is off.
        QSignalSpy cancelled(search_.get(), &SearchController::cancelled);
        search_->run();
        QVERIFY(search_->running());
        search_->cancel();
        QVERIFY(!search_->running());
        QVERIFY(waitIdle());
        QCOMPARE(cancelled.count(), 1);
        QCOMPARE(search_->snapshot()->prefix, s1->prefix);

        // Run, paused after its first step: exactly one more token.
        auto c = connect(search_.get(), &SearchController::updated, this, [this] { search_->pause(); });
        search_->run();
        QVERIFY(waitIdle());
        disconnect(c);
        QVERIFY(!search_->running());
        QCOMPARE(search_->snapshot()->prefix.size(), s1->prefix.size() + 1);
    }

    void tuningPausesAndResumes() {
        QVERIFY(ensureSearch());
        QSignalSpy measured(tune_.get(), &TuneController::measured);
        // Pause at the first batch.
        auto c = connect(tune_.get(), &TuneController::updated, this, [this](const TuneSnapshotPtr& s) {
            if (s->steps_done >= 1) tune_->pause();
        });
        tune_->start();
        QVERIFY(tune_->running());
        QVERIFY(waitIdle());
        disconnect(c);
        QVERIFY(!tune_->running());
        TuneSnapshotPtr t1 = tune_->snapshot();
        QVERIFY(t1);
        QCOMPARE(t1->steps_done, qint64(1));
        QVERIFY(t1->total_steps > 2);
        QCOMPARE(measured.count(), 2);  // no cushion, the search's
        QVERIFY(tune_->tunedCushion());
        QTest::qWait(300);
        QCOMPARE(tune_->snapshot()->steps_done, qint64(1));  // paused: nothing more
        // One batch, then resume to the end (and the tuned cushion's perplexity).
        tune_->step();
        QVERIFY(waitIdle());
        QCOMPARE(tune_->snapshot()->steps_done, qint64(2));
        tune_->resume();
        QVERIFY(tune_->running());
        QVERIFY(waitIdle());
        QVERIFY(tune_->snapshot()->done);
        QCOMPARE(tune_->snapshot()->steps_done, t1->total_steps);
        QCOMPARE(measured.count(), 3);
        QVERIFY(tune_->perplexity(PplWhich::After));
    }

    void sessionSavesAndOpensAgain() {
        QTemporaryDir dir;
        const QString path = dir.filePath("round.cushionstudio");
        QVERIFY(ensureTuned());
        const SearchSnapshotPtr s = search_->snapshot();
        const TuneSnapshotPtr t = tune_->snapshot();
        QVERIFY(s && t);
        SessionData d;
        d.prompt = "Tom had a ball.";
        d.search = settings_;
        d.tune = tune_settings_;
        QSignalSpy saved(session_.get(), &SessionController::saved);
        session_->save(path, d, tune_->tunedCushion(), true);
        QVERIFY(saved.wait(60000));
        QVERIFY(QFileInfo::exists(sessionCushionPath(path)));
        QVERIFY(QFileInfo::exists(sessionTunerPath(path)));

        // Forget everything, then open it: the same model stays, the search, the tuned cushion and the tuner
        // come back.
        QSignalSpy opened(session_.get(), &SessionController::opened);
        QSignalSpy errors(session_.get(), &SessionController::error);
        QString prompt;
        size_t restored_points = 0;
        QObject scope;  // the connections below capture this function's locals: they end with it
        connect(session_.get(), &SessionController::settingsRead, &scope, [&](const SessionData& r) { prompt = r.prompt; });
        connect(session_.get(), &SessionController::tunedRestored, &scope,
                [&](const CushionPtr&, const std::vector<TunePoint>& p) { restored_points = p.size(); });
        session_->open(path);
        QVERIFY(opened.wait(120000));
        QCOMPARE(errors.count(), 0);
        QCOMPARE(prompt, QString("Tom had a ball."));
        QCOMPARE(restored_points, t->points.size());
        QVERIFY(waitIdle());
        QCOMPARE(search_->snapshot()->prefix, s->prefix);
        QCOMPARE(search_->snapshot()->state_json, s->state_json);
        QVERIFY(tune_->tunedCushion());
        QCOMPARE(cushionText(tune_->tunedCushion()), cushionText(t->cushion));
        QCOMPARE(tune_->snapshot()->steps_done, t->steps_done);
    }

    // Opening a session while a tuning job of the previous work is still queued or running: that job's late update
    // (here emitted by the worker, as a step past its last cancel check does) must not be taken for the resumed
    // tuner's, nor end the session's restore. The tuning thread is held until the restore waits for the tuner (stage
    // 4); the late update arrives then; only the resumed tuner's update ends the restore.
    void aLateTuningResultIsNotTheResumedOne() {
        QTemporaryDir dir;
        const QString path = dir.filePath("late.cushionstudio");
        QVERIFY(ensureTuned());
        const TuneSnapshotPtr late = tune_->snapshot();
        SessionData d;
        d.search = settings_;
        d.tune = tune_settings_;
        QSignalSpy saved(session_.get(), &SessionController::saved);
        session_->save(path, d, tune_->tunedCushion(), true);
        QVERIFY(saved.wait(60000));
        QVERIFY(waitIdle());

        auto release = block(workers_->tune());
        tune_->takeState([](const TunerStatePtr&) {}, [](const QString&) {});  // a tuning job queued behind the block
        QSignalSpy opened(session_.get(), &SessionController::opened);
        QSignalSpy errors(session_.get(), &SessionController::error);
        session_->open(path);  // the same model: search and tuning reset, then restored
        QTRY_COMPARE_WITH_TIMEOUT(session_->stage(), 4, 120000);  // waiting for the resumed tuner (queued too)
        emit workers_->tune()->updated(late);  // the late result of the job posted before the reset
        QTest::qWait(50);
        QCOMPARE(opened.count(), 0);  // not taken for the resumed tuner's update
        QVERIFY(session_->restoring());
        *release = true;
        QVERIFY(opened.wait(120000));
        QCOMPARE(errors.count(), 0);
        QVERIFY(waitIdle());
        QVERIFY(tune_->snapshot());
        QCOMPARE(tune_->snapshot()->steps_done, late->steps_done);
        QVERIFY(tune_->snapshot() != late);  // the resumed tuner's own snapshot
    }

    // File > Open on a named pipe with no writer: refused at once with core's rule for inputs, naming what it is
    // (QFile::open waited for a writer for ever). A watchdog opens a writer after 20 s, so that a hang fails the test
    // instead of blocking it.
    void openingANamedPipeIsRefused() {
        QTemporaryDir dir;
        const QString fifo = dir.filePath("pipe.cushionstudio");
        const QByteArray fifo8 = fifo.toLocal8Bit();
        QCOMPARE(::mkfifo(fifo8.constData(), 0600), 0);
        std::atomic<bool> done{false}, released{false};
        std::thread watchdog([&] {
            for (int i = 0; i < 200 && !done; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
            if (done) return;
            released = true;
            ::close(::open(fifo8.constData(), O_RDWR | O_NONBLOCK));
        });
        QSignalSpy errors(session_.get(), &SessionController::error);
        QSignalSpy opened(session_.get(), &SessionController::opened);
        session_->open(fifo);
        done = true;
        watchdog.join();
        QVERIFY2(!released, "opening the named pipe hung until the watchdog opened a writer");
        QCOMPARE(errors.count(), 1);
        const QString e = errors.at(0).at(0).toString();
        QVERIFY2(e.contains(fifo + ": the session file is a named pipe, not a regular file"), qPrintable(e));
        QVERIFY(!session_->restoring());
        QCOMPARE(opened.count(), 0);
    }

    // A probe request carries the prompt, the channel map's layer and the probe site the views give; its
    // result comes back for that request; an empty prompt posts nothing.
    void probeCarriesThePromptLayerAndSite() {
        probe_inputs_ = {"Tom had a big red ball.", 1, 2, nullptr, false};
        QSignalSpy probed(probe_.get(), &ProbeController::probed), failed(probe_.get(), &ProbeController::failed);
        QSignalSpy status(probe_.get(), &ProbeController::status);
        probe_->probe();
        const ProbeRequest req = probe_->lastProbe();
        QCOMPARE(req.text, QString("Tom had a big red ball."));
        QCOMPARE(req.layer, 1);
        QCOMPARE(req.site, 2);
        QVERIFY(req.model == model_->model());
        QVERIFY(probed.wait(60000));
        QCOMPARE(failed.count(), 0);
        const auto d = probed.at(0).at(0).value<HeatmapDataPtr>();
        QCOMPARE(d->request_id, req.id);
        QCOMPARE(d->layers, int(model_->model()->layers));
        QVERIFY(d->token_text.join("").contains("Tom had a big red ball."));
        QVERIFY(d->channelMap(1, 2) != nullptr);  // at least the asked-for (layer, site) is kept
        QCOMPARE(status.at(0).at(0).toString(), QString("Probing…"));

        probe_inputs_.text = "   ";
        probe_->probe();
        QCOMPARE(probe_->lastProbe().id, req.id);  // nothing posted
        QCOMPARE(status.last().at(0).toString(), QString("Type a prompt"));
    }

    // Two probes in a row: only the latest one's result reaches the views (the older is skipped or stale).
    void onlyTheLatestProbeIsShown() {
        probe_inputs_ = {"Once upon a time there was a cat.", 0, 3, nullptr, false};
        QSignalSpy probed(probe_.get(), &ProbeController::probed);
        auto release = block(workers_->probe());
        probe_->probe();
        probe_inputs_.text = "Lily liked the park.";
        probe_->probe();
        *release = true;
        QVERIFY(probed.wait(60000));
        QTest::qWait(300);
        QCOMPARE(probed.count(), 1);
        QCOMPARE(probed.at(0).at(0).value<HeatmapDataPtr>()->request_id, probe_->lastProbe().id);
        QVERIFY(probed.at(0).at(0).value<HeatmapDataPtr>()->token_text.join("").contains("Lily liked the park."));
    }

    // Cancel stops the jobs posted before it and not the one posted right after: a queued probe is cancelled,
    // the comparison posted after the cancel runs and arrives.
    void cancellingAProbeLeavesTheNextJobRunning() {
        QVERIFY(ensureSearch());
        probe_inputs_ = {"Tom had a ball.", 0, 3, search_->snapshot()->cushion, false};
        QSignalSpy probed(probe_.get(), &ProbeController::probed), compared(probe_.get(), &ProbeController::compared);
        QSignalSpy failed(probe_.get(), &ProbeController::failed), cancelled(workers_->probe(), &Worker::cancelled);
        auto release = block(workers_->probe());
        probe_->probe();
        probe_->cancel();
        probe_->compare();
        *release = true;
        QVERIFY(compared.wait(60000));
        QTest::qWait(200);
        QCOMPARE(cancelled.count(), 1);  // the probe
        QCOMPARE(probed.count(), 0);
        QCOMPARE(failed.count(), 0);
        const auto c = compared.at(0).at(0).value<CompareDataPtr>();
        QCOMPARE(c->request_id, probe_->lastCompare().id);
        QCOMPARE(c->prefix_len, int(search_->snapshot()->prefix.size()));
    }

    // The comparison: cleared without a cushion; out of date after a cushion change, recomputed at once when
    // shown, else when the view comes on screen.
    void compareFollowsTheCushionAndTheView() {
        QVERIFY(ensureSearch());
        QSignalSpy compared(probe_.get(), &ProbeController::compared), cleared(probe_.get(), &ProbeController::compareCleared);
        probe_inputs_ = {"Tom had a ball.", 0, 3, nullptr, false};
        probe_->compare();
        QCOMPARE(cleared.count(), 1);
        QVERIFY(!probe_->compareDirty());

        probe_inputs_.cushion = search_->snapshot()->cushion;
        const quint64 before = probe_->lastCompare().id;
        probe_->cushionChanged();  // not shown: only marked
        QVERIFY(probe_->compareDirty());
        QCOMPARE(probe_->lastCompare().id, before);
        probe_->compareShown();
        QVERIFY(!probe_->compareDirty());
        QVERIFY(probe_->lastCompare().id > before);
        QVERIFY(probe_->lastCompare().cushion == search_->snapshot()->cushion);
        QCOMPARE(probe_->lastCompare().text, QString("Tom had a ball."));
        QVERIFY(compared.wait(60000));
        probe_->compareShown();  // up to date: nothing posted
        QCOMPARE(probe_->lastCompare().id, compared.at(0).at(0).value<CompareDataPtr>()->request_id);

        probe_inputs_.compare_shown = true;
        probe_->cushionChanged();  // shown: recomputed now
        QVERIFY(!probe_->compareDirty());
        QVERIFY(compared.wait(60000));
    }

    // The export's rules: no cushion, no directory, a package model are refused without posting anything;
    // a request carries the scheme, the texts and the dialog's choices; cancelling the export leaves the
    // session save queued behind it on the same worker to run.
    void exportRulesAndItsOwnCancel() {
        QVERIFY(ensureSearch());
        QSignalSpy refused(quant_.get(), &QuantController::exportRefused);
        quant_inputs_.cushion = nullptr;
        quant_->exportPackage({"/nonexistent/pkg", 0, false});
        QCOMPARE(refused.count(), 1);
        QVERIFY(refused.at(0).at(0).toString().contains("run the search first"));
        quant_inputs_.cushion = search_->snapshot()->cushion;
        quant_->exportPackage({QString(), 0, false});
        QCOMPARE(refused.count(), 2);
        QVERIFY(refused.at(1).at(0).toString().contains("choose the package directory"));
        QVERIFY(!quant_->exporting());

        QTemporaryDir dir;
        const QString pkg = dir.filePath("pkg"), session = dir.filePath("s.cushionstudio");
        QSignalSpy cancelled(quant_.get(), &QuantController::exportCancelled), exported(quant_.get(), &QuantController::exported);
        QSignalSpy saved(session_.get(), &SessionController::saved);
        auto release = block(workers_->exporter());
        quant_->exportPackage({pkg, 2, false});
        QVERIFY(quant_->exporting());
        const ExportRequest req = quant_->lastExport();
        QCOMPARE(req.dir, pkg);
        QCOMPARE(req.eval_docs, 2);
        QCOMPARE(req.calib_path, quant_inputs_.calib_path);
        QCOMPARE(req.eval_path, quant_inputs_.eval_path);
        QCOMPARE(req.quant.describe(), quant_inputs_.quant.describe());
        QVERIFY(req.cushion == search_->snapshot()->cushion);
        SessionData d;
        d.prompt = "x";
        session_->save(session, d, search_->snapshot()->cushion, false);
        quant_->cancelExport();
        *release = true;
        QVERIFY(saved.wait(60000));
        QTRY_COMPARE_WITH_TIMEOUT(cancelled.count(), 1, 60000);
        QCOMPARE(exported.count(), 0);
        QVERIFY(!QFileInfo::exists(pkg));
        QVERIFY(!quant_->exporting());

        // And the next export runs.
        quant_->exportPackage({pkg, 2, false});
        QTRY_COMPARE_WITH_TIMEOUT(exported.count(), 1, 240000);
        QVERIFY(QFileInfo::exists(pkg + "/quantization.json"));
        QCOMPARE(cancelled.count(), 1);
    }

    // The Quantization panel's Cancel stops the controller's own quantize job: a job posted on the quant worker
    // before it (someone else's) is not cancelled (the worker's requestCancel() would cancel it); one
    // quantization at a time; the next quantization runs to its result.
    void cancellingTheQuantizationStopsItsJobOnly() {
        QSignalSpy started(quant_.get(), &QuantController::quantStarted),
            cancelled(quant_.get(), &QuantController::quantCancelled), quantized(quant_.get(), &QuantController::quantized);
        QuantWorker* w = workers_->quant();
        auto release = std::make_shared<std::atomic<bool>>(false);
        auto other_cancelled = std::make_shared<std::atomic<int>>(-1);
        WorkerThreads::post(w, [w, release, other_cancelled] {
            while (!release->load()) QThread::msleep(2);
            *other_cancelled = w->jobCancelled() ? 1 : 0;
        });
        quant_->quantize();
        QVERIFY(quant_->quantizing());
        QCOMPARE(started.count(), 1);
        quant_->quantize();  // one at a time: nothing posted
        QCOMPARE(started.count(), 1);
        quant_->cancelQuantization();
        *release = true;
        QTRY_COMPARE_WITH_TIMEOUT(cancelled.count(), 1, 60000);
        QTRY_VERIFY_WITH_TIMEOUT(other_cancelled->load() >= 0, 10000);
        QCOMPARE(other_cancelled->load(), 0);
        QCOMPARE(quantized.count(), 0);
        QVERIFY(!quant_->quantizing());
        quant_->cancelQuantization();  // nothing running: no effect on the next one

        quant_->quantize();
        QCOMPARE(started.count(), 2);
        QTRY_COMPARE_WITH_TIMEOUT(quantized.count(), 1, 240000);
        QCOMPARE(cancelled.count(), 1);
        QVERIFY(!quant_->quantizing());
        const QuantResultPtr r = quantized.at(0).at(0).value<QuantResultPtr>();
        QVERIFY(r->q_ppl > 0 && r->fp_ppl > 0);
    }

    void cleanupTestCase() {
        quant_.reset();
        probe_.reset();
        session_.reset();
        tune_.reset();
        search_.reset();
        model_.reset();
        workers_.reset();
    }
};

QTEST_GUILESS_MAIN(TestControllers)
#include "test_controllers.moc"
