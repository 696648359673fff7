// The prefix tuning panel (step 2 of CushionCache, core/prefix_tuner.h): settings (epochs, batch, Adam's
// learning rate, lambda, seed, document length for quick runs, evaluation documents), Start / Pause /
// Resume / Step / Cancel, live loss curves per batch (CE and the total on the left axis, L_q on the right),
// and the perplexity — full precision and quantized with the Quantization panel's scheme — without a
// cushion, with the search's cushion (before tuning) and with the tuned one (after).
#pragma once
#include <QWidget>

#include "studio_types.h"

class QDoubleSpinBox;
class QLabel;
class QProgressBar;
class QPushButton;
class QSpinBox;
class QTableWidget;
class QChartView;
class QLineSeries;
class QValueAxis;

namespace studio {

class TunePanel : public QWidget {
    Q_OBJECT
public:
    explicit TunePanel(QWidget* parent = nullptr);
    TuneSettings settings() const;
    void setSettings(const TuneSettings& s);

    // available: a search cushion exists to tune.
    void setAvailable(bool available, const QString& prefix_text);
    void setBusy(bool busy, bool running);
    void setProgress(double fraction, const QString& what);
    void setSnapshot(const TuneSnapshotPtr& snap);  // null: no tuning
    // Curves restored from a session (no tuner behind them).
    void setRestored(const std::vector<TunePoint>& points, const QString& prefix_text);
    void setPerplexity(const PplResultPtr& r);
    void clearPerplexity();
    void setFailed(const QString& message);
    void setCancelled();
    void setNote(const QString& note);

    TuneSnapshotPtr snapshot() const { return snap_; }
    const std::vector<TunePoint>& points() const { return points_; }
    PplResultPtr perplexity(PplWhich which) const { return ppl_[static_cast<int>(which)]; }
    QString stateText() const;

    QPushButton* startButton() const { return start_; }
    QPushButton* pauseButton() const { return pause_; }
    QPushButton* resumeButton() const { return resume_; }
    QPushButton* stepButton() const { return step_; }
    QPushButton* cancelButton() const { return cancel_; }
    QPushButton* measureButton() const { return measure_; }
    QPushButton* exportButton() const { return export_; }
    QChartView* chartView() const { return chart_view_; }
    QTableWidget* perplexityTable() const { return ppl_table_; }

signals:
    void startRequested();
    void pauseRequested();
    void resumeRequested();
    void stepRequested();
    void cancelRequested();
    void measureRequested();
    void exportRequested();

private:
    void updateButtons();
    void updateChart();
    QSpinBox *epochs_, *batch_, *seed_, *doc_tokens_, *eval_docs_;
    QDoubleSpinBox *lr_, *lambda_;
    QPushButton *start_, *pause_, *resume_, *step_, *cancel_, *measure_, *export_;
    QProgressBar* bar_;
    QLabel *state_, *prefix_, *scheme_;
    QString summary_;  // what the state line shows when no job reports progress
    QChartView* chart_view_;
    QLineSeries *ce_series_, *total_series_, *lq_series_;  // made once; updateChart replaces their points
    QValueAxis *x_axis_, *y_axis_, *lq_axis_;
    QTableWidget* ppl_table_;
    TuneSnapshotPtr snap_;
    std::vector<TunePoint> points_;
    PplResultPtr ppl_[3];
    bool available_ = false, busy_ = false, running_ = false;
};

}  // namespace studio
