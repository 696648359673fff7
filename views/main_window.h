// The studio's main window: the two heatmap canvases in the centre, docks for the model, the prompt,
// quantization, the (coming) search, and a log; menus with shortcuts, a status bar with device and
// memory, settings remembered with QSettings. All engine work goes to the workers (workers.h).
#pragma once
#include <QMainWindow>
#include <QStringList>

#include "workers.h"

class QComboBox;
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

protected:
    void closeEvent(QCloseEvent* e) override;
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
    QMenu* recent_menu_;
    QMenu* view_menu_;
    QLabel *status_task_, *status_device_, *status_memory_;
    QProgressBar* status_progress_;
};

}  // namespace studio
