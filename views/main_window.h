// The studio's main window: it assembles the views and the controllers. In the centre the activations and the
// before/after cushion maps (activation_view.h); docks for the model, the prompt, quantization, the greedy
// search, prefix tuning and a log; the export dialog; menus with shortcuts, a status bar with device and
// memory, settings remembered with QSettings. The state lives in the controllers, apart from any widget:
// the model (model_controller.h), the prompt's probes (probe_controller.h), quantization and export
// (quant_controller.h), the search (search_controller.h), tuning (tune_controller.h) and sessions
// (session_controller.h); all engine work goes to the workers (workers.h, search_workers.h). main_window.cpp
// wires controllers to views; main_window_layout.cpp builds the frame (docks, menus, status bar, settings).
#pragma once
#include <QMainWindow>
#include <QStringList>

#include "activation_view.h"
#include "model_controller.h"
#include "probe_controller.h"
#include "quant_controller.h"
#include "search_controller.h"
#include "search_workers.h"  // workers(): the worker threads, for tests and benchmarks
#include "session_controller.h"
#include "tune_controller.h"

class QDockWidget;
class QLabel;
class QMenu;
class QPlainTextEdit;
class QProgressBar;
class QTabWidget;
class QToolButton;

namespace studio {

class ExportDialog;
class HeatmapCanvas;
class ModelPanel;
class PromptPanel;
class QuantPanel;
class SearchPanel;
class TunePanel;
class WorkerThreads;

class MainWindow : public QMainWindow {
    Q_OBJECT
public:
    struct Options {
        bool restore_session = true;  // reopen the last model (or the default one) and prompt on start
    };
    explicit MainWindow(Options opts, QWidget* parent = nullptr);
    MainWindow() : MainWindow(Options{}) {}
    ~MainWindow() override;

    // Opens a model (file or Hugging Face directory) on the device/dtype chosen in the model panel.
    void openModel(const QString& path);
    void openDefaultModel();
    void loadTextFile(const QString& path);
    void requestProbe();
    void runQuantization();
    void cancelAll();
    void showError(const QString& message);

    // Greedy search (the search panel's buttons). Step / Score / Run start a search first when there is none.
    void newSearch() { search_->newSearch(); }
    void searchStep() { search_->step(); }
    void searchScore() { search_->score(); }
    void searchRun() { search_->run(); }
    void searchPause() { search_->pause(); }   // after the current step
    void searchCancel() { search_->cancel(); }  // interrupts the current step
    void acceptBest() { search_->acceptBest(); }
    void useSelected();   // the candidate selected in the table, instead of the best when right after a step
    void undoSearchStep() { search_->undo(); }
    // Prefix tuning (the tuning panel's buttons).
    void startTuning() { tune_->start(); }
    void pauseTuning() { tune_->pause(); }
    void resumeTuning() { tune_->resume(); }
    void tuneStep() { tune_->step(); }
    void cancelTuning() { tune_->cancel(); }
    void measurePerplexity() { tune_->measure(); }
    // Export and sessions.
    void showExportDialog();
    void exportPackage();  // with the dialog's settings
    void saveSession(const QString& path);  // sessionSaved() when written
    void openSession(const QString& path);  // sessionOpened() when the model, search and cushion are back
    void requestCompare();
    // The cushion export, the before/after view and sessions use: the tuned one when there is one for the
    // search's prefix, else the search's (else an opened package's own).
    CushionPtr currentCushion() const;
    bool cushionIsTuned() const;

    // For tests and the screenshots.
    ModelInfoPtr model() const { return model_ctl_->model(); }
    HeatmapDataPtr heatmap() const { return centre_->data(); }
    HeatmapCanvas* layerCanvas() const { return centre_->layerCanvas(); }
    HeatmapCanvas* channelCanvas() const { return centre_->channelCanvas(); }
    ModelPanel* modelPanel() const { return model_panel_; }
    PromptPanel* promptPanel() const { return prompt_panel_; }
    QuantPanel* quantPanel() const { return quant_panel_; }
    QDockWidget* searchDock() const { return search_dock_; }
    QDockWidget* quantDock() const { return quant_dock_; }
    QDockWidget* tuneDock() const { return tune_dock_; }
    SearchPanel* searchPanel() const { return search_panel_; }
    TunePanel* tunePanel() const { return tune_panel_; }
    ExportDialog* exportDialog() const { return export_dialog_; }
    SearchSnapshotPtr searchSnapshot() const { return search_->snapshot(); }
    TuneSnapshotPtr tuneSnapshot() const { return tune_->snapshot(); }
    CompareDataPtr comparison() const { return centre_->comparison(); }
    HeatmapCanvas* beforeCanvas() const { return centre_->beforeCanvas(); }
    HeatmapCanvas* afterCanvas() const { return centre_->afterCanvas(); }
    QTabWidget* centreTabs() const { return centre_->tabs(); }
    QString compareSummary() const { return centre_->compareSummary(); }
    QString sessionPath() const { return session_->path(); }
    bool searchRunning() const { return search_->running(); }
    bool tuneRunning() const { return tune_->running(); }
    bool searchBusy() const { return search_->busy(); }
    bool tuneBusy() const { return tune_->busy(); }
    WorkerThreads* workers() const { return workers_; }
    SearchController* searchController() const { return search_; }
    TuneController* tuneController() const { return tune_; }
    SessionController* sessionController() const { return session_; }
    ProbeController* probeController() const { return probe_; }
    QuantController* quantController() const { return quant_ctl_; }
    QString errorText() const;
    QStringList recentFiles() const { return recent_; }
    QMenu* recentMenu() const { return recent_menu_; }
    int site() const { return centre_->site(); }
    void setSite(int site) { centre_->setSite(site); }
    int selectedLayer() const { return centre_->layer(); }
    void selectLayer(int layer) { centre_->selectLayer(layer); }
    QString selectionText() const { return centre_->selectionText(); }
    QString statusDevice() const;
    QString logText() const;

signals:
    void modelLoaded();
    void heatmapUpdated();
    void quantizationDone();
    void errorShown(const QString& message);
    void searchUpdated();
    void searchJobEnded();  // after any search job (success, failure, cancel)
    void tuningUpdated();
    void tuneJobEnded();
    void perplexityMeasured();
    void exportDone();
    void sessionSaved(const QString& path);
    void sessionOpened();
    void compareUpdated();

protected:
    void closeEvent(QCloseEvent* e) override;
    void showEvent(QShowEvent* e) override;
    void dragEnterEvent(QDragEnterEvent* e) override;
    void dropEvent(QDropEvent* e) override;

private:
    QWidget* buildBanner();
    void buildStatusBar();
    void buildDocks();
    void buildActions();
    void connectModel();
    void connectProbe();
    void connectQuantAndExport();
    void connectSearch();
    void connectTuning();
    void connectSessions();
    void restoreSettings();
    void saveSettings();
    void addRecent(const QString& path);
    void refreshRecentMenu();
    void updateStatus();
    void log(const QString& line);
    void setTask(const QString& what, double fraction);  // fraction < 0: idle
    void onModelLoaded(const ModelInfoPtr& info);
    void cushionChanged();
    void refreshCompare();

    Options opts_;
    WorkerThreads* workers_;
    ModelController* model_ctl_;
    SearchController* search_;
    TuneController* tune_;
    SessionController* session_;
    ProbeController* probe_;
    QuantController* quant_ctl_;
    bool canvases_prepared_ = false;  // showEvent made every canvas' GL context
    bool auto_compare_tab_ = true;
    QStringList recent_;

    ActivationView* centre_;
    QLabel* banner_;
    QWidget* banner_box_;
    ModelPanel* model_panel_;
    PromptPanel* prompt_panel_;
    QuantPanel* quant_panel_;
    SearchPanel* search_panel_;
    TunePanel* tune_panel_;
    QPlainTextEdit* log_;
    QDockWidget *model_dock_, *prompt_dock_, *quant_dock_, *search_dock_, *tune_dock_, *log_dock_;
    ExportDialog* export_dialog_ = nullptr;
    QMenu* recent_menu_;
    QLabel *status_task_, *status_device_, *status_memory_;
    QProgressBar* status_progress_;
};

}  // namespace studio
