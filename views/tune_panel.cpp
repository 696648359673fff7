#include "tune_panel.h"

#include "panel_layout.h"

#include <QChart>
#include <QChartView>
#include <QDoubleSpinBox>
#include <QGridLayout>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QLegend>
#include <QLineSeries>
#include <QPen>
#include <QProgressBar>
#include <QPushButton>
#include <QScatterSeries>
#include <QSpinBox>
#include <QTableWidget>
#include <QVBoxLayout>
#include <QValueAxis>

#include <algorithm>
#include <cmath>

#include "progress_bar.h"

namespace studio {

namespace {
QSpinBox* spin(int lo, int hi, int value, const QString& special = {}) {
    auto* s = new QSpinBox;
    s->setRange(lo, hi);
    s->setValue(value);
    if (!special.isEmpty()) s->setSpecialValueText(special);
    return s;
}
}  // namespace

TunePanel::TunePanel(QWidget* parent) : QWidget(parent) {
    auto* v = new QVBoxLayout(this);
    v->setContentsMargins(6, 6, 6, 6);
    prefix_ = new QLabel;
    prefix_->setObjectName("tunePrefix");
    prefix_->setTextFormat(Qt::PlainText);
    prefix_->setWordWrap(true);
    v->addWidget(prefix_);

    auto* grid = new QGridLayout;
    grid->setHorizontalSpacing(8);
    grid->setVerticalSpacing(3);
    epochs_ = spin(1, 1000, 2);
    epochs_->setObjectName("tuneEpochs");
    batch_ = spin(1, 4096, 4);
    batch_->setObjectName("tuneBatch");
    lr_ = new QDoubleSpinBox;
    lr_->setObjectName("tuneLr");
    lr_->setDecimals(6);
    lr_->setRange(1e-6, 1.0);
    lr_->setSingleStep(1e-4);
    lambda_ = new QDoubleSpinBox;
    lambda_->setObjectName("tuneLambda");
    lambda_->setDecimals(4);
    lambda_->setRange(0, 1000);
    lambda_->setSingleStep(0.01);
    lambda_->setToolTip(tr("loss = CE + lambda x L_q"));
    seed_ = spin(0, 1 << 30, 0);
    doc_tokens_ = spin(0, 1 << 20, 0, tr("whole"));
    doc_tokens_->setObjectName("tuneDocTokens");
    doc_tokens_->setToolTip(tr("Cut every calibration document to this many tokens (quick runs)"));
    eval_docs_ = spin(0, 1 << 20, 0, tr("all"));
    eval_docs_->setObjectName("tuneEvalDocs");
    eval_docs_->setToolTip(tr("Documents of the evaluation text the perplexities are measured on"));
    int r = 0;
    addSettingsRow(grid, r, tr("Epochs"), epochs_, tr("Batch"), batch_);
    addSettingsRow(grid, r, tr("Adam lr"), lr_, tr("lambda"), lambda_);
    addSettingsRow(grid, r, tr("Doc tokens"), doc_tokens_, tr("Seed"), seed_);
    grid->addWidget(new QLabel(tr("Eval docs")), r, 0);
    grid->addWidget(eval_docs_, r, 1);
    grid->setColumnStretch(1, 1);
    grid->setColumnStretch(3, 1);
    v->addLayout(grid);

    start_ = namedButton(tr("Start"), "tuneStart", tr("Tune the search's cushion from the start: perplexity before, then batches"));
    pause_ = namedButton(tr("Pause"), "tunePause", tr("Stop after the current batch"));
    resume_ = namedButton(tr("Resume"), "tuneResume", tr("Go on with the next batches"));
    step_ = namedButton(tr("Step"), "tuneStep", tr("One batch"));
    cancel_ = namedButton(tr("Cancel"), "tuneCancel", tr("Interrupt the current batch (it is not applied)"));
    measure_ = namedButton(tr("Perplexity"), "tuneMeasure", tr("Measure the perplexity with the tuned cushion now"));
    export_ = namedButton(tr("Export…"), "tuneExport", tr("Export the quantized model with the cushion (Ctrl+E)"));
    v->addLayout(buttonGrid({{start_, pause_, resume_, step_}, {cancel_, measure_, export_}}));
    bar_ = thinProgressBar();
    v->addWidget(bar_);
    state_ = new QLabel;
    state_->setObjectName("tuneState");
    state_->setTextFormat(Qt::PlainText);
    state_->setWordWrap(true);
    v->addWidget(state_);

    auto* chart = new QChart;
    chart->setTitle(tr("Tuning loss per batch"));
    chart->setAnimationOptions(QChart::NoAnimation);
    chart->legend()->setAlignment(Qt::AlignBottom);
    chart->setMargins(QMargins(2, 2, 2, 2));
    // The series and axes are made once: rebuilding them for every batch cost a full chart relayout.
    ce_series_ = new QLineSeries;
    ce_series_->setName(tr("CE"));
    total_series_ = new QLineSeries;
    total_series_->setName(tr("total = CE + λ L_q"));
    lq_series_ = new QLineSeries;
    lq_series_->setName(tr("L_q (right axis)"));
    QPen pce(QColor(52, 120, 200));
    pce.setWidthF(2);
    ce_series_->setPen(pce);
    QPen ptot(QColor(60, 60, 60));
    ptot.setWidthF(2);
    total_series_->setPen(ptot);
    QPen plq(QColor(217, 130, 43));
    plq.setWidthF(2);
    plq.setStyle(Qt::DashLine);
    lq_series_->setPen(plq);
    x_axis_ = new QValueAxis;
    x_axis_->setTitleText(tr("batch (step)"));
    x_axis_->setLabelFormat("%d");
    y_axis_ = new QValueAxis;
    y_axis_->setTitleText(tr("CE, total"));
    y_axis_->setLabelFormat("%.3f");
    lq_axis_ = new QValueAxis;
    lq_axis_->setTitleText(tr("L_q"));
    lq_axis_->setLabelFormat("%.4g");
    chart->addAxis(x_axis_, Qt::AlignBottom);
    chart->addAxis(y_axis_, Qt::AlignLeft);
    chart->addAxis(lq_axis_, Qt::AlignRight);
    for (QLineSeries* s : {ce_series_, total_series_, lq_series_}) {
        chart->addSeries(s);
        s->attachAxis(x_axis_);
        s->attachAxis(s == lq_series_ ? lq_axis_ : y_axis_);
    }
    chart_view_ = new QChartView(chart);
    chart_view_->setObjectName("tuneChart");
    chart_view_->setRenderHint(QPainter::Antialiasing);
    chart_view_->setMinimumHeight(180);
    v->addWidget(chart_view_, 1);

    ppl_table_ = new QTableWidget(3, 2);
    ppl_table_->setObjectName("tunePerplexity");
    ppl_table_->setVerticalHeaderLabels({tr("no cushion"), tr("search cushion (before)"), tr("tuned cushion (after)")});
    ppl_table_->setHorizontalHeaderLabels({tr("full precision"), tr("quantized")});
    ppl_table_->setVerticalHeaderLabels({tr("no cushion"), tr("search cushion (before)"), tr("tuned cushion (after)")});
    ppl_table_->horizontalHeader()->setSectionResizeMode(QHeaderView::Stretch);
    ppl_table_->verticalHeader()->setDefaultSectionSize(22);
    ppl_table_->setEditTriggers(QAbstractItemView::NoEditTriggers);
    ppl_table_->setFixedHeight(ppl_table_->horizontalHeader()->sizeHint().height() + 3 * 22 + 4);
    scheme_ = new QLabel(tr("Perplexity on the evaluation text"));
    scheme_->setObjectName("tuneScheme");
    scheme_->setTextFormat(Qt::PlainText);
    scheme_->setWordWrap(true);
    v->addWidget(scheme_);
    v->addWidget(ppl_table_);

    connect(start_, &QPushButton::clicked, this, &TunePanel::startRequested);
    connect(pause_, &QPushButton::clicked, this, &TunePanel::pauseRequested);
    connect(resume_, &QPushButton::clicked, this, &TunePanel::resumeRequested);
    connect(step_, &QPushButton::clicked, this, &TunePanel::stepRequested);
    connect(cancel_, &QPushButton::clicked, this, &TunePanel::cancelRequested);
    connect(measure_, &QPushButton::clicked, this, &TunePanel::measureRequested);
    connect(export_, &QPushButton::clicked, this, &TunePanel::exportRequested);
    setSettings(TuneSettings{});
    clearPerplexity();
    setAvailable(false, {});
    updateChart();
}

TuneSettings TunePanel::settings() const {
    TuneSettings s;
    s.epochs = epochs_->value();
    s.batch = batch_->value();
    s.lr = lr_->value();
    s.lambda = lambda_->value();
    s.seed = seed_->value();
    s.doc_tokens = doc_tokens_->value();
    s.eval_docs = eval_docs_->value();
    return s;
}

void TunePanel::setSettings(const TuneSettings& s) {
    epochs_->setValue(s.epochs);
    batch_->setValue(s.batch);
    lr_->setValue(s.lr);
    lambda_->setValue(s.lambda);
    seed_->setValue(s.seed);
    doc_tokens_->setValue(s.doc_tokens);
    eval_docs_->setValue(s.eval_docs);
}

void TunePanel::setAvailable(bool available, const QString& prefix_text) {
    available_ = available;
    prefix_->setText(available ? tr("Cushion to tune: %1").arg(prefix_text)
                               : tr("Run the search first: tuning starts from its cushion."));
    updateButtons();
}

void TunePanel::setBusy(bool busy, bool running) {
    const bool ended = busy_ && !busy;
    busy_ = busy;
    running_ = running;
    bar_->setVisible(busy);
    if (ended && !summary_.isEmpty()) state_->setText(summary_);
    updateButtons();
}

void TunePanel::setProgress(double f, const QString& what) {
    setProgressValue(bar_, static_cast<int>(f * 1000));
    state_->setText(QString("%1 (%2%)").arg(what).arg(static_cast<int>(f * 100)));
}

void TunePanel::setFailed(const QString& m) {
    summary_ = tr("Failed: %1").arg(m);
    state_->setText(summary_);
}
void TunePanel::setCancelled() {
    summary_ = tr("Cancelled: the interrupted batch was not applied");
    state_->setText(summary_);
}
void TunePanel::setNote(const QString& n) {
    summary_ = n;
    state_->setText(n);
}
QString TunePanel::stateText() const { return state_->text(); }

void TunePanel::updateButtons() {
    const bool idle = available_ && !busy_;
    const bool tuning = snap_ != nullptr;
    start_->setEnabled(idle);
    pause_->setEnabled(busy_ && running_);
    resume_->setEnabled(idle && tuning && !snap_->done);
    step_->setEnabled(idle && tuning && !snap_->done);
    cancel_->setEnabled(busy_);
    measure_->setEnabled(idle);
    export_->setEnabled(available_);
    for (QWidget* w : std::initializer_list<QWidget*>{epochs_, batch_, lr_, lambda_, seed_, doc_tokens_, eval_docs_})
        w->setEnabled(!busy_);
}

void TunePanel::setSnapshot(const TuneSnapshotPtr& snap) {
    snap_ = snap;
    if (snap) {
        points_ = snap->points;
        const TunePoint* last = points_.empty() ? nullptr : &points_.back();
        summary_ = (last ? tr("Epoch %1/%2 · batch %3/%4 · step %5 of %6%11\nCE %7   L_q %8   total %9   |grad| %10")
                                   .arg(last->epoch + 1)
                                   .arg(snap->settings.epochs)
                                   .arg(last->batch + 1)
                                   .arg(last->batches_per_epoch)
                                   .arg(snap->steps_done)
                                   .arg(snap->total_steps)
                                   .arg(last->ce, 0, 'f', 4)
                                   .arg(last->lq, 0, 'g', 5)
                                   .arg(last->total, 0, 'f', 4)
                                   .arg(last->grad_norm, 0, 'g', 3)
                                   .arg(snap->done ? tr(" — done") : QString())
                             : tr("%1 documents, %2 batches x %3 epochs: ready")
                                   .arg(snap->documents)
                                   .arg(snap->batches_per_epoch)
                                   .arg(snap->settings.epochs));
        state_->setText(summary_);
    } else {
        points_.clear();
        summary_.clear();
        state_->clear();
    }
    updateChart();
    updateButtons();
}

void TunePanel::setRestored(const std::vector<TunePoint>& points, const QString& prefix_text) {
    snap_.reset();
    points_ = points;
    summary_ = tr("Restored from the session: the tuned cushion %1 after %2 batches (Start tunes again from the "
                  "search's cushion)")
                   .arg(prefix_text)
                   .arg(points.size());
    state_->setText(summary_);
    updateChart();
    updateButtons();
}

void TunePanel::clearPerplexity() {
    for (auto& p : ppl_) p.reset();
    scheme_->setText(tr("Perplexity on the evaluation text"));
    for (int r = 0; r < 3; ++r)
        for (int c = 0; c < 2; ++c) ppl_table_->setItem(r, c, new QTableWidgetItem("–"));
}

void TunePanel::setPerplexity(const PplResultPtr& r) {
    const int row = static_cast<int>(r->which);
    ppl_[row] = r;
    ppl_table_->setHorizontalHeaderLabels({tr("full precision"), tr("quantized")});
    scheme_->setText(tr("Perplexity on %1 evaluation documents (%2 predicted tokens); quantized: %3")
                         .arg(r->docs)
                         .arg(r->tokens)
                         .arg(r->scheme));
    auto cell = [&](int c, double v) {
        auto* it = new QTableWidgetItem(QString::number(v, 'f', 3));
        it->setTextAlignment(Qt::AlignRight | Qt::AlignVCenter);
        it->setToolTip(tr("%1 documents, %2 predicted tokens, %3 s").arg(r->docs).arg(r->tokens).arg(r->seconds, 0, 'f', 2));
        ppl_table_->setItem(row, c, it);
    };
    cell(0, r->fp);
    cell(1, r->quant);
}

void TunePanel::updateChart() {
    QList<QPointF> ce, total, lq;
    double lo = 1e300, hi = -1e300, qlo = 1e300, qhi = -1e300;
    qint64 last = 1;
    for (const TunePoint& p : points_) {
        ce.append(QPointF(p.step, p.ce));
        total.append(QPointF(p.step, p.total));
        lq.append(QPointF(p.step, p.lq));
        lo = std::min({lo, p.ce, p.total});
        hi = std::max({hi, p.ce, p.total});
        qlo = std::min(qlo, p.lq);
        qhi = std::max(qhi, p.lq);
        last = std::max(last, p.step);
    }
    ce_series_->replace(ce);
    total_series_->replace(total);
    lq_series_->replace(lq);
    // Mark single points too: a line of one point is invisible.
    for (QLineSeries* s : {ce_series_, total_series_, lq_series_}) s->setPointsVisible(points_.size() < 40);
    const qint64 span = snap_ ? std::max<qint64>(snap_->total_steps, last) : last;
    x_axis_->setRange(points_.empty() ? 0 : 1, std::max<qint64>(span, 2));
    x_axis_->setTickCount(static_cast<int>(std::min<qint64>(std::max<qint64>(span, 2), 6)));
    if (points_.empty()) {
        y_axis_->setRange(0, 1);
        lq_axis_->setRange(0, 1);
    } else {
        const double pad = std::max((hi - lo) * 0.1, 1e-3 * std::max(1.0, std::fabs(hi)));
        y_axis_->setRange(lo - pad, hi + pad);
        const double qpad = std::max((qhi - qlo) * 0.1, 1e-3 * std::max(1.0, std::fabs(qhi)));
        lq_axis_->setRange(qlo - qpad, qhi + qpad);
    }
}

}  // namespace studio
