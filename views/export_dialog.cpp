#include "export_dialog.h"

#include <QCheckBox>
#include <QFileDialog>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QLabel>
#include <QLineEdit>
#include <QPlainTextEdit>
#include <QProgressBar>
#include <QPushButton>
#include <QSpinBox>
#include <QToolButton>
#include <QVBoxLayout>

#include "progress_bar.h"

namespace studio {

ExportDialog::ExportDialog(QWidget* parent) : QDialog(parent) {
    setObjectName("exportDialog");
    setWindowTitle(tr("Export package"));
    setModal(false);
    auto* v = new QVBoxLayout(this);
    auto* form = new QFormLayout;
    scheme_ = new QLabel;
    scheme_->setObjectName("exportScheme");
    cushion_ = new QLabel;
    cushion_->setObjectName("exportCushion");
    cushion_->setTextFormat(Qt::PlainText);
    scheme_->setTextFormat(Qt::PlainText);
    cushion_->setWordWrap(true);
    texts_ = new QLabel;
    texts_->setWordWrap(true);
    texts_->setStyleSheet("color: gray");
    auto* dir_row = new QHBoxLayout;
    dir_ = new QLineEdit;
    dir_->setObjectName("exportDir");
    dir_->setMinimumWidth(360);
    auto* browse = new QToolButton;
    browse->setText("…");
    dir_row->addWidget(dir_, 1);
    dir_row->addWidget(browse);
    overwrite_ = new QCheckBox(tr("Replace the directory if it exists"));
    overwrite_->setObjectName("exportOverwrite");
    eval_docs_ = new QSpinBox;
    eval_docs_->setObjectName("exportEvalDocs");
    eval_docs_->setRange(0, 1 << 20);
    eval_docs_->setSpecialValueText(tr("all"));
    eval_docs_->setToolTip(tr("Documents of the evaluation text measured at export (all: `cushion verify` can re-measure)"));
    form->addRow(tr("Quantization"), scheme_);
    form->addRow(tr("Cushion"), cushion_);
    form->addRow(tr("Texts"), texts_);
    form->addRow(tr("Package directory"), dir_row);
    form->addRow(QString(), overwrite_);
    form->addRow(tr("Perplexity on"), eval_docs_);
    v->addLayout(form);
    auto* row = new QHBoxLayout;
    bar_ = new QProgressBar;
    bar_->setRange(0, 1000);
    bar_->setTextVisible(true);
    bar_->setFormat("%p%");
    export_ = new QPushButton(tr("Export"));
    export_->setObjectName("exportRun");
    export_->setDefault(true);
    cancel_ = new QPushButton(tr("Close"));
    cancel_->setObjectName("exportCancel");
    row->addWidget(bar_, 1);
    row->addWidget(export_);
    row->addWidget(cancel_);
    v->addLayout(row);
    state_ = new QLabel;
    state_->setObjectName("exportState");
    state_->setTextFormat(Qt::PlainText);
    state_->setWordWrap(true);
    v->addWidget(state_);
    result_ = new QPlainTextEdit;
    result_->setObjectName("exportResult");
    result_->setReadOnly(true);
    result_->setMinimumHeight(150);
    v->addWidget(result_, 1);

    connect(browse, &QToolButton::clicked, this, [this] {
        const QString d = QFileDialog::getSaveFileName(this, tr("Package directory (created)"), dir_->text());
        if (!d.isEmpty()) dir_->setText(d);
    });
    connect(export_, &QPushButton::clicked, this, &ExportDialog::exportRequested);
    connect(cancel_, &QPushButton::clicked, this, [this] {
        if (busy_)
            emit cancelRequested();
        else
            hide();
    });
    setBusy(false);
    resize(560, 420);
}

void ExportDialog::setSummary(const QString& scheme, const QString& cushion, const QString& calib, const QString& eval) {
    scheme_->setText(scheme);
    cushion_->setText(cushion);
    texts_->setText(tr("calibration: %1\nevaluation: %2").arg(calib, eval));
}

QString ExportDialog::directory() const { return dir_->text().trimmed(); }
void ExportDialog::setDirectory(const QString& d) { dir_->setText(d); }
bool ExportDialog::overwrite() const { return overwrite_->isChecked(); }
void ExportDialog::setOverwrite(bool on) { overwrite_->setChecked(on); }
int ExportDialog::evalDocs() const { return eval_docs_->value(); }
void ExportDialog::setEvalDocs(int n) { eval_docs_->setValue(n); }

void ExportDialog::setBusy(bool busy) {
    busy_ = busy;
    export_->setEnabled(!busy);
    cancel_->setText(busy ? tr("Cancel") : tr("Close"));
    dir_->setEnabled(!busy);
    overwrite_->setEnabled(!busy);
    eval_docs_->setEnabled(!busy);
    if (busy) {
        bar_->setValue(0);
        state_->setText(tr("Starting…"));
        result_->clear();
    }
}

void ExportDialog::setProgress(double f, const QString& what) {
    setProgressValue(bar_, static_cast<int>(f * 1000));
    state_->setText(what);
}

void ExportDialog::setResult(const ExportResultPtr& r) {
    setBusy(false);
    bar_->setValue(1000);
    state_->setText(tr("Exported to %1 in %2 s").arg(r->dir).arg(r->seconds, 0, 'f', 2));
    QStringList lines;
    lines << tr("Package: %1").arg(r->dir) << tr("Scheme: %1").arg(r->describe)
          << tr("Weights: %1 (float32 would be %2); package %3 in all")
                 .arg(formatBytes(r->package_weight_bytes), formatBytes(r->fp32_weight_bytes), formatBytes(r->bytes));
    if (r->eval_tokens > 0)
        lines << tr("Perplexity (%1 predicted tokens):").arg(r->eval_tokens)
              << tr("  full precision  %1    with the cushion %2").arg(r->ppl_fp, 0, 'f', 4).arg(r->ppl_fp_cushion, 0, 'f', 4)
              << tr("  quantized       %1    with the cushion %2   <- the package")
                     .arg(r->ppl_quant, 0, 'f', 4)
                     .arg(r->ppl_quant_cushion, 0, 'f', 4);
    for (const QString& n : r->notes) lines << tr("note: %1").arg(n);
    result_->setPlainText(lines.join('\n'));
}

void ExportDialog::setFailed(const QString& m) {
    setBusy(false);
    state_->setText(tr("Failed: %1").arg(m));
}

void ExportDialog::setCancelled() {
    setBusy(false);
    bar_->setValue(0);
    state_->setText(tr("Cancelled: nothing was written"));
}

QString ExportDialog::resultText() const { return result_->toPlainText(); }
QString ExportDialog::stateText() const { return state_->text(); }

void ExportDialog::reject() {
    if (busy_) {
        emit cancelRequested();
        return;
    }
    QDialog::reject();
}

}  // namespace studio
