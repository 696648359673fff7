#include "main_window.h"

#include <QAction>
#include <QApplication>
#include <QCloseEvent>
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
#include <QStatusBar>
#include <QTextStream>
#include <QTimer>
#include <QToolButton>
#include <QVBoxLayout>

#include <algorithm>

#include "heatmap_canvas.h"
#include "model_panel.h"
#include "prompt_panel.h"
#include "quant_panel.h"
#include "resources.h"
#include "search_panel.h"

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
    v->addWidget(split, 1);
    selection_ = new QLabel(tr("Hover a cell for its token, layer, channel and value; click to select."));
    selection_->setObjectName("selectionLabel");
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
    connect(site_combo_, &QComboBox::currentIndexChanged, this, [this] { refreshMaps(); });
    connect(layer_spin_, &QSpinBox::valueChanged, this, [this](int l) { selectLayer(l); });
    connect(threshold_, &QDoubleSpinBox::valueChanged, this, [this] { refreshMaps(); });

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
    model_dock_ = dock(tr("Model"), "modelDock", model_panel_, Qt::LeftDockWidgetArea);
    prompt_dock_ = dock(tr("Prompt"), "promptDock", prompt_panel_, Qt::LeftDockWidgetArea);
    quant_dock_ = dock(tr("Quantization"), "quantDock", quant_panel_, Qt::RightDockWidgetArea);
    search_dock_ = dock(tr("Search"), "searchDock", search_panel_, Qt::RightDockWidgetArea);
    log_dock_ = dock(tr("Log"), "logDock", log_, Qt::BottomDockWidgetArea);
    splitDockWidget(model_dock_, prompt_dock_, Qt::Vertical);
    tabifyDockWidget(quant_dock_, search_dock_);
    quant_dock_->raise();
    resizeDocks({model_dock_, quant_dock_}, {320, 420}, Qt::Horizontal);
    resizeDocks({log_dock_}, {110}, Qt::Vertical);

    connect(model_panel_, &ModelPanel::openFileRequested, this, [this] {
        const QString f = QFileDialog::getOpenFileName(this, tr("Open model"), QSettings().value("dir/model").toString(),
                                                       tr("Models (*.bin *.gguf);;All files (*)"));
        if (!f.isEmpty()) openModel(f);
    });
    connect(model_panel_, &ModelPanel::openDirectoryRequested, this, [this] {
        const QString d = QFileDialog::getExistingDirectory(this, tr("Open a Hugging Face model directory"),
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
    act(file, tr("Open model &folder…"), QKeySequence(tr("Ctrl+Shift+O")),
        [this] { emit model_panel_->openDirectoryRequested(); });
    act(file, tr("Open &default model"), QKeySequence(tr("Ctrl+Shift+D")), [this] { openDefaultModel(); });
    recent_menu_ = file->addMenu(tr("Open &recent"));
    recent_menu_->setObjectName("recentMenu");
    file->addSeparator();
    act(file, tr("Load &text…"), QKeySequence(tr("Ctrl+T")), [this] { emit prompt_panel_->loadTextRequested(); });
    file->addSeparator();
    act(file, tr("&Quit"), QKeySequence::Quit, [this] { close(); });

    QMenu* run = menuBar()->addMenu(tr("&Run"));
    act(run, tr("&Probe now"), QKeySequence(Qt::Key_F5), [this] { requestProbe(); });
    act(run, tr("&Quantize and evaluate"), QKeySequence(tr("Ctrl+R")), [this] { runQuantization(); });
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
    for (QDockWidget* d : {model_dock_, prompt_dock_, quant_dock_, search_dock_, log_dock_})
        view_menu_->addAction(d->toggleViewAction());

    QMenu* help = menuBar()->addMenu(tr("&Help"));
    act(help, tr("&Keyboard shortcuts"), QKeySequence(Qt::Key_F1), [this] {
        log(tr("Shortcuts: Ctrl+O open file, Ctrl+Shift+O open folder, Ctrl+Shift+D default model, Ctrl+T load "
               "text, F5 probe, Ctrl+R quantize, Ctrl+. cancel, Alt+1..5 probe site, Alt+Up/Down layer, Ctrl+0 "
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
    const QuantSettings q = quant_panel_->settings();
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

void MainWindow::openModel(const QString& path) {
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
    banner_box_->hide();  // an earlier error is in the log; the window now shows the new model
    model_panel_->setModel(info);
    quant_panel_->setModelAvailable(true);
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
    updateStatus();
    emit modelLoaded();
    requestProbe();
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
    status_progress_->setValue(static_cast<int>(f * 1000));
    status_task_->setText(what);
}

void MainWindow::log(const QString& line) {
    log_->appendPlainText(QDateTime::currentDateTime().toString("hh:mm:ss  ") + line);
}

}  // namespace studio
