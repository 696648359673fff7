#include "quant_panel.h"

#include <QBarCategoryAxis>
#include <QBarSeries>
#include <QBarSet>
#include <QChart>
#include <QChartView>
#include <QCheckBox>
#include <QComboBox>
#include <QDoubleSpinBox>
#include <QFileDialog>
#include <QFormLayout>
#include <QGridLayout>
#include <QHBoxLayout>
#include <QLabel>
#include <QLegend>
#include <QLineEdit>
#include <QLineSeries>
#include <QLogValueAxis>
#include <QProgressBar>
#include <QPushButton>
#include <QToolButton>
#include <QVBoxLayout>
#include <QValueAxis>

#include <algorithm>
#include <cmath>

#include "progress_bar.h"

namespace studio {

namespace {
void addItems(QComboBox* c, const QList<QPair<QString, int>>& items) {
    for (const auto& [t, v] : items) c->addItem(t, v);
}
void selectData(QComboBox* c, const QVariant& v) {
    const int i = c->findData(v);
    if (i >= 0) c->setCurrentIndex(i);
}
}  // namespace

QuantPanel::QuantPanel(QWidget* parent) : QWidget(parent) {
    auto* v = new QVBoxLayout(this);
    package_label_ = new QLabel;
    package_label_->setObjectName("packageLabel");
    package_label_->setWordWrap(true);
    package_label_->setTextFormat(Qt::PlainText);
    package_label_->setTextInteractionFlags(Qt::TextSelectableByMouse);
    package_label_->setStyleSheet("background: #1f3d5c; color: #dcecff; border-radius: 3px; padding: 4px;");
    package_label_->hide();
    v->addWidget(package_label_);
    auto* form = new QFormLayout;
    wbits_ = new QComboBox;
    wbits_->setObjectName("wbitsCombo");
    addItems(wbits_, {{"full precision", 0}, {"8-bit", 8}, {"4-bit", 4}});
    group_ = new QComboBox;
    addItems(group_, {{"per output channel", 0}, {"group 32", 32}, {"group 64", 64}, {"group 128", 128}});
    abits_ = new QComboBox;
    abits_->setObjectName("abitsCombo");
    addItems(abits_, {{"full precision", 0}, {"16-bit", 16}, {"8-bit", 8}, {"6-bit", 6}, {"4-bit", 4}});
    gran_ = new QComboBox;
    gran_->setObjectName("granularityCombo");
    gran_->addItems({"per-tensor-static", "per-tensor-dynamic", "per-token"});
    auto* sq_row = new QHBoxLayout;
    sq_ = new QCheckBox(tr("SmoothQuant, alpha"));
    alpha_ = new QDoubleSpinBox;
    alpha_->setRange(0.05, 1.0);
    alpha_->setSingleStep(0.05);
    alpha_->setValue(0.8);
    sq_row->addWidget(sq_);
    sq_row->addWidget(alpha_);
    kv_ = new QComboBox;
    addItems(kv_, {{"full precision", 0}, {"8-bit", 8}, {"4-bit", 4}});
    form->addRow(tr("Weights"), wbits_);
    form->addRow(tr("Weight groups"), group_);
    form->addRow(tr("Activations"), abits_);
    form->addRow(tr("Granularity"), gran_);
    form->addRow(QString(), sq_row);
    form->addRow(tr("KV cache"), kv_);
    auto file_row = [&](QLineEdit*& edit, const QString& name) {
        auto* row = new QHBoxLayout;
        edit = new QLineEdit;
        edit->setObjectName(name);
        auto* b = new QToolButton;
        b->setText("…");
        connect(b, &QToolButton::clicked, this, [this, &edit] { browse(edit); });
        row->addWidget(edit, 1);
        row->addWidget(b);
        return row;
    };
    form->addRow(tr("Calibration text"), file_row(calib_, "calibPath"));
    form->addRow(tr("Evaluation text"), file_row(eval_, "evalPath"));
    v->addLayout(form);

    auto* run_row = new QHBoxLayout;
    run_ = new QPushButton(tr("Quantize && evaluate"));
    run_->setObjectName("quantRunButton");
    run_->setToolTip(tr("Ctrl+R"));
    cancel_ = new QPushButton(tr("Cancel"));
    cancel_->setObjectName("quantCancelButton");
    bar_ = new QProgressBar;
    bar_->setRange(0, 1000);
    bar_->setTextVisible(false);
    bar_->setMaximumHeight(14);
    run_row->addWidget(run_);
    run_row->addWidget(cancel_);
    run_row->addWidget(bar_, 1);
    v->addLayout(run_row);
    state_ = new QLabel;
    state_->setObjectName("quantState");
    state_->setWordWrap(true);
    v->addWidget(state_);

    auto* grid = new QGridLayout;
    fp_ = new QLabel("–");
    fp_->setObjectName("fpPpl");
    q_ = new QLabel("–");
    q_->setObjectName("quantPpl");
    delta_ = new QLabel("–");
    QFont big = fp_->font();
    big.setPointSizeF(big.pointSizeF() * 1.4);
    big.setBold(true);
    for (QLabel* l : {fp_, q_, delta_}) l->setFont(big);
    grid->addWidget(new QLabel(tr("Perplexity FP")), 0, 0);
    grid->addWidget(new QLabel(tr("Quantized")), 0, 1);
    grid->addWidget(new QLabel(tr("Change")), 0, 2);
    grid->addWidget(fp_, 1, 0);
    grid->addWidget(q_, 1, 1);
    grid->addWidget(delta_, 1, 2);
    v->addLayout(grid);

    auto* chart = new QChart;
    chart->setTitle(tr("Per-layer quantization error"));
    chart->legend()->setAlignment(Qt::AlignBottom);
    QFont legend_font = chart->legend()->font();
    legend_font.setPointSizeF(legend_font.pointSizeF() * 0.85);
    chart->legend()->setFont(legend_font);
    chart->setAnimationOptions(QChart::NoAnimation);
    chart_view_ = new QChartView(chart);
    chart_view_->setObjectName("quantChart");
    chart_view_->setRenderHint(QPainter::Antialiasing);
    chart_view_->setMinimumHeight(240);
    v->addWidget(chart_view_, 1);
    notes_ = new QLabel;
    notes_->setWordWrap(true);
    notes_->setStyleSheet("color: gray");
    v->addWidget(notes_);

    connect(wbits_, &QComboBox::currentIndexChanged, this, &QuantPanel::updateEnabled);
    connect(abits_, &QComboBox::currentIndexChanged, this, &QuantPanel::updateEnabled);
    connect(sq_, &QCheckBox::toggled, this, &QuantPanel::updateEnabled);
    connect(run_, &QPushButton::clicked, this, &QuantPanel::runRequested);
    connect(cancel_, &QPushButton::clicked, this, &QuantPanel::cancelRequested);
    setSettings(defaultQuantScheme());
    updateEnabled();
    setBusy(false);
}

void QuantPanel::updateEnabled() {
    const bool fixed = package_ != nullptr;  // a package's scheme is what it was exported with
    for (QWidget* w : std::initializer_list<QWidget*>{wbits_, abits_, sq_, kv_}) w->setEnabled(!fixed);
    group_->setEnabled(!fixed && wbits_->currentData().toInt() > 0);
    gran_->setEnabled(!fixed && abits_->currentData().toInt() > 0);
    alpha_->setEnabled(!fixed && sq_->isChecked());
}

QString QuantPanel::packageText() const { return package_ ? package_label_->text() : QString(); }

void QuantPanel::setPackage(const std::shared_ptr<const PackageInfo>& p) {
    const bool had = package_ != nullptr;
    if (p && !had) own_ = settings();
    if (!p && had) setSettings(own_);
    package_ = p;
    QChart* chart = chart_view_->chart();
    if (p || had) {
        result_.reset();
        chart->removeAllSeries();
        for (QAbstractAxis* a : chart->axes()) {
            chart->removeAxis(a);
            delete a;
        }
        for (QLabel* l : {fp_, q_, delta_}) l->setText("–");
        delta_->setStyleSheet({});
        state_->clear();
        notes_->clear();
    }
    package_label_->setVisible(p != nullptr);
    if (p) {
        setSettings(p->quant);
        package_label_->setText(tr("Package %1 (exported by cushion %2)\nScheme (fixed): %3\nWeights %4, activations %5, "
                                   "sites %6\nCushion %7 (the current cushion)")
                                    .arg(p->dir, p->tool_version, p->describe)
                                    .arg(p->quant.wbits ? tr("%1-bit").arg(p->quant.wbits) : tr("full precision"))
                                    .arg(p->quant.abits ? tr("%1-bit %2").arg(p->quant.abits).arg(cushion::granularity_name(p->quant.act))
                                                        : tr("full precision"))
                                    .arg(p->sites, p->cushion_text));
        if (p->measured) {
            // The package runs with its cushion: those are its figures.
            fp_->setText(QString::number(p->ppl_fp_cushion, 'f', 3));
            q_->setText(QString::number(p->ppl_quant_cushion, 'f', 3));
            const double d = p->ppl_fp_cushion > 0 ? (p->ppl_quant_cushion / p->ppl_fp_cushion - 1) * 100 : 0;
            delta_->setText(QString("%1%2%").arg(d >= 0 ? "+" : "").arg(d, 0, 'f', 2));
            state_->setText(tr("Perplexities measured at export (with the cushion), %1 tokens%2")
                                .arg(p->eval_tokens)
                                .arg(p->eval_file.isEmpty() ? QString() : tr(" of %1").arg(p->eval_file)));
            notes_->setText(tr("At export: full precision %1 without the cushion, %2 with it; quantized %3 without, %4 with.")
                                .arg(p->ppl_fp, 0, 'f', 3)
                                .arg(p->ppl_fp_cushion, 0, 'f', 3)
                                .arg(p->ppl_quant, 0, 'f', 3)
                                .arg(p->ppl_quant_cushion, 0, 'f', 3));
        } else {
            state_->setText(tr("No perplexity was measured at export"));
        }
        chart->setTitle(tr("Per-layer quantization error (not recorded in a package)"));
    } else {
        chart->setTitle(tr("Per-layer quantization error"));
    }
    updateEnabled();
    setBusy(busy_);
}

void QuantPanel::browse(QLineEdit* edit) {
    const QString f = QFileDialog::getOpenFileName(this, tr("Text file (one document a line)"), edit->text(),
                                                   tr("Text (*.txt);;All files (*)"));
    if (!f.isEmpty()) edit->setText(f);
}

cushion::QuantConfig QuantPanel::settings() const {
    cushion::QuantConfig s;
    s.wbits = wbits_->currentData().toInt();
    s.group = group_->currentData().toInt();
    s.abits = abits_->currentData().toInt();
    s.act = cushion::parse_granularity(gran_->currentText().toStdString());  // the combo holds the three names
    s.smoothquant_alpha = sq_->isChecked() ? alpha_->value() : -1;
    s.kv_bits = kv_->currentData().toInt();
    return s;
}

void QuantPanel::setSettings(const cushion::QuantConfig& s) {
    selectData(wbits_, s.wbits);
    selectData(group_, static_cast<int>(s.group));
    selectData(abits_, s.abits);
    gran_->setCurrentText(cushion::granularity_name(s.act));
    sq_->setChecked(s.smoothquant_on());
    if (s.smoothquant_on()) alpha_->setValue(s.smoothquant_alpha);
    selectData(kv_, s.kv_bits);
}

QString QuantPanel::calibPath() const { return calib_->text(); }
QString QuantPanel::evalPath() const { return eval_->text(); }
void QuantPanel::setTextPaths(const QString& c, const QString& e) {
    calib_->setText(c);
    eval_->setText(e);
}

void QuantPanel::setModelAvailable(bool on) {
    model_ = on;
    setBusy(busy_);
}

void QuantPanel::setBusy(bool busy) {
    busy_ = busy;
    run_->setEnabled(!busy && model_ && !package_);
    cancel_->setEnabled(busy);
    bar_->setVisible(busy);
    if (busy) {
        bar_->setValue(0);
        state_->setText(tr("Starting…"));
    }
}

void QuantPanel::setProgress(double f, const QString& what) {
    setProgressValue(bar_, static_cast<int>(f * 1000));
    state_->setText(QString("%1 (%2%)").arg(what).arg(static_cast<int>(f * 100)));
}

void QuantPanel::setFailed(const QString& m) {
    setBusy(false);
    state_->setText(tr("Failed: %1").arg(m));
}

void QuantPanel::setCancelled() {
    setBusy(false);
    state_->setText(tr("Cancelled"));
}

QString QuantPanel::resultText() const {
    if (!result_) return {};
    return QString("%1: ppl %2 -> %3").arg(result_->describe).arg(result_->fp_ppl, 0, 'f', 3).arg(result_->q_ppl, 0, 'f', 3);
}

void QuantPanel::setResult(const QuantResultPtr& r) {
    result_ = r;
    setBusy(false);
    state_->setText(tr("%1 — %2 documents, %3 tokens evaluated in %4 s")
                        .arg(r->describe)
                        .arg(r->eval_docs)
                        .arg(r->eval_tokens)
                        .arg(r->seconds, 0, 'f', 2));
    fp_->setText(QString::number(r->fp_ppl, 'f', 3));
    q_->setText(QString::number(r->q_ppl, 'f', 3));
    const double d = r->fp_ppl > 0 ? (r->q_ppl / r->fp_ppl - 1) * 100 : 0;
    delta_->setText(QString("%1%2%").arg(d >= 0 ? "+" : "").arg(d, 0, 'f', 2));
    delta_->setStyleSheet(d > 5 ? "color: #d9534f" : (d > 1 ? "color: #d9822b" : "color: #4cae4c"));
    notes_->setText(r->notes.join("\n"));

    // Grouped bars: relative error of each quantized linear input per layer; line: residual drift.
    QChart* chart = chart_view_->chart();
    chart->removeAllSeries();
    for (QAbstractAxis* a : chart->axes()) {
        chart->removeAxis(a);
        delete a;
    }
    const int L = static_cast<int>(r->residual_drift.size());
    auto* bars = new QBarSeries;
    double top = 0;
    for (int s = 0; s < 4; ++s) {
        bool any = false;
        for (double e : r->act_error[s]) any |= e > 0;
        if (!any) continue;
        auto* set = new QBarSet(siteLabel(s));
        for (double e : r->act_error[s]) {
            *set << e;
            top = std::max(top, e);
        }
        bars->append(set);
    }
    auto* drift = new QLineSeries;
    drift->setName(tr("residual vs FP"));
    for (int l = 0; l < L; ++l) {
        drift->append(l, r->residual_drift[l]);
        top = std::max(top, r->residual_drift[l]);
    }
    QStringList cats;
    for (int l = 0; l < L; ++l) cats << QString::number(l);
    auto* x = new QBarCategoryAxis;
    x->append(cats);
    x->setTitleText(tr("layer"));
    auto* y = new QValueAxis;
    y->setRange(0, top > 0 ? top * 1.1 : 1);
    y->setTitleText(tr("relative L2 error"));
    y->setLabelFormat("%.3g");
    chart->addAxis(x, Qt::AlignBottom);
    chart->addAxis(y, Qt::AlignLeft);
    if (bars->count() > 0) {
        chart->addSeries(bars);
        bars->attachAxis(x);
        bars->attachAxis(y);
    } else {
        delete bars;
    }
    // The line shares the category axis through a hidden value axis spanning the same layer range.
    auto* xl = new QValueAxis;
    xl->setRange(-0.5, L - 0.5);
    xl->setVisible(false);
    chart->addAxis(xl, Qt::AlignBottom);
    chart->addSeries(drift);
    drift->attachAxis(xl);
    drift->attachAxis(y);
}

}  // namespace studio
