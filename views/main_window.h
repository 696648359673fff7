// The studio's main window: in the centre the two heatmap canvases (layers x tokens, channels x tokens)
// and, on a second tab, the prompt's layers x tokens map before and after the current cushion side by
// side; docks for the model, the prompt, quantization, the greedy search, prefix tuning and a log; the
// export dialog; session project files (File > Save / Open session); menus with shortcuts, a status bar
// with device and memory, settings remembered with QSettings. All engine work goes to the workers
// (workers.h, search_workers.h); Run loops of the search and of tuning are driven from here, one step per
// job, so Pause takes effect between steps and Cancel interrupts the step in progress.
#pragma once
#include <QMainWindow>
#include <QStringList>

#include <functional>
#include <memory>

#include "search_workers.h"
#include "session.h"
#include "workers.h"

class QComboBox;
class QTabWidget;
class QDockWidget;
class QDoubleSpinBox;
class QLabel;
class QMenu;
class QPlainTextEdit;
class QProgressBar;
class QSpinBox;
class QToolButton;

namespace studio {

class HeatmapCanvas;
class ModelPanel;
class PromptPanel;
class QuantPanel;
class SearchPanel;
class TunePanel;
class ExportDialog;

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
    void newSearch();
    void searchStep();
    void searchScore();
    void searchRun();
    void searchPause();   // after the current step
    void searchCancel();  // interrupts the current step
    void acceptBest();
    void useSelected();   // the candidate selected in the table, instead of the best when right after a step
    void undoSearchStep();
    // Prefix tuning (the tuning panel's buttons).
    void startTuning();
    void pauseTuning();
    void resumeTuning();
    void tuneStep();
    void cancelTuning();
    void measurePerplexity();
    // Export and sessions.
    void showExportDialog();
    void exportPackage();  // with the dialog's settings
    void saveSession(const QString& path);  // sessionSaved() when written
    void openSession(const QString& path);  // sessionOpened() when the model, search and cushion are back
    void requestCompare();
    // The cushion export, the before/after view and sessions use: the tuned one when there is one for the
    // search's prefix, else the search's.
    CushionPtr currentCushion() const;
    bool cushionIsTuned() const;

    // For tests and the screenshots.
    ModelInfoPtr model() const { return model_; }
    HeatmapDataPtr heatmap() const { return data_; }
    HeatmapCanvas* layerCanvas() const { return layer_canvas_; }
    HeatmapCanvas* channelCanvas() const { return channel_canvas_; }
    ModelPanel* modelPanel() const { return model_panel_; }
    PromptPanel* promptPanel() const { return prompt_panel_; }
    QuantPanel* quantPanel() const { return quant_panel_; }
    QDockWidget* searchDock() const { return search_dock_; }
    QDockWidget* quantDock() const { return quant_dock_; }
    QDockWidget* tuneDock() const { return tune_dock_; }
    SearchPanel* searchPanel() const { return search_panel_; }
    TunePanel* tunePanel() const { return tune_panel_; }
    ExportDialog* exportDialog() const { return export_dialog_; }
    SearchSnapshotPtr searchSnapshot() const { return search_snap_; }
    TuneSnapshotPtr tuneSnapshot() const { return tune_snap_; }
    CompareDataPtr comparison() const { return compare_; }
    HeatmapCanvas* beforeCanvas() const { return before_canvas_; }
    HeatmapCanvas* afterCanvas() const { return after_canvas_; }
    QTabWidget* centreTabs() const { return centre_tabs_; }
    QString compareSummary() const;
    QString sessionPath() const { return session_path_; }
    bool searchRunning() const { return search_running_; }
    bool tuneRunning() const { return tune_running_; }
    bool searchBusy() const { return search_jobs_ > 0 || search_starting_ || search_running_; }
    bool tuneBusy() const { return tune_jobs_ > 0 || tune_running_; }
    WorkerThreads* workers() const { return workers_; }
    QString errorText() const;
    QStringList recentFiles() const { return recent_; }
    QMenu* recentMenu() const { return recent_menu_; }
    int site() const;
    void setSite(int site);
    int selectedLayer() const { return layer_; }
    void selectLayer(int layer);
    QString selectionText() const;
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
    void buildActions();
    void buildDocks();
    void restoreSettings();
    void saveSettings();
    void addRecent(const QString& path);
    void refreshRecentMenu();
    void refreshMaps();
    void refreshChannelMap();
    void updateStatus();
    void log(const QString& line);
    void setTask(const QString& what, double fraction);  // fraction < 0: idle
    void onModelLoaded(const ModelInfoPtr& info);
    void onProbed(const HeatmapDataPtr& data);
    QString tokenLabel(int t) const;
    QWidget* buildCompareView();
    void refreshCompare();
    void postSearchStart(const QString& restore_state);
    bool ensureSearch(int then);  // false: a search is being started; `then` runs after it
    void runPendingSearchAction();
    void postSearchStep();
    void postSearchScore();
    void postTuneStep();
    void onSearchUpdated(const SearchSnapshotPtr& snap);
    void onTuneUpdated(const TuneSnapshotPtr& snap);
    void invalidateTuning(const QString& why);
    void updateSearchBusy();
    void updateTuneBusy();
    void resetCushionWork();  // forget the search, the tuning and their cushions
    void cushionChanged();
    bool searchIdle() const { return search_jobs_ == 0 && !search_starting_ && !search_running_; }
    bool tuneIdle() const { return tune_jobs_ == 0 && !tune_running_; }
    void continueSessionRestore();
    void finishSessionRestore(const QString& problem);
    void restoreSessionTuner();
    PplRequest pplRequest(PplWhich which, const CushionPtr& c) const;

    Options opts_;
    WorkerThreads* workers_;
    ModelInfoPtr model_;
    HeatmapDataPtr data_;
    quint64 probe_id_ = 0;
    int layer_ = 0;
    int selected_token_ = -1;
    QString pending_model_;
    QStringList recent_;

    HeatmapCanvas* layer_canvas_;
    HeatmapCanvas* channel_canvas_;
    QComboBox* site_combo_;
    QSpinBox* layer_spin_;
    QDoubleSpinBox* threshold_;
    QLabel* selection_;
    QLabel* banner_;
    QToolButton* banner_close_;
    QWidget* banner_box_;
    ModelPanel* model_panel_;
    PromptPanel* prompt_panel_;
    QuantPanel* quant_panel_;
    SearchPanel* search_panel_;
    QPlainTextEdit* log_;
    QDockWidget *model_dock_, *prompt_dock_, *quant_dock_, *search_dock_, *log_dock_;
    TunePanel* tune_panel_;
    QDockWidget* tune_dock_;
    ExportDialog* export_dialog_ = nullptr;
    QTabWidget* centre_tabs_;
    HeatmapCanvas *before_canvas_, *after_canvas_;
    QLabel* compare_label_;
    CompareDataPtr compare_;
    quint64 compare_id_ = 0;
    bool compare_dirty_ = true;

    SearchSnapshotPtr search_snap_;
    TuneSnapshotPtr tune_snap_;
    CushionPtr tuned_cushion_;        // the tuned cushion (from tuning or a session), for search_snap_'s prefix
    std::vector<TunePoint> restored_points_;
    bool search_running_ = false, search_starting_ = false;
    int search_jobs_ = 0, tune_jobs_ = 0;  // posted and not yet finished
    int pending_search_action_ = 0;   // 1 step, 2 score, 3 run: after the search being started
    bool tune_running_ = false;
    bool canvases_prepared_ = false;  // showEvent made every canvas' GL context
    bool auto_compare_tab_ = true;
    QString session_path_;
    std::unique_ptr<SessionData> pending_session_;
    int session_stage_ = 0;           // 1: waiting for the model, 2: the search, 3: the cushion, 4: the tuner
    std::function<void()> after_tuner_saved_;  // saving a session: posts the session once the tuner state is written

    QMenu* recent_menu_;
    QMenu* view_menu_;
    QLabel *status_task_, *status_device_, *status_memory_;
    QProgressBar* status_progress_;
};

}  // namespace studio
