#include "main_window.h"

#include <QAction>
#include <QApplication>
#include <QCloseEvent>
#include <QShowEvent>
#include <QComboBox>
#include <QDateTime>
#include <QDir>
#include <QDockWidget>
#include <QDoubleSpinBox>
#include <QDragEnterEvent>
#include <QDropEvent>
#include <QFile>
#include <QFileDialog>
#include <QFileInfo>
#include <QHBoxLayout>
#include <QKeySequence>
#include <QLabel>
#include <QMenuBar>
#include <QMessageBox>
#include <QMimeData>
#include <QPlainTextEdit>
#include <QProgressBar>
#include <QPushButton>
#include <QSettings>
#include <QSpinBox>
#include <QSplitter>
#include <QStandardPaths>
#include <QStatusBar>
#include <QTabWidget>
#include <QTextStream>
#include <QTimer>
#include <QToolButton>
#include <QVBoxLayout>

#include <algorithm>
#include <cmath>

#include "export_dialog.h"
#include "heatmap_canvas.h"
#include "model_panel.h"
#include "progress_bar.h"
#include "prompt_panel.h"
#include "quant_panel.h"
#include "base/resources.h"
#include "search_panel.h"
#include "tune_panel.h"

namespace studio {

namespace {
constexpr int kMaxRecent = 10;
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

    // Centre: controls, the layers x tokens map (with the token strip), the channels x tokens map.
    auto* centre = new QWidget;
    auto* v = new QVBoxLayout(centre);
    v->setContentsMargins(4, 4, 4, 4);
    banner_box_ = new QWidget;
    banner_box_->setObjectName("errorBanner");
    banner_box_->setStyleSheet("#errorBanner { background: #5c1f1f; border-radius: 3px; } QLabel { color: #ffdede; }");
    auto* bh = new QHBoxLayout(banner_box_);
    bh->setContentsMargins(8, 4, 4, 4);
    banner_ = new QLabel;
    banner_->setTextFormat(Qt::PlainText);
    banner_->setWordWrap(true);
    banner_->setTextInteractionFlags(Qt::TextSelectableByMouse);
    banner_close_ = new QToolButton;
    banner_close_->setText("✕");
    bh->addWidget(banner_, 1);
    bh->addWidget(banner_close_);
    banner_box_->hide();
    connect(banner_close_, &QToolButton::clicked, banner_box_, &QWidget::hide);
    v->addWidget(banner_box_);

    auto* controls = new QHBoxLayout;
    site_combo_ = new QComboBox;
    site_combo_->setObjectName("siteCombo");
    for (int s = 0; s < kSites; ++s) site_combo_->addItem(siteLabel(s) + "  (" + siteName(s) + ")", s);
    layer_spin_ = new QSpinBox;
    layer_spin_->setObjectName("layerSpin");
    layer_spin_->setRange(0, 0);
    threshold_ = new QDoubleSpinBox;
    threshold_->setObjectName("thresholdSpin");
    threshold_->setRange(1, 100000);
    threshold_->setDecimals(1);
    threshold_->setValue(64);  // PrefixQuant's outlier-token threshold
    threshold_->setToolTip(tr("A token is an outlier when max |x| / median |x| over its channels exceeds this "
                              "at the chosen site in any layer"));
    auto* reset = new QPushButton(tr("Reset zoom"));
    controls->addWidget(new QLabel(tr("Probe site")));
    controls->addWidget(site_combo_);
    controls->addSpacing(12);
    controls->addWidget(new QLabel(tr("Channel map layer")));
    controls->addWidget(layer_spin_);
    controls->addSpacing(12);
    controls->addWidget(new QLabel(tr("Outlier ratio ≥")));
    controls->addWidget(threshold_);
    controls->addStretch(1);
    controls->addWidget(reset);
    v->addLayout(controls);

    layer_canvas_ = new HeatmapCanvas;
    layer_canvas_->setObjectName("layerTokenCanvas");
    layer_canvas_->setAxisNames(tr("layer"), tr("token"));
    layer_canvas_->setShowTokenStrip(true);
    layer_canvas_->clearData(tr("Open a model and type a prompt"));
    channel_canvas_ = new HeatmapCanvas;
    channel_canvas_->setObjectName("channelTokenCanvas");
    channel_canvas_->setAxisNames(tr("channel"), tr("token"));
    channel_canvas_->clearData(tr("Channels x tokens of the selected layer"));
    auto* split = new QSplitter(Qt::Vertical);
    split->addWidget(layer_canvas_);
    split->addWidget(channel_canvas_);
    split->setStretchFactor(0, 2);
    split->setStretchFactor(1, 3);
    centre_tabs_ = new QTabWidget;
    centre_tabs_->setObjectName("centreTabs");
    centre_tabs_->setDocumentMode(true);
    centre_tabs_->addTab(split, tr("Activations"));
    centre_tabs_->addTab(buildCompareView(), tr("Before / after cushion"));
    v->addWidget(centre_tabs_, 1);
    selection_ = new QLabel(tr("Hover a cell for its token, layer, channel and value; click to select."));
    selection_->setObjectName("selectionLabel");
    selection_->setTextFormat(Qt::PlainText);  // token pieces such as <s> are not markup
    selection_->setTextInteractionFlags(Qt::TextSelectableByMouse);
    v->addWidget(selection_);
    setCentralWidget(centre);

    // Tooltips and selection.
    layer_canvas_->setTooltipProvider([this](int l, int t, float val) {
        if (!data_) return QString();
        const float ratio = data_->token_ratio[site()][size_t(l) * data_->tokens + t];
        return tr("%1\nposition %2, layer %3, %4\nmax |x| = %5   max/median = %6")
            .arg(tokenLabel(t))
            .arg(t)
            .arg(l)
            .arg(siteLabel(site()))
            .arg(val, 0, 'g', 4)
            .arg(ratio, 0, 'f', 1);
    });
    channel_canvas_->setTooltipProvider([this](int c, int t, float val) {
        if (!data_) return QString();
        return tr("%1\nposition %2, layer %3, %4\nchannel %5   |x| = %6")
            .arg(tokenLabel(t))
            .arg(t)
            .arg(layer_)
            .arg(siteLabel(site()))
            .arg(c)
            .arg(val, 0, 'g', 4);
    });
    connect(layer_canvas_, &HeatmapCanvas::cellHovered, this, [this](int l, int t) {
        if (data_) selection_->setText(layer_canvas_->tooltipText(l, t).replace('\n', "   "));
    });
    connect(channel_canvas_, &HeatmapCanvas::cellHovered, this, [this](int c, int t) {
        if (data_) selection_->setText(channel_canvas_->tooltipText(c, t).replace('\n', "   "));
    });
    connect(layer_canvas_, &HeatmapCanvas::cellClicked, this, [this](int l, int t) {
        selected_token_ = t;
        selectLayer(l);
        selection_->setText(tr("Selected: ") + layer_canvas_->tooltipText(l, t).replace('\n', "   "));
    });
    connect(channel_canvas_, &HeatmapCanvas::cellClicked, this, [this](int c, int t) {
        selected_token_ = t;
        layer_canvas_->setSelection(layer_, t);
        selection_->setText(tr("Selected: ") + channel_canvas_->tooltipText(c, t).replace('\n', "   "));
    });
    // Both maps share the token axis: zoom and pan together.
    connect(layer_canvas_, &HeatmapCanvas::xViewChanged, channel_canvas_, &HeatmapCanvas::setXView);
    connect(channel_canvas_, &HeatmapCanvas::xViewChanged, layer_canvas_, &HeatmapCanvas::setXView);
    connect(reset, &QPushButton::clicked, this, [this] {
        layer_canvas_->resetView();
        channel_canvas_->resetView();
    });
    connect(site_combo_, &QComboBox::currentIndexChanged, this, [this] {
        refreshMaps();
        refreshCompare();
    });
    connect(layer_spin_, &QSpinBox::valueChanged, this, [this](int l) { selectLayer(l); });
    connect(threshold_, &QDoubleSpinBox::valueChanged, this, [this] {
        refreshMaps();
        refreshCompare();
    });
    connect(centre_tabs_, &QTabWidget::currentChanged, this, [this](int i) {
        if (i == 1 && compare_dirty_) requestCompare();
    });

    buildDocks();
    buildActions();

    // Status bar: current task with progress, device, memory.
    status_task_ = new QLabel(tr("Ready"));
    status_progress_ = new QProgressBar;
    status_progress_->setRange(0, 1000);
    status_progress_->setMaximumWidth(160);
    status_progress_->setMaximumHeight(14);
    status_progress_->setTextVisible(false);
    status_progress_->hide();
    status_device_ = new QLabel;
    status_device_->setObjectName("statusDevice");
    status_memory_ = new QLabel;
    status_memory_->setObjectName("statusMemory");
    statusBar()->addWidget(status_task_, 1);
    statusBar()->addPermanentWidget(status_progress_);
    statusBar()->addPermanentWidget(status_device_);
    statusBar()->addPermanentWidget(status_memory_);
    auto* mem_timer = new QTimer(this);
    connect(mem_timer, &QTimer::timeout, this, &MainWindow::updateStatus);
    mem_timer->start(1000);

    // Workers -> GUI.
    ModelWorker* mw = workers_->model();
    connect(mw, &Worker::started, this, [this](const QString& w) { setTask(w, 0); });
    connect(mw, &Worker::progress, this, [this](double f, const QString& w) {
        model_panel_->setProgress(f, w);
        setTask(tr("Loading: ") + w, f);
    });
    connect(mw, &ModelWorker::loaded, this, &MainWindow::onModelLoaded);
    connect(mw, &Worker::failed, this, [this](const QString& m) {
        model_panel_->setFailed(m);
        setTask({}, -1);
        showError(tr("Could not load the model: %1").arg(m));
        if (pending_session_ && session_stage_ == 1) finishSessionRestore(tr("the model could not be loaded"));
    });
    connect(mw, &Worker::cancelled, this, [this] {
        model_panel_->setCancelled();
        setTask({}, -1);
        log(tr("Model load cancelled"));
    });
    connect(mw, &Worker::finished, this, [this] {
        if (!pending_model_.isEmpty()) {
            const QString p = pending_model_;
            pending_model_.clear();
            openModel(p);
        }
    });

    ProbeWorker* pw = workers_->probe();
    connect(pw, &ProbeWorker::probed, this, &MainWindow::onProbed);
    connect(pw, &Worker::failed, this, [this](const QString& m) {
        prompt_panel_->setStatus(tr("Probe failed"));
        showError(tr("Probe failed: %1").arg(m));
    });

    QuantWorker* qw = workers_->quant();
    connect(qw, &Worker::progress, this, [this](double f, const QString& w) {
        quant_panel_->setProgress(f, w);
        setTask(w, f);
    });
    connect(qw, &QuantWorker::quantized, this, [this](const QuantResultPtr& r) {
        setTask({}, -1);
        if (!model_ || r->model_key != model_->model.get()) {
            quant_panel_->setBusy(false);
            return;
        }
        quant_panel_->setResult(r);
        log(tr("Quantization %1: perplexity %2 -> %3 (%4 s)")
                .arg(r->describe)
                .arg(r->fp_ppl, 0, 'f', 3)
                .arg(r->q_ppl, 0, 'f', 3)
                .arg(r->seconds, 0, 'f', 2));
        emit quantizationDone();
    });
    connect(qw, &Worker::failed, this, [this](const QString& m) {
        quant_panel_->setFailed(m);
        setTask({}, -1);
        showError(tr("Quantization failed: %1").arg(m));
    });
    connect(qw, &Worker::cancelled, this, [this] {
        quant_panel_->setCancelled();
        setTask({}, -1);
        log(tr("Quantization cancelled"));
    });

    // Search worker -> GUI.
    SearchWorker* sw = workers_->search();
    connect(sw, &Worker::progress, this, [this](double f, const QString& w) {
        search_panel_->setProgress(f, w);
        setTask(tr("Search: ") + w, f);
    });
    connect(sw, &SearchWorker::updated, this, &MainWindow::onSearchUpdated);
    connect(sw, &Worker::failed, this, [this](const QString& m) {
        search_running_ = false;
        search_starting_ = false;
        pending_search_action_ = 0;
        search_panel_->setFailed(m);
        setTask({}, -1);
        if (pending_session_ && session_stage_ == 2)
            finishSessionRestore(tr("the search could not be restored: %1").arg(m));
        else
            showError(tr("Search: %1").arg(m));
    });
    connect(sw, &Worker::cancelled, this, [this] {
        search_running_ = false;
        search_starting_ = false;
        pending_search_action_ = 0;
        search_panel_->setCancelled();
        setTask({}, -1);
        log(tr("Search step cancelled; the search is as before it"));
    });
    connect(sw, &Worker::finished, this, [this] {
        search_jobs_ = std::max(0, search_jobs_ - 1);
        updateSearchBusy();
        if (!search_running_) setTask({}, -1);
        emit searchJobEnded();
    });

    // Tuning worker -> GUI.
    TuneWorker* tw = workers_->tune();
    connect(tw, &Worker::progress, this, [this](double f, const QString& w) {
        tune_panel_->setProgress(f, w);
        setTask(tr("Tuning: ") + w, f);
    });
    connect(tw, &TuneWorker::updated, this, &MainWindow::onTuneUpdated);
    connect(tw, &TuneWorker::measured, this, [this](const PplResultPtr& r) {
        if (!model_ || r->model_key != model_->model.get()) return;
        tune_panel_->setPerplexity(r);
        static const char* names[] = {"no cushion", "search cushion", "tuned cushion"};
        log(tr("Perplexity with %1: FP %2, %3 %4 (%5 s)")
                .arg(names[static_cast<int>(r->which)])
                .arg(r->fp, 0, 'f', 4)
                .arg(r->scheme)
                .arg(r->quant, 0, 'f', 4)
                .arg(r->seconds, 0, 'f', 2));
        emit perplexityMeasured();
    });
    connect(tw, &TuneWorker::stateSaved, this, [this] {
        if (!after_tuner_saved_) return;
        const auto save = std::move(after_tuner_saved_);
        after_tuner_saved_ = nullptr;
        save();
    });
    connect(tw, &Worker::failed, this, [this](const QString& m) {
        tune_running_ = false;
        tune_panel_->setFailed(m);
        setTask({}, -1);
        if (after_tuner_saved_) {
            after_tuner_saved_ = nullptr;
            showError(tr("The session was not saved: the tuner state could not be written: %1").arg(m));
        } else if (pending_session_ && session_stage_ == 4) {
            finishSessionRestore(tr("tuning cannot resume: %1").arg(m));
        } else {
            showError(tr("Tuning: %1").arg(m));
        }
    });
    connect(tw, &Worker::cancelled, this, [this] {
        tune_running_ = false;
        tune_panel_->setCancelled();
        setTask({}, -1);
        log(tr("Tuning cancelled; the interrupted batch was not applied"));
    });
    connect(tw, &Worker::finished, this, [this] {
        tune_jobs_ = std::max(0, tune_jobs_ - 1);
        updateTuneBusy();
        if (!tune_running_) setTask({}, -1);
        emit tuneJobEnded();
    });

    // Export worker -> GUI (the dialog, sessions).
    ExportWorker* ew = workers_->exporter();
    connect(ew, &Worker::progress, this, [this](double f, const QString& w) {
        if (export_dialog_ && export_dialog_->isBusy()) export_dialog_->setProgress(f, w);
        setTask(w, f);
    });
    connect(ew, &ExportWorker::exported, this, [this](const ExportResultPtr& r) {
        setTask({}, -1);
        if (export_dialog_) export_dialog_->setResult(r);
        log(tr("Exported %1 (%2, %3): quantized perplexity with the cushion %4")
                .arg(r->dir, r->describe, formatBytes(r->bytes))
                .arg(r->ppl_quant_cushion, 0, 'f', 4));
        emit exportDone();
    });
    connect(ew, &ExportWorker::sessionSaved, this, [this](const QString& path) {
        setTask({}, -1);
        session_path_ = path;
        QSettings().setValue("dir/session", QFileInfo(path).absolutePath());
        log(tr("Session saved to %1").arg(path));
        statusBar()->showMessage(tr("Session saved"), 4000);
        emit sessionSaved(path);
    });
    connect(ew, &ExportWorker::cushionLoaded, this, [this](const CushionPtr& c, const QString& path) {
        if (!pending_session_ || session_stage_ != 3) return;
        if (!search_snap_ || pending_session_->cushion_prefix != search_snap_->prefix) {
            finishSessionRestore(tr("the cushion file %1 is for another prefix").arg(path));
            return;
        }
        tuned_cushion_ = c;
        restored_points_ = pending_session_->tune_points;
        tune_panel_->setRestored(restored_points_, cushionText(c));
        log(tr("Tuned cushion restored from %1").arg(path));
        restoreSessionTuner();
    });
    connect(ew, &Worker::failed, this, [this](const QString& m) {
        setTask({}, -1);
        if (export_dialog_ && export_dialog_->isBusy()) {
            export_dialog_->setFailed(m);
            showError(tr("Export failed: %1").arg(m));
        } else if (pending_session_ && session_stage_ == 3) {
            finishSessionRestore(tr("the cushion could not be loaded: %1").arg(m));
        } else {
            showError(m);
        }
    });
    connect(ew, &Worker::cancelled, this, [this] {
        setTask({}, -1);
        if (export_dialog_) export_dialog_->setCancelled();
        log(tr("Export cancelled; nothing was written"));
    });

    ProbeWorker* cw = workers_->probe();
    connect(cw, &ProbeWorker::compared, this, [this](const CompareDataPtr& d) {
        if (d->request_id != compare_id_ || !model_ || d->model_key != model_->model.get()) return;
        compare_ = d;
        refreshCompare();
        emit compareUpdated();
    });

    model_panel_->setDevices(availableDevices());
    quant_panel_->setTextPaths(resourcePath([] { return cushion::sample_text_path("tinystories-calib.txt"); }),
                               resourcePath([] { return cushion::sample_text_path("tinystories-eval.txt"); }));
    resize(1440, 900);
    restoreSettings();
    updateStatus();

    if (opts_.restore_session) {
        QSettings s;
        const QString last = s.value("model/last").toString();
        if (!last.isEmpty() && QFileInfo::exists(last))
            openModel(last);
        else
            openDefaultModel();
        if (prompt_panel_->text().isEmpty()) prompt_panel_->setText(kDefaultPrompt);
    }
}

MainWindow::~MainWindow() {
    workers_->cancelAll();
}

void MainWindow::buildDocks() {
    setDockNestingEnabled(true);
    auto dock = [this](const QString& title, const QString& name, QWidget* w, Qt::DockWidgetArea area) {
        auto* d = new QDockWidget(title, this);
        d->setObjectName(name);
        d->setWidget(w);
        addDockWidget(area, d);
        return d;
    };
    model_panel_ = new ModelPanel;
    prompt_panel_ = new PromptPanel;
    quant_panel_ = new QuantPanel;
    search_panel_ = new SearchPanel;
    log_ = new QPlainTextEdit;
    log_->setObjectName("logView");
    log_->setReadOnly(true);
    log_->setMaximumBlockCount(2000);
    tune_panel_ = new TunePanel;
    model_dock_ = dock(tr("Model"), "modelDock", model_panel_, Qt::LeftDockWidgetArea);
    prompt_dock_ = dock(tr("Prompt"), "promptDock", prompt_panel_, Qt::LeftDockWidgetArea);
    quant_dock_ = dock(tr("Quantization"), "quantDock", quant_panel_, Qt::RightDockWidgetArea);
    search_dock_ = dock(tr("Search"), "searchDock", search_panel_, Qt::RightDockWidgetArea);
    tune_dock_ = dock(tr("Tuning"), "tuneDock", tune_panel_, Qt::RightDockWidgetArea);
    log_dock_ = dock(tr("Log"), "logDock", log_, Qt::BottomDockWidgetArea);
    splitDockWidget(model_dock_, prompt_dock_, Qt::Vertical);
    tabifyDockWidget(quant_dock_, search_dock_);
    tabifyDockWidget(search_dock_, tune_dock_);
    quant_dock_->raise();
    resizeDocks({model_dock_, quant_dock_}, {300, 470}, Qt::Horizontal);
    resizeDocks({log_dock_}, {110}, Qt::Vertical);

    connect(model_panel_, &ModelPanel::openFileRequested, this, [this] {
        const QString f = QFileDialog::getOpenFileName(this, tr("Open model"), QSettings().value("dir/model").toString(),
                                                       tr("Models and packages (*.bin *.gguf quantization.json);;All files (*)"));
        if (!f.isEmpty()) openModel(f);
    });
    connect(model_panel_, &ModelPanel::openDirectoryRequested, this, [this] {
        const QString d = QFileDialog::getExistingDirectory(this, tr("Open a Hugging Face model or an exported package"),
                                                            QSettings().value("dir/model").toString());
        if (!d.isEmpty()) openModel(d);
    });
    connect(model_panel_, &ModelPanel::defaultRequested, this, &MainWindow::openDefaultModel);
    connect(model_panel_, &ModelPanel::reloadRequested, this, [this] {
        if (model_) openModel(model_->path);
    });
    connect(model_panel_, &ModelPanel::cancelRequested, this, [this] {
        pending_model_.clear();
        workers_->model()->requestCancel();
    });
    connect(prompt_panel_, &PromptPanel::promptChanged, this, [this] { requestProbe(); });
    connect(prompt_panel_, &PromptPanel::loadTextRequested, this, [this] {
        const QString f = QFileDialog::getOpenFileName(this, tr("Load text"), QSettings().value("dir/text").toString(),
                                                       tr("Text (*.txt *.md);;All files (*)"));
        if (!f.isEmpty()) loadTextFile(f);
    });
    connect(quant_panel_, &QuantPanel::runRequested, this, &MainWindow::runQuantization);
    connect(quant_panel_, &QuantPanel::cancelRequested, this, [this] { workers_->quant()->requestCancel(); });

    connect(search_panel_, &SearchPanel::newRequested, this, &MainWindow::newSearch);
    connect(search_panel_, &SearchPanel::stepRequested, this, &MainWindow::searchStep);
    connect(search_panel_, &SearchPanel::scoreRequested, this, &MainWindow::searchScore);
    connect(search_panel_, &SearchPanel::runRequested, this, &MainWindow::searchRun);
    connect(search_panel_, &SearchPanel::pauseRequested, this, &MainWindow::searchPause);
    connect(search_panel_, &SearchPanel::cancelRequested, this, &MainWindow::searchCancel);
    connect(search_panel_, &SearchPanel::acceptRequested, this, &MainWindow::acceptBest);
    connect(search_panel_, &SearchPanel::useRequested, this, [this](int, bool) { useSelected(); });
    connect(search_panel_, &SearchPanel::undoRequested, this, &MainWindow::undoSearchStep);
    connect(tune_panel_, &TunePanel::startRequested, this, &MainWindow::startTuning);
    connect(tune_panel_, &TunePanel::pauseRequested, this, &MainWindow::pauseTuning);
    connect(tune_panel_, &TunePanel::resumeRequested, this, &MainWindow::resumeTuning);
    connect(tune_panel_, &TunePanel::stepRequested, this, &MainWindow::tuneStep);
    connect(tune_panel_, &TunePanel::cancelRequested, this, &MainWindow::cancelTuning);
    connect(tune_panel_, &TunePanel::measureRequested, this, &MainWindow::measurePerplexity);
    connect(tune_panel_, &TunePanel::exportRequested, this, &MainWindow::showExportDialog);
}

void MainWindow::buildActions() {
    QMenu* file = menuBar()->addMenu(tr("&File"));
    auto act = [this](QMenu* m, const QString& text, const QKeySequence& key, auto fn) {
        QAction* a = m->addAction(text);
        if (!key.isEmpty()) a->setShortcut(key);
        a->setShortcutContext(Qt::ApplicationShortcut);
        connect(a, &QAction::triggered, this, fn);
        return a;
    };
    act(file, tr("&Open model file…"), QKeySequence::Open, [this] { emit model_panel_->openFileRequested(); });
    act(file, tr("Open model or package &folder…"), QKeySequence(tr("Ctrl+Shift+O")),
        [this] { emit model_panel_->openDirectoryRequested(); });
    act(file, tr("Open &default model"), QKeySequence(tr("Ctrl+Shift+D")), [this] { openDefaultModel(); });
    recent_menu_ = file->addMenu(tr("Open &recent"));
    recent_menu_->setObjectName("recentMenu");
    file->addSeparator();
    act(file, tr("Load &text…"), QKeySequence(tr("Ctrl+T")), [this] { emit prompt_panel_->loadTextRequested(); });
    file->addSeparator();
    act(file, tr("Open &session…"), QKeySequence(tr("Ctrl+Alt+O")), [this] {
        const QString f = QFileDialog::getOpenFileName(this, tr("Open session"), QSettings().value("dir/session").toString(),
                                                       tr("Studio sessions (*.cushionstudio);;All files (*)"));
        if (!f.isEmpty()) openSession(f);
    });
    auto save_as = [this] {
        QString f = QFileDialog::getSaveFileName(this, tr("Save session"), QSettings().value("dir/session").toString(),
                                                 tr("Studio sessions (*.cushionstudio)"));
        if (f.isEmpty()) return;
        if (QFileInfo(f).suffix().isEmpty()) f += ".cushionstudio";
        saveSession(f);
    };
    act(file, tr("&Save session"), QKeySequence::Save, [this, save_as] {
        if (session_path_.isEmpty())
            save_as();
        else
            saveSession(session_path_);
    });
    act(file, tr("Save session &as…"), QKeySequence(tr("Ctrl+Shift+S")), save_as);
    act(file, tr("&Export package…"), QKeySequence(tr("Ctrl+E")), [this] { showExportDialog(); });
    file->addSeparator();
    act(file, tr("&Quit"), QKeySequence::Quit, [this] { close(); });

    QMenu* run = menuBar()->addMenu(tr("&Run"));
    act(run, tr("&Probe now"), QKeySequence(Qt::Key_F5), [this] { requestProbe(); });
    act(run, tr("&Quantize and evaluate"), QKeySequence(tr("Ctrl+R")), [this] { runQuantization(); });
    run->addSeparator();
    act(run, tr("Search: &step"), QKeySequence(Qt::Key_F6), [this] { searchStep(); });
    act(run, tr("Search: r&un"), QKeySequence(Qt::Key_F7), [this] { searchRun(); });
    act(run, tr("Search: pa&use"), QKeySequence(tr("Shift+F7")), [this] { searchPause(); });
    act(run, tr("Search: &undo the last step"), QKeySequence(tr("Shift+F6")), [this] { undoSearchStep(); });
    act(run, tr("&Tune the cushion"), QKeySequence(Qt::Key_F8), [this] { startTuning(); });
    run->addSeparator();
    act(run, tr("&Cancel running work"), QKeySequence(tr("Ctrl+.")), [this] { cancelAll(); });

    view_menu_ = menuBar()->addMenu(tr("&View"));
    for (int s = 0; s < kSites; ++s)
        act(view_menu_, tr("Site: %1").arg(siteLabel(s)), QKeySequence(QString("Alt+%1").arg(s + 1)),
            [this, s] { setSite(s); });
    view_menu_->addSeparator();
    act(view_menu_, tr("Previous layer"), QKeySequence(tr("Alt+Up")), [this] { selectLayer(layer_ - 1); });
    act(view_menu_, tr("Next layer"), QKeySequence(tr("Alt+Down")), [this] { selectLayer(layer_ + 1); });
    act(view_menu_, tr("Reset zoom"), QKeySequence(tr("Ctrl+0")), [this] {
        layer_canvas_->resetView();
        channel_canvas_->resetView();
    });
    act(view_menu_, tr("Focus prompt"), QKeySequence(tr("Ctrl+L")), [this] {
        prompt_dock_->raise();
        prompt_panel_->editor()->setFocus();
    });
    view_menu_->addSeparator();
    for (QDockWidget* d : {model_dock_, prompt_dock_, quant_dock_, search_dock_, tune_dock_, log_dock_})
        view_menu_->addAction(d->toggleViewAction());

    QMenu* help = menuBar()->addMenu(tr("&Help"));
    act(help, tr("&Keyboard shortcuts"), QKeySequence(Qt::Key_F1), [this] {
        log(tr("Shortcuts: Ctrl+O open file, Ctrl+Shift+O open folder, Ctrl+Shift+D default model, Ctrl+T load "
               "text, F5 probe, Ctrl+R quantize, F6 search step, F7 search run, Shift+F7 pause, Shift+F6 undo a step, F8 "
               "tune, Ctrl+E export, Ctrl+S save session, Ctrl+Alt+O open session, Ctrl+. cancel, Alt+1..5 probe site, Alt+Up/Down layer, Ctrl+0 "
               "reset zoom, Ctrl+L prompt. In a map: wheel zooms tokens, Ctrl+wheel zooms rows, Shift+wheel "
               "pans, drag pans, click selects, double-click resets."));
        log_dock_->raise();
    });
    act(help, tr("&About"), QKeySequence(), [this] {
        log(tr("CushionCache Studio %1: see activation outliers, quantize, and search a cushion prefix.")
                .arg(CUSHION_VERSION));
        log_dock_->raise();
    });
}

// ------------------------------------------------------------------------------------------- settings

void MainWindow::restoreSettings() {
    QSettings s;
    restoreGeometry(s.value("window/geometry").toByteArray());
    restoreState(s.value("window/state").toByteArray());
    recent_ = s.value("model/recent").toStringList();
    refreshRecentMenu();
    model_panel_->setDevice(s.value("model/device", "cpu").toString());
    model_panel_->setDtype(s.value("model/dtype", "fp32").toString());
    setSite(s.value("view/site", 3).toInt());
    threshold_->setValue(s.value("view/threshold", 64.0).toDouble());
    if (opts_.restore_session) prompt_panel_->setText(s.value("prompt/text").toString());
    QuantSettings q;
    q.wbits = s.value("quant/wbits", q.wbits).toInt();
    q.group = s.value("quant/group", q.group).toLongLong();
    q.abits = s.value("quant/abits", q.abits).toInt();
    q.granularity = s.value("quant/granularity", q.granularity).toString();
    q.smoothquant = s.value("quant/smoothquant", q.smoothquant).toBool();
    q.alpha = s.value("quant/alpha", q.alpha).toDouble();
    q.kv_bits = s.value("quant/kv_bits", q.kv_bits).toInt();
    quant_panel_->setSettings(q);
    const QString calib = s.value("quant/calib").toString(), eval = s.value("quant/eval").toString();
    if (QFileInfo::exists(calib) && QFileInfo::exists(eval)) quant_panel_->setTextPaths(calib, eval);
}

void MainWindow::saveSettings() {
    QSettings s;
    s.setValue("window/geometry", saveGeometry());
    s.setValue("window/state", saveState());
    s.setValue("model/recent", recent_);
    s.setValue("model/device", model_panel_->device());
    s.setValue("model/dtype", model_panel_->dtype());
    if (model_) s.setValue("model/last", model_->path);
    s.setValue("view/site", site());
    s.setValue("view/threshold", threshold_->value());
    s.setValue("prompt/text", prompt_panel_->text());
    const QuantSettings q = quant_panel_->ownSettings();
    s.setValue("quant/wbits", q.wbits);
    s.setValue("quant/group", q.group);
    s.setValue("quant/abits", q.abits);
    s.setValue("quant/granularity", q.granularity);
    s.setValue("quant/smoothquant", q.smoothquant);
    s.setValue("quant/alpha", q.alpha);
    s.setValue("quant/kv_bits", q.kv_bits);
    s.setValue("quant/calib", quant_panel_->calibPath());
    s.setValue("quant/eval", quant_panel_->evalPath());
}

void MainWindow::showEvent(QShowEvent* e) {
    QMainWindow::showEvent(e);
    // Once shown, while idle: every canvas' GL context, including the before/after ones in the hidden tab
    // (their first showing would otherwise cost ~20 ms each in the middle of a search step).
    if (!canvases_prepared_) {
        canvases_prepared_ = true;
        QTimer::singleShot(0, this, [this] {
            for (HeatmapCanvas* c : findChildren<HeatmapCanvas*>()) c->prepareGl();
        });
    }
}

void MainWindow::closeEvent(QCloseEvent* e) {
    saveSettings();
    workers_->cancelAll();
    e->accept();
}

void MainWindow::addRecent(const QString& path) {
    recent_.removeAll(path);
    recent_.prepend(path);
    while (recent_.size() > kMaxRecent) recent_.removeLast();
    QSettings().setValue("model/recent", recent_);
    refreshRecentMenu();
}

void MainWindow::refreshRecentMenu() {
    recent_menu_->clear();
    for (int i = 0; i < recent_.size(); ++i) {
        const QString p = recent_[i];
        QAction* a = recent_menu_->addAction(QString("&%1  %2").arg((i + 1) % 10).arg(p));
        connect(a, &QAction::triggered, this, [this, p] { openModel(p); });
    }
    recent_menu_->setEnabled(!recent_.isEmpty());
}

// ---------------------------------------------------------------------------------------- drag & drop

void MainWindow::dragEnterEvent(QDragEnterEvent* e) {
    if (e->mimeData()->hasUrls() && !e->mimeData()->urls().isEmpty() && e->mimeData()->urls().first().isLocalFile())
        e->acceptProposedAction();
}

void MainWindow::dropEvent(QDropEvent* e) {
    const QList<QUrl> urls = e->mimeData()->urls();
    if (urls.isEmpty() || !urls.first().isLocalFile()) return;
    const QString path = urls.first().toLocalFile();
    const QString suffix = QFileInfo(path).suffix().toLower();
    if (suffix == "txt" || suffix == "md")
        loadTextFile(path);
    else
        openModel(path);
    e->acceptProposedAction();
}

// --------------------------------------------------------------------------------------------- actions

void MainWindow::openModel(const QString& chosen) {
    // An exported package is its directory; choosing (or dropping) its quantization.json opens it too.
    const QFileInfo fi(chosen);
    const QString path = fi.fileName() == "quantization.json" && fi.isFile() ? fi.absolutePath() : chosen;
    if (workers_->model()->isBusy()) {
        // One load at a time: cancel the running one, this one starts when it has stopped.
        pending_model_ = path;
        workers_->model()->requestCancel();
        return;
    }
    if (!QFileInfo::exists(path)) {
        showError(tr("No such file or directory: %1").arg(path));
        return;
    }
    QSettings().setValue("dir/model", QFileInfo(path).absolutePath());
    model_panel_->setLoading(path);
    log(tr("Loading %1 on %2 (%3)").arg(path, model_panel_->device(), model_panel_->dtype()));
    const QString dev = model_panel_->device(), dt = model_panel_->dtype();
    ModelWorker* w = workers_->model();
    WorkerThreads::post(w, [w, path, dev, dt] { w->load(path, dev, dt); });
}

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
    model_ = info;
    data_.reset();
    // A search, a tuning and a cushion belong to the model they were made for.
    resetCushionWork();
    search_panel_->setModelAvailable(true);
    banner_box_->hide();  // an earlier error is in the log; the window now shows the new model
    model_panel_->setModel(info);
    quant_panel_->setModelAvailable(true);
    quant_panel_->setPackage(info->package);
    addRecent(info->path);
    QSettings().setValue("model/last", info->path);
    layer_spin_->setRange(0, static_cast<int>(info->layers) - 1);
    layer_ = std::min<int>(layer_, static_cast<int>(info->layers) - 1);
    QStringList rows;
    for (int l = 0; l < info->layers; ++l) rows << QString::number(l);
    layer_canvas_->setRowLabels(rows);
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
    if (pending_session_ && session_stage_ == 1) continueSessionRestore();
}

void MainWindow::requestProbe() {
    if (!model_) return;
    const QString text = prompt_panel_->text();
    if (text.trimmed().isEmpty()) {
        prompt_panel_->setStatus(tr("Type a prompt"));
        return;
    }
    ProbeRequest req;
    req.id = ++probe_id_;
    req.model = model_;
    req.text = text;
    req.layer = layer_;
    req.site = site();
    ProbeWorker* w = workers_->probe();
    w->setLatest(req.id);
    prompt_panel_->setStatus(tr("Probing…"));
    WorkerThreads::post(w, [w, req] { w->probe(req); });
    compare_dirty_ = true;
    if (centre_tabs_->currentIndex() == 1) requestCompare();
}

void MainWindow::onProbed(const HeatmapDataPtr& d) {
    if (d->request_id != probe_id_ || !model_ || d->model_key != model_->model.get()) return;  // stale
    data_ = d;
    prompt_panel_->setStatus(tr("%1 tokens x %2 layers in %3 ms%4")
                                 .arg(d->tokens)
                                 .arg(d->layers)
                                 .arg(d->seconds * 1000, 0, 'f', 0)
                                 .arg(d->truncated ? tr(" (truncated to the context)") : QString()));
    if (selected_token_ >= d->tokens) selected_token_ = -1;
    refreshMaps();
    emit heatmapUpdated();
}

void MainWindow::runQuantization() {
    if (!model_) {
        showError(tr("Open a model first"));
        return;
    }
    if (workers_->quant()->isBusy()) return;
    if (model_->package) {
        log(tr("The package's scheme is fixed: its perplexities are those measured at export"));
        return;
    }
    QuantRequest req;
    req.model = model_;
    req.settings = quant_panel_->settings();
    req.calib_path = quant_panel_->calibPath();
    req.eval_path = quant_panel_->evalPath();
    quant_panel_->setBusy(true);
    quant_dock_->raise();
    log(tr("Quantizing with W%1 A%2 %3%4")
            .arg(req.settings.wbits)
            .arg(req.settings.abits)
            .arg(req.settings.granularity)
            .arg(req.settings.smoothquant ? " SmoothQuant" : ""));
    QuantWorker* w = workers_->quant();
    WorkerThreads::post(w, [w, req] { w->quantize(req); });
}

void MainWindow::cancelAll() {
    pending_model_.clear();
    search_running_ = tune_running_ = false;
    pending_search_action_ = 0;
    workers_->cancelAll();
    setTask(tr("Cancelling…"), -1);
}

void MainWindow::showError(const QString& message) {
    banner_->setText(message);
    banner_box_->show();
    log(tr("error: %1").arg(message));
    statusBar()->showMessage(message, 8000);
    emit errorShown(message);
}

QString MainWindow::errorText() const { return banner_box_->isVisible() ? banner_->text() : QString(); }

// ----------------------------------------------------------------------------------------------- views

int MainWindow::site() const { return site_combo_->currentData().toInt(); }

void MainWindow::setSite(int s) {
    const int i = site_combo_->findData(s);
    if (i >= 0) site_combo_->setCurrentIndex(i);
}

void MainWindow::selectLayer(int l) {
    if (!model_) return;
    l = std::clamp(l, 0, static_cast<int>(model_->layers) - 1);
    layer_ = l;
    if (layer_spin_->value() != l) layer_spin_->setValue(l);
    layer_canvas_->setSelection(selected_token_ >= 0 ? l : -1, selected_token_);
    refreshChannelMap();
}

QString MainWindow::tokenLabel(int t) const {
    if (!data_ || t < 0 || t >= data_->tokens) return {};
    return QString("'%1'  [%2, id %3]").arg(data_->token_text[t], data_->token_piece[t]).arg(data_->token_ids[t]);
}

void MainWindow::refreshMaps() {
    if (!data_) return;
    const int s = site();
    const int L = data_->layers, T = data_->tokens;
    layer_canvas_->setTitle(tr("Per-token max |x| at %1  |  %2 layers x %3 tokens").arg(siteLabel(s)).arg(L).arg(T));
    layer_canvas_->setData(L, T, data_->token_max[s]);
    std::vector<bool> hot(T, false);
    const double thr = threshold_->value();
    for (int l = 0; l < L; ++l)
        for (int t = 0; t < T; ++t)
            if (data_->token_ratio[s][size_t(l) * T + t] >= thr) hot[t] = true;
    layer_canvas_->setTokenStrip(data_->token_text, hot);
    if (selected_token_ >= 0) layer_canvas_->setSelection(layer_, selected_token_);
    refreshChannelMap();
}

void MainWindow::refreshChannelMap() {
    if (!data_) return;
    const int s = site();
    const ChannelMap* m = data_->channelMap(layer_, s);
    if (!m) {
        // Too large to keep every layer: probe again for this one.
        channel_canvas_->clearData(tr("Probing layer %1…").arg(layer_));
        requestProbe();
        return;
    }
    channel_canvas_->setTitle(
        tr("|x| at %1, layer %2  |  %3 channels x %4 tokens").arg(siteLabel(s)).arg(layer_).arg(m->channels).arg(m->tokens));
    channel_canvas_->setData(m->channels, m->tokens, m->values);
    const QRectF v = layer_canvas_->view();
    channel_canvas_->setXView(v.left(), v.right());
    // The selected token's column, with its largest channel marked: where its outlier lives.
    if (selected_token_ >= 0 && selected_token_ < m->tokens) {
        int best = 0;
        for (int c = 1; c < m->channels; ++c)
            if (m->values[size_t(c) * m->tokens + selected_token_] > m->values[size_t(best) * m->tokens + selected_token_])
                best = c;
        channel_canvas_->setSelection(best, selected_token_);
    } else {
        channel_canvas_->setSelection(-1, -1);
    }
}

QString MainWindow::selectionText() const { return selection_->text(); }

QString MainWindow::logText() const { return log_->toPlainText(); }

QString MainWindow::statusDevice() const { return status_device_->text(); }

void MainWindow::updateStatus() {
    status_device_->setText(model_ ? tr("Device: %1 %2").arg(model_->device, model_->dtype)
                                   : tr("Device: %1").arg(model_panel_->device()));
    QString mem = tr("Memory: %1").arg(formatBytes(processRss()));
    if (model_) mem += tr(" (weights %1)").arg(formatBytes(model_->weight_bytes));
    status_memory_->setText(mem);
}

void MainWindow::setTask(const QString& what, double f) {
    if (f < 0) {
        status_progress_->hide();
        status_task_->setText(what.isEmpty() ? tr("Ready") : what);
        return;
    }
    status_progress_->show();
    setProgressValue(status_progress_, static_cast<int>(f * 1000));
    status_task_->setText(what);
}

void MainWindow::log(const QString& line) {
    log_->appendPlainText(QDateTime::currentDateTime().toString("hh:mm:ss  ") + line);
}

// ------------------------------------------------------------------------------ before / after cushion

QWidget* MainWindow::buildCompareView() {
    auto* w = new QWidget;
    auto* v = new QVBoxLayout(w);
    v->setContentsMargins(0, 4, 0, 0);
    compare_label_ = new QLabel;
    compare_label_->setObjectName("compareSummary");
    compare_label_->setTextFormat(Qt::PlainText);
    compare_label_->setWordWrap(true);
    compare_label_->setTextInteractionFlags(Qt::TextSelectableByMouse);
    v->addWidget(compare_label_);
    auto* split = new QSplitter(Qt::Horizontal);
    before_canvas_ = new HeatmapCanvas;
    before_canvas_->setObjectName("beforeCanvas");
    after_canvas_ = new HeatmapCanvas;
    after_canvas_->setObjectName("afterCanvas");
    for (HeatmapCanvas* c : {before_canvas_, after_canvas_}) {
        c->setAxisNames(tr("layer"), QString());  // the token strip names the columns; the title needs the room
        c->setShowTokenStrip(true);
        split->addWidget(c);
    }
    auto tip = [this](bool after) {
        return [this, after](int l, int t, float val) {
            if (!compare_) return QString();
            const HeatmapData& d = after ? *compare_->after : *compare_->before;
            if (t < 0 || t >= d.tokens) return QString();
            const float ratio = d.token_ratio[site()][size_t(l) * d.tokens + t];
            return tr("'%1'  [%2, id %3]\n%4position %5, layer %6, %7\nmax |x| = %8   max/median = %9")
                .arg(d.token_text[t], d.token_piece[t])
                .arg(d.token_ids[t])
                .arg(after ? tr("after the cushion, ") : QString())
                .arg(t)
                .arg(l)
                .arg(siteLabel(site()))
                .arg(val, 0, 'g', 4)
                .arg(ratio, 0, 'f', 1);
        };
    };
    before_canvas_->setTooltipProvider(tip(false));
    after_canvas_->setTooltipProvider(tip(true));
    connect(before_canvas_, &HeatmapCanvas::cellHovered, this, [this](int l, int t) {
        if (compare_) selection_->setText(before_canvas_->tooltipText(l, t).replace('\n', "   "));
    });
    connect(after_canvas_, &HeatmapCanvas::cellHovered, this, [this](int l, int t) {
        if (compare_) selection_->setText(after_canvas_->tooltipText(l, t).replace('\n', "   "));
    });
    v->addWidget(split, 1);
    return w;
}

void MainWindow::requestCompare() {
    compare_dirty_ = false;
    const CushionPtr c = currentCushion();
    const QString text = prompt_panel_->text();
    if (!model_ || !c || text.trimmed().isEmpty()) {
        compare_.reset();
        ++compare_id_;  // a comparison still running is stale
        refreshCompare();
        return;
    }
    CompareRequest req;
    req.id = ++compare_id_;
    req.model = model_;
    req.text = text;
    req.cushion = c;
    ProbeWorker* w = workers_->probe();
    w->setLatestCompare(req.id);
    WorkerThreads::post(w, [w, req] { w->compare(req); });
}

void MainWindow::cushionChanged() {
    compare_dirty_ = true;
    if (centre_tabs_->currentIndex() == 1) requestCompare();
}

QString MainWindow::compareSummary() const { return compare_label_->text(); }

void MainWindow::refreshCompare() {
    if (!compare_) {
        const QString msg = !model_ ? tr("Open a model") : !currentCushion() ? tr("Run the search: the prompt after its cushion shows here")
                                                                          : tr("Probing…");
        before_canvas_->clearData(tr("The prompt without a cushion"));
        after_canvas_->clearData(msg);
        compare_label_->setText(tr("Left: the prompt as typed (with its <bos>). Right: the same text after the current cushion "
                                   "(its KV prepended, no <bos> of its own). Both on one colour scale."));
        return;
    }
    const int s = site();
    const HeatmapData& b = *compare_->before;
    const HeatmapData& a = *compare_->after;
    float hi = 0, lo = 0;
    for (const auto* vals : {&b.token_max[s], &a.token_max[s]})
        for (float x : *vals)
            if (x > 0 && std::isfinite(x)) {
                hi = std::max(hi, x);
                lo = lo == 0 ? x : std::min(lo, x);
            }
    const double shared_hi = hi > 0 ? hi : 1;
    const double shared_lo = std::max<double>(lo, shared_hi * 1e-4);
    const double thr = threshold_->value();
    auto show = [&](HeatmapCanvas* c, const HeatmapData& d, const QString& title) {
        c->setFixedScale(shared_lo, shared_hi);
        c->setTitle(title);
        c->setData(d.layers, d.tokens, d.token_max[s]);
        std::vector<bool> hot(d.tokens, false);
        for (int l = 0; l < d.layers; ++l)
            for (int t = 0; t < d.tokens; ++t)
                if (d.token_ratio[s][size_t(l) * d.tokens + t] >= thr) hot[t] = true;
        c->setTokenStrip(d.token_text, hot);
    };
    const int cushion_tokens = compare_->prefix_len;
    show(before_canvas_, b, tr("Before (no cushion)"));
    show(after_canvas_, a, tr("After (%1%2-token cushion)").arg(cushionIsTuned() ? tr("tuned ") : QString()).arg(cushion_tokens));
    // Figures over the text tokens (the before map's position 0 is <bos>).
    auto stats = [&](const HeatmapData& d, int first, float* mx, float* ratio, int* hot) {
        *mx = 0;
        *ratio = 0;
        *hot = 0;
        for (int t = first; t < d.tokens; ++t) {
            bool h = false;
            for (int l = 0; l < d.layers; ++l) {
                const size_t i = size_t(l) * d.tokens + t;
                *mx = std::max(*mx, d.token_max[s][i]);
                *ratio = std::max(*ratio, d.token_ratio[s][i]);
                h |= d.token_ratio[s][i] >= thr;
            }
            *hot += h;
        }
    };
    float bmx, brt, amx, art, bosmx = 0;
    int bhot, ahot;
    stats(b, 1, &bmx, &brt, &bhot);
    stats(a, 0, &amx, &art, &ahot);
    for (int l = 0; l < b.layers; ++l) bosmx = std::max(bosmx, b.token_max[s][size_t(l) * b.tokens]);
    compare_label_->setText(tr("Cushion %1. At %2 over the text tokens: largest |x| %3 → %4, largest max/median %5 → %6, "
                               "tokens with max/median ≥ %7: %8 → %9. Without a cushion, <bos> reaches |x| %10.")
                                .arg(compare_->prefix_text, siteLabel(s))
                                .arg(bmx, 0, 'g', 4)
                                .arg(amx, 0, 'g', 4)
                                .arg(brt, 0, 'f', 1)
                                .arg(art, 0, 'f', 1)
                                .arg(thr, 0, 'f', 0)
                                .arg(bhot)
                                .arg(ahot)
                                .arg(bosmx, 0, 'g', 4));
}

// ------------------------------------------------------------------------------------------- search

CushionPtr MainWindow::currentCushion() const {
    if (tuned_cushion_) return tuned_cushion_;
    if (search_snap_ && search_snap_->cushion) return search_snap_->cushion;
    return model_ && model_->package ? model_->package->cushion : nullptr;  // an opened package's own
}

bool MainWindow::cushionIsTuned() const { return tuned_cushion_ != nullptr; }

void MainWindow::resetCushionWork() {
    search_running_ = tune_running_ = false;
    search_starting_ = false;
    pending_search_action_ = 0;
    SearchWorker* sw = workers_->search();
    TuneWorker* tw = workers_->tune();
    sw->requestCancel();
    tw->requestCancel();
    // Not post(): that would clear the cancel just asked of a step still running for the old model.
    QMetaObject::invokeMethod(sw, [sw] { sw->reset(); }, Qt::QueuedConnection);
    QMetaObject::invokeMethod(tw, [tw] { tw->reset(); }, Qt::QueuedConnection);
    search_snap_.reset();
    tune_snap_.reset();
    tuned_cushion_.reset();
    restored_points_.clear();
    compare_.reset();
    search_panel_->setSnapshot(nullptr);
    tune_panel_->setSnapshot(nullptr);
    tune_panel_->clearPerplexity();
    tune_panel_->setAvailable(false, {});
    updateSearchBusy();
    updateTuneBusy();
    refreshCompare();
}

void MainWindow::updateSearchBusy() {
    search_panel_->setBusy(search_jobs_ > 0 || search_starting_ || search_running_, search_running_);
}

void MainWindow::updateTuneBusy() { tune_panel_->setBusy(tune_jobs_ > 0 || tune_running_, tune_running_); }

void MainWindow::postSearchStart(const QString& restore_state) {
    SearchRequest req;
    req.model = model_;
    req.settings = search_panel_->settings();
    req.calib_path = quant_panel_->calibPath();
    req.restore_state = restore_state;
    search_starting_ = true;
    ++search_jobs_;
    updateSearchBusy();
    if (auto_compare_tab_ && restore_state.isEmpty()) {
        // The first search of this window: show what the cushion does to the prompt.
        auto_compare_tab_ = false;
        centre_tabs_->setCurrentIndex(1);
    }
    search_dock_->raise();
    log(restore_state.isEmpty() ? tr("Starting a search on %1").arg(req.calib_path) : tr("Restoring the search"));
    SearchWorker* w = workers_->search();
    WorkerThreads::post(w, [w, req] { w->start(req); });
}

bool MainWindow::ensureSearch(int then) {
    if (!model_) {
        showError(tr("Open a model first"));
        return false;
    }
    if (search_snap_) {
        SearchSettings now = search_panel_->settings();
        now.pruned = search_snap_->settings.pruned;  // the step kind is chosen per step
        if (!(now == search_snap_->settings))
            search_panel_->setNote(tr("The settings changed: press New to search with them (this continues the current search)"));
        return true;
    }
    pending_search_action_ = then;
    postSearchStart({});
    return false;
}

void MainWindow::runPendingSearchAction() {
    const int a = pending_search_action_;
    pending_search_action_ = 0;
    if (!search_snap_) return;
    if (a == 1) {
        postSearchStep();
    } else if (a == 2) {
        postSearchScore();
    } else if (a == 3 && !search_snap_->done) {
        search_running_ = true;
        updateSearchBusy();
        postSearchStep();
    }
}

void MainWindow::postSearchStep() {
    SearchWorker* w = workers_->search();
    const bool pruned = search_panel_->pruned();
    ++search_jobs_;
    updateSearchBusy();
    WorkerThreads::post(w, [w, pruned] { w->step(pruned); });
}

void MainWindow::newSearch() {
    if (!model_) {
        showError(tr("Open a model first"));
        return;
    }
    if (!searchIdle()) return;
    pending_search_action_ = 0;
    postSearchStart({});
}

void MainWindow::searchStep() {
    if (!searchIdle()) return;
    if (!ensureSearch(1)) return;
    postSearchStep();
}

void MainWindow::searchScore() {
    if (!searchIdle()) return;
    if (!ensureSearch(2)) return;
    postSearchScore();
}

void MainWindow::postSearchScore() {
    SearchWorker* w = workers_->search();
    const bool pruned = search_panel_->pruned();
    ++search_jobs_;
    updateSearchBusy();
    WorkerThreads::post(w, [w, pruned] { w->score(pruned); });
}

void MainWindow::searchRun() {
    if (!searchIdle()) return;
    if (!ensureSearch(3)) return;
    if (search_snap_->done) {
        search_panel_->setNote(tr("The search has stopped: undo or use a candidate to go on"));
        return;
    }
    search_running_ = true;
    updateSearchBusy();
    postSearchStep();
}

void MainWindow::searchPause() {
    if (!search_running_) return;
    search_running_ = false;
    search_panel_->setNote(tr("Pausing after the current step…"));
    updateSearchBusy();
}

void MainWindow::searchCancel() {
    search_running_ = false;
    pending_search_action_ = 0;
    workers_->search()->requestCancel();
    updateSearchBusy();
}

void MainWindow::acceptBest() {
    if (!searchIdle() || !search_snap_) return;
    SearchWorker* w = workers_->search();
    ++search_jobs_;
    updateSearchBusy();
    WorkerThreads::post(w, [w] { w->acceptScored(); });
}

void MainWindow::useSelected() {
    if (!searchIdle() || !search_snap_) return;
    const int mode = search_panel_->useSelectedMode();
    const int token = search_panel_->selectedToken();
    if (mode < 0 || token < 0) {
        search_panel_->setNote(tr("Select a candidate of the current scores first"));
        return;
    }
    SearchWorker* w = workers_->search();
    ++search_jobs_;
    updateSearchBusy();
    const bool replace = mode == 1;
    WorkerThreads::post(w, [w, token, replace] { w->useToken(token, replace); });
}

void MainWindow::undoSearchStep() {
    if (!searchIdle() || !search_snap_ || !search_snap_->canUndo()) return;
    SearchWorker* w = workers_->search();
    ++search_jobs_;
    updateSearchBusy();
    WorkerThreads::post(w, [w] { w->undo(); });
}

void MainWindow::onSearchUpdated(const SearchSnapshotPtr& snap) {
    if (!model_ || snap->model_key != model_->model.get()) return;  // for a model no longer open
    const bool was_starting = search_starting_;
    search_starting_ = false;
    const bool prefix_changed = !search_snap_ || search_snap_->prefix != snap->prefix || was_starting;
    search_snap_ = snap;
    if (prefix_changed) invalidateTuning(tr("the search's prefix changed"));
    search_panel_->setSnapshot(snap);
    tune_panel_->setAvailable(snap->cushion != nullptr, snap->prefixText());
    if (!snap->last_action.isEmpty()) log(snap->last_action);
    if (prefix_changed) cushionChanged();
    emit searchUpdated();
    if (pending_session_ && session_stage_ == 2) {
        const SessionData& d = *pending_session_;
        if (!d.prefix.empty() && d.prefix != snap->prefix) {
            finishSessionRestore(tr("the restored prefix differs from the session's"));
        } else if (d.tuned && !d.cushion_file.isEmpty()) {
            session_stage_ = 3;
            ExportWorker* w = workers_->exporter();
            const QString file = d.cushion_file;
            const ModelInfoPtr m = model_;
            WorkerThreads::post(w, [w, file, m] { w->loadCushion(file, m); });
        } else {
            restoreSessionTuner();
        }
    }
    if (was_starting) {
        runPendingSearchAction();
    } else if (search_running_) {
        if (snap->done) {
            search_running_ = false;
            log(tr("The search stopped (%1): prefix %2, L_q %3 -> %4")
                    .arg(snap->stop, snap->prefixText())
                    .arg(snap->initial_loss, 0, 'g', 6)
                    .arg(snap->loss, 0, 'g', 6));
        } else {
            postSearchStep();
        }
    }
    updateSearchBusy();
}

// ------------------------------------------------------------------------------------------- tuning

void MainWindow::invalidateTuning(const QString& why) {
    const bool had = tune_snap_ || tuned_cushion_ || !restored_points_.empty();
    if (tune_running_ || tune_jobs_ > 0) {
        tune_running_ = false;
        workers_->tune()->requestCancel();
    }
    tune_snap_.reset();
    tuned_cushion_.reset();
    restored_points_.clear();
    tune_panel_->setSnapshot(nullptr);
    tune_panel_->clearPerplexity();
    if (had) tune_panel_->setNote(tr("The tuning was for another prefix (%1): start again").arg(why));
    updateTuneBusy();
}

PplRequest MainWindow::pplRequest(PplWhich which, const CushionPtr& c) const {
    PplRequest r;
    r.model = model_;
    r.which = which;
    r.cushion = c;
    r.quant = quant_panel_->settings();
    r.calib_path = quant_panel_->calibPath();
    r.eval_path = quant_panel_->evalPath();
    r.eval_docs = tune_panel_->settings().eval_docs;
    r.fit_after = cushionLength(search_snap_ ? search_snap_->cushion : c);  // every row predicts the same tokens
    return r;
}

void MainWindow::postTuneStep() {
    TuneWorker* w = workers_->tune();
    ++tune_jobs_;
    updateTuneBusy();
    WorkerThreads::post(w, [w] { w->step(); });
}

void MainWindow::startTuning() {
    if (!model_ || !search_snap_ || !search_snap_->cushion) {
        showError(tr("Run the search first: tuning starts from its cushion"));
        return;
    }
    if (!tuneIdle()) return;
    tune_snap_.reset();
    tuned_cushion_.reset();
    restored_points_.clear();
    tune_panel_->setSnapshot(nullptr);
    tune_panel_->clearPerplexity();
    cushionChanged();
    TuneRequest req;
    req.model = model_;
    req.init = search_snap_->cushion;
    req.calib_path = quant_panel_->calibPath();
    req.settings = tune_panel_->settings();
    tune_dock_->raise();
    log(tr("Tuning the cushion %1: %2 epochs, batch %3, lr %4, lambda %5")
            .arg(search_snap_->prefixText())
            .arg(req.settings.epochs)
            .arg(req.settings.batch)
            .arg(req.settings.lr)
            .arg(req.settings.lambda));
    TuneWorker* w = workers_->tune();
    const PplRequest none = pplRequest(PplWhich::None, nullptr);
    const PplRequest before = pplRequest(PplWhich::Before, search_snap_->cushion);
    tune_jobs_ += 3;
    tune_running_ = true;  // the batches follow the perplexities before tuning
    updateTuneBusy();
    WorkerThreads::post(w, [w, req] { w->start(req); });
    WorkerThreads::post(w, [w, none] { w->measure(none); });
    WorkerThreads::post(w, [w, before] { w->measure(before); });
}

void MainWindow::pauseTuning() {
    if (!tune_running_) return;
    tune_running_ = false;
    tune_panel_->setNote(tr("Pausing after the current batch…"));
    updateTuneBusy();
}

void MainWindow::resumeTuning() {
    if (!tuneIdle() || !tune_snap_ || tune_snap_->done) return;
    tune_running_ = true;
    postTuneStep();
}

void MainWindow::tuneStep() {
    if (!tuneIdle() || !tune_snap_ || tune_snap_->done) return;
    postTuneStep();
}

void MainWindow::cancelTuning() {
    tune_running_ = false;
    workers_->tune()->requestCancel();
    updateTuneBusy();
}

void MainWindow::measurePerplexity() {
    if (!model_ || !tuneIdle()) return;
    const CushionPtr search = search_snap_ ? search_snap_->cushion : nullptr;
    std::vector<PplRequest> reqs;
    if (!tune_panel_->perplexity(PplWhich::None)) reqs.push_back(pplRequest(PplWhich::None, nullptr));
    if (search && !tune_panel_->perplexity(PplWhich::Before)) reqs.push_back(pplRequest(PplWhich::Before, search));
    if (tuned_cushion_) reqs.push_back(pplRequest(PplWhich::After, tuned_cushion_));
    if (reqs.empty() && search) reqs.push_back(pplRequest(PplWhich::Before, search));
    TuneWorker* w = workers_->tune();
    for (const PplRequest& r : reqs) {
        ++tune_jobs_;
        WorkerThreads::post(w, [w, r] { w->measure(r); });
    }
    updateTuneBusy();
}

void MainWindow::onTuneUpdated(const TuneSnapshotPtr& snap) {
    if (!model_ || snap->model_key != model_->model.get()) return;
    if (!search_snap_ || snap->prefix != search_snap_->prefix) return;  // for an earlier prefix
    tune_snap_ = snap;
    if (snap->steps_done > 0) {
        tuned_cushion_ = snap->cushion;
        cushionChanged();
    }
    tune_panel_->setSnapshot(snap);
    emit tuningUpdated();
    if (pending_session_ && session_stage_ == 4) {
        log(tr("Tuning resumes from the session: %1 of %2 batches done").arg(snap->steps_done).arg(snap->total_steps));
        finishSessionRestore({});
    }
    if (tune_running_) {
        if (snap->done) {
            tune_running_ = false;
            const TunePoint* last = snap->points.empty() ? nullptr : &snap->points.back();
            log(tr("Tuning done: %1 batches%2")
                    .arg(snap->steps_done)
                    .arg(last ? tr(", last CE %1, L_q %2").arg(last->ce, 0, 'f', 4).arg(last->lq, 0, 'g', 5) : QString()));
            TuneWorker* w = workers_->tune();
            const PplRequest after = pplRequest(PplWhich::After, snap->cushion);
            ++tune_jobs_;
            WorkerThreads::post(w, [w, after] { w->measure(after); });
        } else {
            postTuneStep();
        }
    }
    updateTuneBusy();
}

// ------------------------------------------------------------------------------------------- export

void MainWindow::showExportDialog() {
    if (!export_dialog_) {
        export_dialog_ = new ExportDialog(this);
        connect(export_dialog_, &ExportDialog::exportRequested, this, &MainWindow::exportPackage);
        connect(export_dialog_, &ExportDialog::cancelRequested, this, [this] { workers_->exporter()->requestCancel(); });
        QString dir = QSettings().value("export/dir").toString();
        if (dir.isEmpty())
            dir = QDir(QStandardPaths::writableLocation(QStandardPaths::HomeLocation)).filePath("cushion-package");
        export_dialog_->setDirectory(dir);
    }
    const QuantSettings q = quant_panel_->settings();
    QString scheme = QString("W%1 A%2").arg(q.wbits ? QString::number(q.wbits) : "fp", q.abits ? QString::number(q.abits) : "fp");
    if (q.abits) scheme += " " + q.granularity;
    if (q.wbits && q.group) scheme += QString(" g%1").arg(q.group);
    if (q.smoothquant) scheme += QString(" SmoothQuant %1").arg(q.alpha);
    if (q.kv_bits) scheme += QString(" KV%1").arg(q.kv_bits);
    const CushionPtr c = currentCushion();
    const QString cushion = c ? tr("%1 cushion %2 (%3 tokens)")
                                    .arg(cushionIsTuned() ? tr("tuned") : tr("search"))
                                    .arg(search_snap_ ? search_snap_->prefixText() : cushionText(c))
                                    .arg(cushionLength(c))
                              : tr("none: run the search first");
    export_dialog_->setSummary(scheme + tr("  (the Quantization panel's)"), cushion, quant_panel_->calibPath(),
                               quant_panel_->evalPath());
    export_dialog_->exportButton()->setEnabled(c != nullptr && model_ != nullptr && !export_dialog_->isBusy());
    export_dialog_->show();
    export_dialog_->raise();
    export_dialog_->activateWindow();
}

void MainWindow::exportPackage() {
    if (!export_dialog_) return;
    const CushionPtr c = currentCushion();
    if (model_ && model_->package) {
        export_dialog_->setFailed(tr("this model is an exported package already: export from the original model"));
        return;
    }
    if (!model_ || !c) {
        export_dialog_->setFailed(tr("run the search first: the package carries its cushion"));
        return;
    }
    const QString dir = export_dialog_->directory();
    if (dir.isEmpty()) {
        export_dialog_->setFailed(tr("choose the package directory"));
        return;
    }
    ExportRequest req;
    req.model = model_;
    req.cushion = c;
    req.dir = dir;
    req.quant = quant_panel_->settings();
    req.calib_path = quant_panel_->calibPath();
    req.eval_path = quant_panel_->evalPath();
    req.eval_docs = export_dialog_->evalDocs();
    req.overwrite = export_dialog_->overwrite();
    QSettings().setValue("export/dir", dir);
    export_dialog_->setBusy(true);
    log(tr("Exporting to %1").arg(dir));
    ExportWorker* w = workers_->exporter();
    WorkerThreads::post(w, [w, req] { w->exportPackage(req); });
}

// ----------------------------------------------------------------------------------------- sessions

void MainWindow::saveSession(const QString& path) {
    if (!model_) {
        showError(tr("Open a model first: a session starts from a model"));
        return;
    }
    SessionData d;
    d.model_path = QFileInfo(model_->path).absoluteFilePath();
    d.device = model_->device;
    d.dtype = model_->dtype;
    d.prompt = prompt_panel_->text();
    d.calib_path = quant_panel_->calibPath();
    d.eval_path = quant_panel_->evalPath();
    d.quant = quant_panel_->settings();
    d.search = search_panel_->settings();
    d.tune = tune_panel_->settings();
    if (search_snap_) {
        // The search is restored from its own settings and sample (its calibration text).
        d.search = search_snap_->settings;
        d.search.pruned = search_panel_->pruned();
        d.calib_path = search_snap_->calib_path;
        d.prefix = search_snap_->prefix;
        d.search_state = search_snap_->state_json;
    }
    d.tune_points = tune_panel_->points();
    const CushionPtr c = currentCushion();
    d.tuned = cushionIsTuned();
    if (c) {
        d.cushion_file = sessionCushionPath(path);
        d.cushion_prefix = search_snap_ ? search_snap_->prefix : std::vector<int>{};
    }
    d.site = site();
    if (tune_snap_) d.tuner_file = sessionTunerPath(path);  // a tuner to resume
    const QByteArray json = sessionToJson(d, path);
    log(tr("Saving the session to %1").arg(path));
    ExportWorker* w = workers_->exporter();
    const QString cpath = d.cushion_file;
    auto save = [w, path, json, c, cpath] { WorkerThreads::post(w, [w, path, json, c, cpath] { w->saveSession(path, json, c, cpath); }); };
    if (d.tuner_file.isEmpty()) {
        save();
        return;
    }
    // The tuner lives on the tuning thread: its state first (between batches), then the session naming it.
    after_tuner_saved_ = save;
    TuneWorker* tw = workers_->tune();
    const QString tpath = d.tuner_file;
    ++tune_jobs_;
    updateTuneBusy();
    WorkerThreads::post(tw, [tw, tpath] { tw->saveState(tpath); });
}

void MainWindow::openSession(const QString& path) {
    QFile f(path);
    if (!f.open(QIODevice::ReadOnly)) {
        showError(tr("Cannot read the session %1: %2").arg(path, f.errorString()));
        return;
    }
    SessionData d;
    try {
        d = sessionFromJson(f.readAll(), path);
    } catch (const std::exception& e) {
        showError(tr("Cannot open the session %1: %2").arg(path, QString::fromUtf8(e.what())));
        return;
    }
    if (!QFileInfo::exists(d.model_path)) {
        showError(tr("The session's model %1 does not exist").arg(d.model_path));
        return;
    }
    log(tr("Opening the session %1").arg(path));
    QSettings().setValue("dir/session", QFileInfo(path).absolutePath());
    session_path_ = path;
    model_panel_->setDevice(d.device);
    model_panel_->setDtype(d.dtype);
    quant_panel_->setSettings(d.quant);
    quant_panel_->setTextPaths(d.calib_path, d.eval_path);
    search_panel_->setSettings(d.search);
    tune_panel_->setSettings(d.tune);
    setSite(d.site);
    if (prompt_panel_->text() != d.prompt) prompt_panel_->setText(d.prompt);
    pending_session_ = std::make_unique<SessionData>(d);
    const bool same_model = model_ &&
                            QFileInfo(model_->path).canonicalFilePath() == QFileInfo(d.model_path).canonicalFilePath() &&
                            model_->device == d.device && model_->dtype == d.dtype;
    if (same_model) {
        resetCushionWork();
        continueSessionRestore();
    } else {
        session_stage_ = 1;
        openModel(d.model_path);
    }
}

void MainWindow::continueSessionRestore() {
    if (!pending_session_) return;
    const SessionData& d = *pending_session_;
    if (!d.search_state.isEmpty()) {
        session_stage_ = 2;
        postSearchStart(d.search_state);
        return;
    }
    finishSessionRestore({});
}

// Stage 4, after the search and the tuned cushion: a tuner from the session's state file, to resume tuning.
void MainWindow::restoreSessionTuner() {
    if (!pending_session_) return;
    const SessionData& d = *pending_session_;
    if (d.tuner_file.isEmpty() || !search_snap_ || !search_snap_->cushion) {
        finishSessionRestore({});
        return;
    }
    if (!QFileInfo::exists(d.tuner_file)) {
        finishSessionRestore(tr("the tuner state %1 is missing: tuning cannot resume").arg(d.tuner_file));
        return;
    }
    session_stage_ = 4;
    TuneRequest req;
    req.model = model_;
    req.init = search_snap_->cushion;
    req.calib_path = d.calib_path;
    req.settings = d.tune;
    req.state_path = d.tuner_file;
    TuneWorker* w = workers_->tune();
    ++tune_jobs_;
    updateTuneBusy();
    WorkerThreads::post(w, [w, req] { w->start(req); });
}

void MainWindow::finishSessionRestore(const QString& problem) {
    if (!pending_session_) return;
    const QString path = session_path_;
    pending_session_.reset();
    session_stage_ = 0;
    if (!problem.isEmpty()) showError(tr("The session was opened in part: %1").arg(problem));
    log(tr("Session %1 opened").arg(path));
    cushionChanged();
    emit sessionOpened();
}

}  // namespace studio
