// MainWindow's frame, apart from its wiring (main_window.cpp): the error banner, the status bar, the docks and
// their panels' buttons, the menus and shortcuts, the settings remembered with QSettings, recent files, drag
// and drop, showing and closing.
#include "main_window.h"

#include <QAction>
#include <QDateTime>
#include <QStandardPaths>
#include <QCloseEvent>
#include <QDir>
#include <QDockWidget>
#include <QDragEnterEvent>
#include <QDropEvent>
#include <QFileDialog>
#include <QFileInfo>
#include <QHBoxLayout>
#include <QKeySequence>
#include <QLabel>
#include <QMenuBar>
#include <QMimeData>
#include <QPlainTextEdit>
#include <QProgressBar>
#include <QPushButton>
#include <QSettings>
#include <QShowEvent>
#include <QStatusBar>
#include <QTimer>
#include <QToolButton>

#include "activation_view.h"
#include "base/resources.h"
#include "export_dialog.h"
#include "progress_bar.h"
#include "heatmap_canvas.h"
#include "model_controller.h"
#include "model_panel.h"
#include "prompt_panel.h"
#include "quant_panel.h"
#include "search_panel.h"
#include "tune_panel.h"

namespace studio {

namespace {
constexpr int kMaxRecent = 10;

// The folder models fetched by the set-up land in (packaging/fetch_smollm2.sh: models/ of the source tree, beside
// resources/): $CUSHION_MODELS_DIR, else the resources folder's sibling models/; empty when it does not exist.
QString fetchedModelsDir() {
    QString dir = qEnvironmentVariable("CUSHION_MODELS_DIR");
    if (dir.isEmpty()) {
        try {
            dir = QString::fromStdString(cushion::resource_dir()) + "/../models";
        } catch (const std::exception&) {
            return {};
        }
    }
    const QFileInfo fi(dir);
    return fi.isDir() ? fi.canonicalFilePath() : QString();
}

// The GGUF files there (e.g. SmolLM2-135M-Instruct.Q4_1.gguf), by name.
QStringList fetchedModels() {
    const QString dir = fetchedModelsDir();
    if (dir.isEmpty()) return {};
    QStringList out;
    for (const QFileInfo& f : QDir(dir).entryInfoList({"*.gguf"}, QDir::Files, QDir::Name)) out << f.canonicalFilePath();
    return out;
}
}  // namespace

QWidget* MainWindow::buildBanner() {
    banner_box_ = new QWidget;
    banner_box_->setObjectName("errorBanner");
    banner_box_->setStyleSheet("#errorBanner { background: #5c1f1f; border-radius: 3px; } QLabel { color: #ffdede; }");
    auto* bh = new QHBoxLayout(banner_box_);
    bh->setContentsMargins(8, 4, 4, 4);
    banner_ = new QLabel;
    banner_->setTextFormat(Qt::PlainText);
    banner_->setWordWrap(true);
    banner_->setTextInteractionFlags(Qt::TextSelectableByMouse);
    auto* close = new QToolButton;
    close->setText("✕");
    bh->addWidget(banner_, 1);
    bh->addWidget(close);
    banner_box_->hide();
    connect(close, &QToolButton::clicked, banner_box_, &QWidget::hide);
    return banner_box_;
}

void MainWindow::buildStatusBar() {
    // The current task with its progress, the device, memory.
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
        // The last folder a model came from; the first time, the fetched models' folder (SmolLM2 when set up).
        QString start = QSettings().value("dir/model").toString();
        if (start.isEmpty()) start = fetchedModelsDir();
        const QString f = QFileDialog::getOpenFileName(this, tr("Open model"), start,
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
        if (model()) openModel(model()->path);
    });
    connect(model_panel_, &ModelPanel::cancelRequested, this, [this] {
        model_ctl_->cancel();
    });
    connect(prompt_panel_, &PromptPanel::promptChanged, this, [this] { requestProbe(); });
    connect(prompt_panel_, &PromptPanel::loadTextRequested, this, [this] {
        const QString f = QFileDialog::getOpenFileName(this, tr("Load text"), QSettings().value("dir/text").toString(),
                                                       tr("Text (*.txt *.md);;All files (*)"));
        if (!f.isEmpty()) loadTextFile(f);
    });
    connect(quant_panel_, &QuantPanel::runRequested, this, &MainWindow::runQuantization);
    connect(quant_panel_, &QuantPanel::cancelRequested, this, [this] { quant_ctl_->cancelQuantization(); });

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
        if (sessionPath().isEmpty())
            save_as();
        else
            saveSession(sessionPath());
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

    QMenu* view_menu_ = menuBar()->addMenu(tr("&View"));
    for (int s = 0; s < kSites; ++s)
        act(view_menu_, tr("Site: %1").arg(siteLabel(s)), QKeySequence(QString("Alt+%1").arg(s + 1)),
            [this, s] { setSite(s); });
    view_menu_->addSeparator();
    act(view_menu_, tr("Previous layer"), QKeySequence(tr("Alt+Up")), [this] { selectLayer(selectedLayer() - 1); });
    act(view_menu_, tr("Next layer"), QKeySequence(tr("Alt+Down")), [this] { selectLayer(selectedLayer() + 1); });
    act(view_menu_, tr("Reset zoom"), QKeySequence(tr("Ctrl+0")), [this] { centre_->resetZoom(); });
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
    centre_->setThreshold(s.value("view/threshold", 64.0).toDouble());
    if (opts_.restore_session) prompt_panel_->setText(s.value("prompt/text").toString());
    cushion::QuantConfig q = defaultQuantScheme();
    q.wbits = s.value("quant/wbits", q.wbits).toInt();
    q.group = s.value("quant/group", qint64(q.group)).toLongLong();
    q.abits = s.value("quant/abits", q.abits).toInt();
    try {
        q.act = cushion::parse_granularity(s.value("quant/granularity", cushion::granularity_name(q.act)).toString().toStdString());
    } catch (const std::exception&) {
        // an unknown name in the settings file: the default
    }
    q.kv_bits = s.value("quant/kv_bits", q.kv_bits).toInt();
    q.smoothquant_alpha = s.value("quant/alpha", kDefaultSmoothQuantAlpha).toDouble();
    quant_panel_->setSettings(q);  // the alpha box shows the last alpha, also when SmoothQuant is off
    if (!s.value("quant/smoothquant", false).toBool()) q.smoothquant_alpha = -1;
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
    if (model()) s.setValue("model/last", model()->path);
    s.setValue("view/site", site());
    s.setValue("view/threshold", centre_->threshold());
    s.setValue("prompt/text", prompt_panel_->text());
    const cushion::QuantConfig q = quant_panel_->ownSettings();
    s.setValue("quant/wbits", q.wbits);
    s.setValue("quant/group", qint64(q.group));
    s.setValue("quant/abits", q.abits);
    s.setValue("quant/granularity", cushion::granularity_name(q.act));
    s.setValue("quant/smoothquant", q.smoothquant_on());
    if (q.smoothquant_on()) s.setValue("quant/alpha", q.smoothquant_alpha);  // off: the last alpha stays
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
    // Models the set-up fetched (models/), offered even before they were ever opened.
    QStringList recent_canonical, fetched;
    for (const QString& r : recent_) recent_canonical << QFileInfo(r).canonicalFilePath();
    for (const QString& p : fetchedModels())
        if (!recent_canonical.contains(p)) fetched << p;
    if (!fetched.isEmpty()) {
        recent_menu_->addSection(tr("Fetched models"));
        for (const QString& p : fetched) {
            QAction* a = recent_menu_->addAction(QFileInfo(p).fileName());
            a->setToolTip(p);
            a->setData(p);
            connect(a, &QAction::triggered, this, [this, p] { openModel(p); });
        }
    }
    recent_menu_->setEnabled(!recent_menu_->isEmpty());
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

// ------------------------------------------------------------------------- banner, status bar, log, export

void MainWindow::showError(const QString& message) {
    banner_->setText(message);
    banner_box_->show();
    log(tr("error: %1").arg(message));
    statusBar()->showMessage(message, 8000);
    emit errorShown(message);
}

QString MainWindow::errorText() const { return banner_box_->isVisible() ? banner_->text() : QString(); }

void MainWindow::updateStatus() {
    const ModelInfoPtr m = model();
    status_device_->setText(m ? tr("Device: %1 %2").arg(m->device, m->dtype) : tr("Device: %1").arg(model_panel_->device()));
    QString mem = tr("Memory: %1").arg(formatBytes(processRss()));
    if (m) mem += tr(" (weights %1)").arg(formatBytes(m->weight_bytes));
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

QString MainWindow::statusDevice() const { return status_device_->text(); }
QString MainWindow::logText() const { return log_->toPlainText(); }

void MainWindow::showExportDialog() {
    if (!export_dialog_) {
        export_dialog_ = new ExportDialog(this);
        connect(export_dialog_, &ExportDialog::exportRequested, this, &MainWindow::exportPackage);
        connect(export_dialog_, &ExportDialog::cancelRequested, quant_ctl_, &QuantController::cancelExport);
        QString dir = QSettings().value("export/dir").toString();
        if (dir.isEmpty())
            dir = QDir(QStandardPaths::writableLocation(QStandardPaths::HomeLocation)).filePath("cushion-package");
        export_dialog_->setDirectory(dir);
    }
    const cushion::QuantConfig q = quant_panel_->settings();
    QString scheme = QString("W%1 A%2").arg(q.wbits ? QString::number(q.wbits) : "fp", q.abits ? QString::number(q.abits) : "fp");
    if (q.abits) scheme += QString(" ") + cushion::granularity_name(q.act);
    if (q.wbits && q.group) scheme += QString(" g%1").arg(q.group);
    if (q.smoothquant_on()) scheme += QString(" SmoothQuant %1").arg(q.smoothquant_alpha);
    if (q.kv_bits) scheme += QString(" KV%1").arg(q.kv_bits);
    const CushionPtr c = currentCushion();
    const QString cushion = c ? tr("%1 cushion %2 (%3 tokens)")
                                    .arg(cushionIsTuned() ? tr("tuned") : tr("search"))
                                    .arg(searchSnapshot() ? searchSnapshot()->prefixText() : cushionText(c))
                                    .arg(cushionLength(c))
                              : tr("none: run the search first");
    export_dialog_->setSummary(scheme + tr("  (the Quantization panel's)"), cushion, quant_panel_->calibPath(),
                               quant_panel_->evalPath());
    export_dialog_->exportButton()->setEnabled(c != nullptr && model() != nullptr && !export_dialog_->isBusy());
    export_dialog_->show();
    export_dialog_->raise();
    export_dialog_->activateWindow();
}

}  // namespace studio
