// The studio's centre: the prompt's activations (layers x tokens with the token strip, and channels x tokens
// of the selected layer, zoomed and panned together), the probe site, the channel map's layer and the
// outlier threshold; on a second tab the layers x tokens map before and after the current cushion side by
// side on one colour scale, with a summary. It shows what the window hands it and asks for probes.
#pragma once
#include <QWidget>

#include "studio_types.h"

class QComboBox;
class QDoubleSpinBox;
class QLabel;
class QSpinBox;
class QTabWidget;

namespace studio {

class HeatmapCanvas;

class ActivationView : public QWidget {
    Q_OBJECT
public:
    explicit ActivationView(QWidget* parent = nullptr);

    void setModel(const ModelInfoPtr& model);  // null: none; the maps wait for a probe
    void setData(const HeatmapDataPtr& data);   // a probe of the prompt
    HeatmapDataPtr data() const { return data_; }
    // The before/after tab: the comparison (null: none yet, showing empty_message), and whether its cushion is
    // the tuned one.
    void setComparison(const CompareDataPtr& data, const QString& empty_message, bool tuned);
    CompareDataPtr comparison() const { return compare_; }
    bool compareShown() const;
    void showCompare();

    int site() const;
    void setSite(int site);
    int layer() const { return layer_; }
    void selectLayer(int layer);
    double threshold() const;
    void setThreshold(double t);
    void resetZoom();
    QString selectionText() const;
    QString compareSummary() const;
    HeatmapCanvas* layerCanvas() const { return layer_canvas_; }
    HeatmapCanvas* channelCanvas() const { return channel_canvas_; }
    HeatmapCanvas* beforeCanvas() const { return before_canvas_; }
    HeatmapCanvas* afterCanvas() const { return after_canvas_; }
    QTabWidget* tabs() const { return tabs_; }

signals:
    void probeNeeded();        // the selected layer's channel map was not kept: probe again for it
    void viewChanged();        // the site or the threshold changed
    void compareTabShown();

private:
    QWidget* buildCompareView();
    QString tokenLabel(int t) const;
    void refreshMaps();
    void refreshChannelMap();
    void refreshCompare();

    ModelInfoPtr model_;
    HeatmapDataPtr data_;
    CompareDataPtr compare_;
    QString compare_empty_;
    bool compare_tuned_ = false;
    int layer_ = 0;
    int selected_token_ = -1;
    HeatmapCanvas *layer_canvas_, *channel_canvas_, *before_canvas_, *after_canvas_;
    QComboBox* site_combo_;
    QSpinBox* layer_spin_;
    QDoubleSpinBox* threshold_;
    QLabel *selection_, *compare_label_;
    QTabWidget* tabs_;
};

}  // namespace studio
