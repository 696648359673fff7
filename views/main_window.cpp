#include "main_window.h"

#include <QDockWidget>
#include <QFile>
#include <QFileInfo>
#include <QSettings>
#include <QStatusBar>
#include <QVBoxLayout>

#include <algorithm>

#include "activation_view.h"
#include "base/resources.h"
#include "export_dialog.h"
#include "heatmap_canvas.h"
#include "model_controller.h"
#include "model_panel.h"
#include "probe_controller.h"
#include "prompt_panel.h"
#include "quant_controller.h"
#include "quant_panel.h"
#include "search_controller.h"
#include "search_panel.h"
#include "session_controller.h"
#include "tune_controller.h"
#include "tune_panel.h"

namespace studio {

namespace {
const char* kDefaultPrompt =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her "
    "friends. One day, she saw a big red ball under a tree.";

QString resourcePath(const std::function<std::string()>& fn) {
    try {
        return QString::fromStdString(fn());
    } catch (const std::exception&) {
        return {};
    }
}
}  // namespace

MainWindow::MainWindow(Options opts, QWidget* parent) : QMainWindow(parent), opts_(opts) {
    setObjectName("CushionStudioMainWindow");
    setWindowTitle("CushionCache Studio");
    setAcceptDrops(true);
    workers_ = new WorkerThreads(this);

    auto* centre = new QWidget;
    auto* v = new QVBoxLayout(centre);
    v->setContentsMargins(4, 4, 4, 4);
    v->addWidget(buildBanner());
    centre_ = new ActivationView;
    v->addWidget(centre_, 1);
    setCentralWidget(centre);

    buildDocks();
    buildActions();
    buildStatusBar();

    // The controllers, their workers, and the views they drive. Sessions last: they go on after the views
    // have taken each restored step in.
    model_ctl_ = new ModelController(workers_->model(), this);
    search_ = new SearchController(
        workers_->search(), [this] { return SearchController::Inputs{search_panel_->settings(), quant_panel_->calibPath()}; },
        this);
    tune_ = new TuneController(
        workers_->tune(), search_,
        [this] {
            return TuneController::Inputs{tune_panel_->settings(), quant_panel_->settings(), quant_panel_->calibPath(),
                                          quant_panel_->evalPath()};
        },
        this);
    probe_ = new ProbeController(
        workers_->probe(),
        [this] {
            return ProbeController::Inputs{prompt_panel_->text(), centre_->layer(), site(), currentCushion(),
                                           centre_->compareShown()};
        },
        this);
    quant_ctl_ = new QuantController(
        workers_->quant(), workers_->exporter(),
        [this] {
            return QuantController::Inputs{quant_panel_->settings(), quant_panel_->calibPath(), quant_panel_->evalPath(),
                                           currentCushion()};
        },
        this);
    connectModel();
    connectProbe();
    connectQuantAndExport();
    connectSearch();
    connectTuning();
    session_ = new SessionController(model_ctl_, search_, tune_, workers_->exporter(), this);
    connectSessions();

    model_panel_->setDevices(availableDevices());
    quant_panel_->setTextPaths(resourcePath([] { return cushion::sample_text_path("tinystories-calib.txt"); }),
                               resourcePath([] { return cushion::sample_text_path("tinystories-eval.txt"); }));
    resize(1440, 900);
    restoreSettings();
    updateStatus();

    if (opts_.restore_session) {
        const QString last = QSettings().value("model/last").toString();
        if (!last.isEmpty() && QFileInfo::exists(last))
            openModel(last);
        else
            openDefaultModel();
        if (prompt_panel_->text().isEmpty()) prompt_panel_->setText(kDefaultPrompt);
    }
}

MainWindow::~MainWindow() { workers_->cancelAll(); }

// ------------------------------------------------------------------------------------- workers -> views

void MainWindow::connectModel() {
    connect(model_ctl_, &ModelController::started, this, [this](const QString& w) { setTask(w, 0); });
    connect(model_ctl_, &ModelController::progress, this, [this](double f, const QString& w) {
        model_panel_->setProgress(f, w);
        setTask(tr("Loading: ") + w, f);
    });
    connect(model_ctl_, &ModelController::loading, this, [this](const QString& path, const QString& dev, const QString& dt) {
        QSettings().setValue("dir/model", QFileInfo(path).absolutePath());
        model_panel_->setLoading(path);
        log(tr("Loading %1 on %2 (%3)").arg(path, dev, dt));
    });
    connect(model_ctl_, &ModelController::loaded, this, &MainWindow::onModelLoaded);
    connect(model_ctl_, &ModelController::error, this, &MainWindow::showError);
    connect(model_ctl_, &ModelController::failed, this, [this](const QString& m) {
        model_panel_->setFailed(m);
        setTask({}, -1);
        showError(tr("Could not load the model: %1").arg(m));
        session_->takeModelFailure();
    });
    connect(model_ctl_, &ModelController::cancelled, this, [this] {
        model_panel_->setCancelled();
        setTask({}, -1);
        log(tr("Model load cancelled"));
    });
}

void MainWindow::connectProbe() {
    connect(centre_, &ActivationView::probeNeeded, probe_, &ProbeController::probe);
    connect(centre_, &ActivationView::compareTabShown, probe_, &ProbeController::compareShown);
    connect(probe_, &ProbeController::status, prompt_panel_, &PromptPanel::setStatus);
    connect(probe_, &ProbeController::probed, this, [this](const HeatmapDataPtr& d) {
        prompt_panel_->setStatus(tr("%1 tokens x %2 layers in %3 ms%4")
                                     .arg(d->tokens)
                                     .arg(d->layers)
                                     .arg(d->seconds * 1000, 0, 'f', 0)
                                     .arg(d->truncated ? tr(" (truncated to the context)") : QString()));
        centre_->setData(d);
        emit heatmapUpdated();
    });
    connect(probe_, &ProbeController::failed, this, [this](const QString& m) {
        prompt_panel_->setStatus(tr("Probe failed"));
        showError(tr("Probe failed: %1").arg(m));
    });
    connect(probe_, &ProbeController::compared, this, [this](const CompareDataPtr& d) {
        centre_->setComparison(d, {}, cushionIsTuned());
        emit compareUpdated();
    });
    connect(probe_, &ProbeController::compareCleared, this, [this] {
        centre_->setComparison(nullptr, {}, false);
        refreshCompare();
    });
}

void MainWindow::connectQuantAndExport() {
    connect(quant_ctl_, &QuantController::log, this, &MainWindow::log);
    connect(quant_ctl_, &QuantController::error, this, &MainWindow::showError);
    connect(quant_ctl_, &QuantController::quantStarted, this, [this] {
        quant_panel_->setBusy(true);
        quant_dock_->raise();
    });
    connect(quant_ctl_, &QuantController::quantProgress, this, [this](double f, const QString& w) {
        quant_panel_->setProgress(f, w);
        setTask(w, f);
    });
    connect(quant_ctl_, &QuantController::quantFailed, this, [this](const QString& m) {
        quant_panel_->setFailed(m);
        setTask({}, -1);
        showError(tr("Quantization failed: %1").arg(m));
    });
    connect(quant_ctl_, &QuantController::quantCancelled, this, [this] {
        quant_panel_->setCancelled();
        setTask({}, -1);
        log(tr("Quantization cancelled"));
    });
    connect(quant_ctl_, &QuantController::quantDropped, this, [this] {
        setTask({}, -1);
        quant_panel_->setBusy(false);
    });
    connect(quant_ctl_, &QuantController::quantized, this, [this](const QuantResultPtr& r) {
        setTask({}, -1);
        quant_panel_->setResult(r);
        emit quantizationDone();
    });
    connect(quant_ctl_, &QuantController::exportStarted, this, [this](const QString& dir) {
        QSettings().setValue("export/dir", dir);
        if (export_dialog_) export_dialog_->setBusy(true);
    });
    connect(quant_ctl_, &QuantController::exportRefused, this, [this](const QString& why) {
        if (export_dialog_) export_dialog_->setFailed(why);
    });
    connect(quant_ctl_, &QuantController::exportProgress, this, [this](double f, const QString& w) {
        if (export_dialog_) export_dialog_->setProgress(f, w);
        setTask(w, f);
    });
    connect(quant_ctl_, &QuantController::exportFailed, this, [this](const QString& m) {
        setTask({}, -1);
        if (export_dialog_) export_dialog_->setFailed(m);
        showError(tr("Export failed: %1").arg(m));
    });
    connect(quant_ctl_, &QuantController::otherJobFailed, this, [this](const QString& m) {
        setTask({}, -1);
        if (!session_->takeExportFailure(m)) showError(m);
    });
    connect(quant_ctl_, &QuantController::exportCancelled, this, [this] {
        setTask({}, -1);
        if (export_dialog_) export_dialog_->setCancelled();
    });
    connect(quant_ctl_, &QuantController::exported, this, [this](const ExportResultPtr& r) {
        setTask({}, -1);
        if (export_dialog_) export_dialog_->setResult(r);
        emit exportDone();
    });
}

void MainWindow::connectSearch() {
    connect(search_, &SearchController::progress, this, [this](double f, const QString& w) {
        search_panel_->setProgress(f, w);
        setTask(tr("Search: ") + w, f);
    });
    connect(search_, &SearchController::startRequested, this, [this](bool restoring) {
        if (auto_compare_tab_ && !restoring) {
            // The first search of this window: show what the cushion does to the prompt.
            auto_compare_tab_ = false;
            centre_->showCompare();
        }
        search_dock_->raise();
    });
    connect(search_, &SearchController::updated, this, [this](const SearchSnapshotPtr& snap, bool prefix_changed) {
        if (prefix_changed) tune_->invalidate(tr("the search's prefix changed"));
        search_panel_->setSnapshot(snap);
        tune_panel_->setAvailable(snap->cushion != nullptr, snap->prefixText());
        if (prefix_changed) cushionChanged();
        emit searchUpdated();
    });
    connect(search_, &SearchController::cleared, this, [this] {
        search_panel_->setSnapshot(nullptr);
        tune_panel_->setAvailable(false, {});
        centre_->setComparison(nullptr, {}, false);
        refreshCompare();
    });
    connect(search_, &SearchController::log, this, &MainWindow::log);
    connect(search_, &SearchController::busyChanged, search_panel_, &SearchPanel::setBusy);
    connect(search_, &SearchController::note, search_panel_, &SearchPanel::setNote);
    connect(search_, &SearchController::error, this, &MainWindow::showError);
    connect(search_, &SearchController::failed, this, [this](const QString& m) {
        search_panel_->setFailed(m);
        setTask({}, -1);
        if (!session_->takeSearchFailure(m)) showError(tr("Search: %1").arg(m));
    });
    connect(search_, &SearchController::cancelled, this, [this] {
        search_panel_->setCancelled();
        setTask({}, -1);
    });
    connect(search_, &SearchController::jobEnded, this, [this] {
        if (!search_->running()) setTask({}, -1);
        emit searchJobEnded();
    });
}

void MainWindow::connectTuning() {
    connect(tune_, &TuneController::progress, this, [this](double f, const QString& w) {
        tune_panel_->setProgress(f, w);
        setTask(tr("Tuning: ") + w, f);
    });
    connect(tune_, &TuneController::cleared, this, [this](const QString& note) {
        tune_panel_->setSnapshot(nullptr);
        tune_panel_->clearPerplexity();
        if (!note.isEmpty()) tune_panel_->setNote(note);
    });
    connect(tune_, &TuneController::startRequested, tune_dock_, &QDockWidget::raise);
    connect(tune_, &TuneController::log, this, &MainWindow::log);
    connect(tune_, &TuneController::cushionChanged, this, &MainWindow::cushionChanged);
    connect(tune_, &TuneController::updated, this, [this](const TuneSnapshotPtr& snap) {
        tune_panel_->setSnapshot(snap);
        emit tuningUpdated();
    });
    connect(tune_, &TuneController::measured, this, [this](const PplResultPtr& r) {
        tune_panel_->setPerplexity(r);
        emit perplexityMeasured();
    });
    connect(tune_, &TuneController::busyChanged, tune_panel_, &TunePanel::setBusy);
    connect(tune_, &TuneController::note, tune_panel_, &TunePanel::setNote);
    connect(tune_, &TuneController::error, this, &MainWindow::showError);
    connect(tune_, &TuneController::failed, this, [this](const QString& m, bool handled) {
        tune_panel_->setFailed(m);
        setTask({}, -1);
        if (!handled && !session_->takeTuneFailure(m)) showError(tr("Tuning: %1").arg(m));
    });
    connect(tune_, &TuneController::cancelled, this, [this] {
        tune_panel_->setCancelled();
        setTask({}, -1);
    });
    connect(tune_, &TuneController::jobEnded, this, [this] {
        if (!tune_->running()) setTask({}, -1);
        emit tuneJobEnded();
    });
}

void MainWindow::connectSessions() {
    connect(session_, &SessionController::log, this, &MainWindow::log);
    connect(session_, &SessionController::error, this, &MainWindow::showError);
    connect(session_, &SessionController::settingsRead, this, [this](const SessionData& d) {
        QSettings().setValue("dir/session", QFileInfo(session_->path()).absolutePath());
        model_panel_->setDevice(d.device);
        model_panel_->setDtype(d.dtype);
        quant_panel_->setSettings(d.quant);
        quant_panel_->setTextPaths(d.calib_path, d.eval_path);
        search_panel_->setSettings(d.search);
        tune_panel_->setSettings(d.tune);
        setSite(d.site);
        if (prompt_panel_->text() != d.prompt) prompt_panel_->setText(d.prompt);
    });
    connect(session_, &SessionController::tunedRestored, this,
            [this](const CushionPtr& c, const std::vector<TunePoint>& points) { tune_panel_->setRestored(points, cushionText(c)); });
    connect(session_, &SessionController::saved, this, [this](const QString& path) {
        setTask({}, -1);
        QSettings().setValue("dir/session", QFileInfo(path).absolutePath());
        log(tr("Session saved to %1").arg(path));
        statusBar()->showMessage(tr("Session saved"), 4000);
        emit sessionSaved(path);
    });
    connect(session_, &SessionController::opened, this, [this] {
        cushionChanged();
        emit sessionOpened();
    });
}
// --------------------------------------------------------------------------------------------- actions

void MainWindow::openModel(const QString& path) { model_ctl_->open(path, model_panel_->device(), model_panel_->dtype()); }

void MainWindow::openDefaultModel() {
    const QString p = resourcePath(cushion::default_model_path);
    if (p.isEmpty()) {
        showError(tr("The embedded default model was not found (set CUSHION_RESOURCES)"));
        return;
    }
    openModel(p);
}

void MainWindow::loadTextFile(const QString& path) {
    QFile f(path);
    if (!f.open(QIODevice::ReadOnly | QIODevice::Text)) {
        showError(tr("Cannot read %1: %2").arg(path, f.errorString()));
        return;
    }
    QSettings().setValue("dir/text", QFileInfo(path).absolutePath());
    const QString text = QString::fromUtf8(f.readAll());
    prompt_panel_->setText(text);
    log(tr("Loaded text %1 (%2 characters)").arg(path).arg(text.size()));
}

void MainWindow::onModelLoaded(const ModelInfoPtr& info) {
    centre_->setModel(info);
    // A search, a tuning and a cushion belong to the model they were made for.
    search_->setModel(info);
    tune_->setModel(info);
    probe_->setModel(info);
    quant_ctl_->setModel(info);
    search_panel_->setModelAvailable(true);
    banner_box_->hide();  // an earlier error is in the log; the window now shows the new model
    model_panel_->setModel(info);
    quant_panel_->setModelAvailable(true);
    quant_panel_->setPackage(info->package);
    addRecent(info->path);
    QSettings().setValue("model/last", info->path);
    setTask({}, -1);
    log(tr("Loaded %1: %2, %3 parameters, %4 in %5 s")
            .arg(info->path, info->describe)
            .arg(info->params)
            .arg(formatBytes(info->weight_bytes))
            .arg(info->load_seconds, 0, 'f', 2));
    for (const QString& w : info->warnings) log(tr("warning: %1").arg(w));
    if (const auto& p = info->package) {
        log(tr("Package %1: %2, cushion %3 (exported by cushion %4)").arg(p->dir, p->describe, p->cushion_text, p->tool_version));
        quant_dock_->raise();
        cushionChanged();  // the package's cushion is the current one
    }
    updateStatus();
    emit modelLoaded();
    requestProbe();
    session_->modelLoaded();
}

void MainWindow::requestProbe() { probe_->probe(); }

void MainWindow::runQuantization() { quant_ctl_->quantize(); }

void MainWindow::cancelAll() {
    model_ctl_->cancel();
    search_->cancel();
    tune_->cancel();
    workers_->cancelAll();
    setTask(tr("Cancelling…"), -1);
}

void MainWindow::useSelected() {
    if (!search_->idle() || !search_->snapshot()) return;
    const int mode = search_panel_->useSelectedMode();
    const int token = search_panel_->selectedToken();
    if (mode < 0 || token < 0) {
        search_panel_->setNote(tr("Select a candidate of the current scores first"));
        return;
    }
    search_->useToken(token, mode == 1);
}

CushionPtr MainWindow::currentCushion() const {
    if (CushionPtr t = tune_->tunedCushion()) return t;
    const SearchSnapshotPtr s = search_->snapshot();
    if (s && s->cushion) return s->cushion;
    return model() && model()->package ? model()->package->cushion : nullptr;  // an opened package's own
}

bool MainWindow::cushionIsTuned() const { return tune_->tunedCushion() != nullptr; }

// ------------------------------------------------------------------------------ before / after cushion

void MainWindow::requestCompare() { probe_->compare(); }

void MainWindow::cushionChanged() { probe_->cushionChanged(); }

void MainWindow::refreshCompare() {
    const QString empty = !model() ? tr("Open a model")
                          : !currentCushion() ? tr("Run the search: the prompt after its cushion shows here")
                                              : tr("Probing…");
    centre_->setComparison(centre_->comparison(), empty, cushionIsTuned());
}
// ------------------------------------------------------------------------------------------- export

void MainWindow::exportPackage() {
    if (!export_dialog_) return;
    quant_ctl_->exportPackage({export_dialog_->directory(), export_dialog_->evalDocs(), export_dialog_->overwrite()});
}

// ----------------------------------------------------------------------------------------- sessions

void MainWindow::saveSession(const QString& path) {
    SessionData d;  // the views' part; the session controller adds the search's, the tuning's and the files
    d.prompt = prompt_panel_->text();
    d.calib_path = quant_panel_->calibPath();
    d.eval_path = quant_panel_->evalPath();
    d.quant = quant_panel_->settings();
    d.search = search_panel_->settings();
    d.tune = tune_panel_->settings();
    d.site = site();
    session_->save(path, d, currentCushion(), cushionIsTuned());
}

void MainWindow::openSession(const QString& path) { session_->open(path); }

}  // namespace studio
