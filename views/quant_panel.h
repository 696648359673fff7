// The quantization panel: pick a scheme (weight bits and group, activation bits and granularity,
// SmoothQuant, KV cache), calibrate and evaluate in a worker, and see perplexity FP vs quantized and the
// per-layer quantization error as a chart (QtCharts).
#pragma once
#include <QWidget>

#include "studio_types.h"

class QCheckBox;
class QComboBox;
class QDoubleSpinBox;
class QLabel;
class QLineEdit;
class QProgressBar;
class QPushButton;

class QChartView;
class QChart;

namespace studio {

class QuantPanel : public QWidget {
    Q_OBJECT
public:
    explicit QuantPanel(QWidget* parent = nullptr);
    // The scheme shown (the four linear-input sites). SmoothQuant off: smoothquant_alpha -1, the alpha box
    // keeps its value for when it is turned on again.
    cushion::QuantConfig settings() const;
    void setSettings(const cushion::QuantConfig& s);
    QString calibPath() const;
    QString evalPath() const;
    void setTextPaths(const QString& calib, const QString& eval);

    void setBusy(bool busy);
    void setProgress(double fraction, const QString& what);
    void setResult(const QuantResultPtr& r);
    void setFailed(const QString& message);
    void setCancelled();
    void setModelAvailable(bool on);
    // An exported package was opened (null: an ordinary model): its scheme is shown fixed, with the
    // perplexities quantization.json recorded at export; Calibrate & evaluate is off.
    void setPackage(const std::shared_ptr<const PackageInfo>& package);
    std::shared_ptr<const PackageInfo> package() const { return package_; }
    QString packageText() const;
    cushion::QuantConfig ownSettings() const { return package_ ? own_ : settings(); }  // the user's, not a package's

    QuantResultPtr result() const { return result_; }
    QString resultText() const;
    QChartView* chartView() const { return chart_view_; }
    QPushButton* runButton() const { return run_; }

signals:
    void runRequested();
    void cancelRequested();

private:
    void browse(QLineEdit* edit);
    void updateEnabled();
    QComboBox *wbits_, *group_, *abits_, *gran_, *kv_;
    QCheckBox* sq_;
    QDoubleSpinBox* alpha_;
    QLineEdit *calib_, *eval_;
    QPushButton *run_, *cancel_;
    QProgressBar* bar_;
    QLabel *state_, *fp_, *q_, *delta_, *notes_, *package_label_;
    QChartView* chart_view_;
    QuantResultPtr result_;
    bool model_ = false, busy_ = false;
    std::shared_ptr<const PackageInfo> package_;
    cushion::QuantConfig own_;  // the scheme before a package was opened, back when it is closed
};

}  // namespace studio
