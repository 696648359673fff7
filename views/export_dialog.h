// The export dialog: writes the quantized model with its cushion as a package directory
// (core/quantized_package.h, write_package) — the Quantization panel's scheme, static activation ranges collected on
// its calibration text with the cushion in place, perplexities measured on its evaluation text — with a
// progress bar and Cancel (nothing is left behind), then the figures and sizes of what was written.
#pragma once
#include <QDialog>

#include "studio_types.h"

class QCheckBox;
class QLabel;
class QLineEdit;
class QPlainTextEdit;
class QProgressBar;
class QPushButton;
class QSpinBox;

namespace studio {

class ExportDialog : public QDialog {
    Q_OBJECT
public:
    explicit ExportDialog(QWidget* parent = nullptr);
    // What will be exported, for display.
    void setSummary(const QString& scheme, const QString& cushion, const QString& calib, const QString& eval);
    QString directory() const;
    void setDirectory(const QString& dir);
    bool overwrite() const;
    void setOverwrite(bool on);
    int evalDocs() const;  // 0 = all
    void setEvalDocs(int n);

    void setBusy(bool busy);
    void setProgress(double fraction, const QString& what);
    void setResult(const ExportResultPtr& r);
    void setFailed(const QString& message);
    void setCancelled();
    bool isBusy() const { return busy_; }
    QString resultText() const;
    QString stateText() const;

    QPushButton* exportButton() const { return export_; }
    QPushButton* cancelButton() const { return cancel_; }

signals:
    void exportRequested();
    void cancelRequested();

protected:
    void reject() override;  // Esc / close while exporting cancels first

private:
    QLabel *scheme_, *cushion_, *texts_, *state_;
    QLineEdit* dir_;
    QCheckBox* overwrite_;
    QSpinBox* eval_docs_;
    QProgressBar* bar_;
    QPlainTextEdit* result_;
    QPushButton *export_, *cancel_;
    bool busy_ = false;
};

}  // namespace studio
