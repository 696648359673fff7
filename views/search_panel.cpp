#include "search_panel.h"

#include "panel_layout.h"

#include "cushion/greedy_search.h"

#include <QAbstractTableModel>
#include <QAreaSeries>
#include <QChart>
#include <QChartView>
#include <QComboBox>
#include <QDoubleSpinBox>
#include <QFormLayout>
#include <QGridLayout>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QLegend>
#include <QLineEdit>
#include <QLineSeries>
#include <QLogValueAxis>
#include <QPen>
#include <QProgressBar>
#include <QPushButton>
#include <QSpinBox>
#include <QSplitter>
#include <QTableView>
#include <QTableWidget>
#include <QTextDocument>
#include <QToolButton>
#include <QVBoxLayout>
#include <QValueAxis>

#include <algorithm>
#include <cmath>

#include "progress_bar.h"

namespace studio {

// The scored candidates of the last scoring, sorted by L_q (lowest first).
class CandidateModel : public QAbstractTableModel {
public:
    enum Column { Rank, Token, Id, Loss, Ratio, Columns };
    using QAbstractTableModel::QAbstractTableModel;

    void setScores(const SearchScoresPtr& sc, const std::shared_ptr<const QStringList>& vocab, double tau, int chosen) {
        beginResetModel();
        scores_ = sc;
        vocab_ = vocab;
        tau_ = tau;
        chosen_ = chosen;
        rows_.clear();
        if (sc)
            for (size_t t = 0; t < sc->loss.size(); ++t)
                if (std::isfinite(sc->loss[t])) rows_.push_back(static_cast<int>(t));
        std::stable_sort(rows_.begin(), rows_.end(), [&](int a, int b) { return sc->loss[a] < sc->loss[b]; });
        endResetModel();
    }
    int tokenAt(int row) const { return row >= 0 && row < static_cast<int>(rows_.size()) ? rows_[row] : -1; }
    int rowOf(int token) const {
        const auto it = std::find(rows_.begin(), rows_.end(), token);
        return it == rows_.end() ? -1 : static_cast<int>(it - rows_.begin());
    }
    int rowCount(const QModelIndex& p = {}) const override { return p.isValid() ? 0 : static_cast<int>(rows_.size()); }
    int columnCount(const QModelIndex& p = {}) const override { return p.isValid() ? 0 : Columns; }
    QVariant headerData(int section, Qt::Orientation o, int role) const override {
        if (o != Qt::Horizontal || role != Qt::DisplayRole) return {};
        static const char* names[Columns] = {"#", "token", "id", "L_q", "x current"};
        return QString(names[section]);
    }
    QVariant data(const QModelIndex& i, int role) const override {
        if (!i.isValid() || !scores_) return {};
        const int t = rows_[i.row()];
        const double l = scores_->loss[t];
        const double ratio = scores_->loss_before > 0 ? l / scores_->loss_before : 0;
        if (role == Qt::DisplayRole) {
            switch (i.column()) {
            case Rank: return i.row() + 1;
            case Token: return "'" + (vocab_ && t < vocab_->size() ? vocab_->at(t) : QString::number(t)) + "'";
            case Id: return t;
            case Loss: return QString::number(l, 'g', 6);
            case Ratio: return QString::number(ratio, 'f', 4);
            }
        } else if (role == Qt::TextAlignmentRole) {
            return i.column() == Token ? int(Qt::AlignLeft | Qt::AlignVCenter) : int(Qt::AlignRight | Qt::AlignVCenter);
        } else if (role == Qt::BackgroundRole) {
            if (ratio < tau_) return QColor(76, 174, 76, 60);  // tau would accept it
        } else if (role == Qt::FontRole) {
            if (t == chosen_) {
                QFont f;
                f.setBold(true);
                return f;
            }
        } else if (role == Qt::ToolTipRole) {
            // Plain text made markup, so a piece such as <s> shows as itself.
            return Qt::convertFromPlainText(tr("L_q(prefix + '%1') = %2, %3 x L_q(prefix)%4")
                                                .arg(vocab_ ? vocab_->value(t) : QString::number(t))
                                                .arg(l, 0, 'g', 8)
                                                .arg(ratio, 0, 'f', 5)
                                                .arg(t == chosen_ ? tr(" — appended") : QString()));
        }
        return {};
    }

private:
    SearchScoresPtr scores_;
    std::shared_ptr<const QStringList> vocab_;
    std::vector<int> rows_;
    double tau_ = 0.5;
    int chosen_ = -1;
};

namespace {
QSpinBox* spin(int lo, int hi, int value, const QString& special = {}) {
    auto* s = new QSpinBox;
    s->setRange(lo, hi);
    s->setValue(value);
    if (!special.isEmpty()) s->setSpecialValueText(special);
    return s;
}
}  // namespace

SearchPanel::SearchPanel(QWidget* parent) : QWidget(parent) {
    auto* v = new QVBoxLayout(this);
    v->setContentsMargins(6, 6, 6, 6);

    // Settings, two columns, folding away behind a summary line.
    auto* fold_row = new QHBoxLayout;
    fold_ = new QToolButton;
    fold_->setObjectName("searchSettingsFold");
    fold_->setText(tr("Settings"));
    fold_->setCheckable(true);
    fold_->setChecked(true);
    fold_->setArrowType(Qt::DownArrow);
    fold_->setToolButtonStyle(Qt::ToolButtonTextBesideIcon);
    fold_->setAutoRaise(true);
    summary_ = new QLabel;
    summary_->setObjectName("searchSettingsSummary");
    summary_->setTextFormat(Qt::PlainText);
    summary_->setStyleSheet("color: gray");
    summary_->setSizePolicy(QSizePolicy::Ignored, QSizePolicy::Preferred);  // elided by the dock's width
    fold_row->addWidget(fold_);
    fold_row->addWidget(summary_, 1);
    v->addLayout(fold_row);
    settings_box_ = new QWidget;
    auto* grid = new QGridLayout(settings_box_);
    grid->setContentsMargins(0, 0, 0, 0);
    grid->setHorizontalSpacing(8);
    grid->setVerticalSpacing(3);
    start_ = new QComboBox;
    start_->setObjectName("searchStart");
    start_->addItem("<bos>", "bos");
    start_->addItem("<bos> \\n", "newline");
    tau_ = new QDoubleSpinBox;
    tau_->setObjectName("searchTau");
    tau_->setRange(0.01, 1.0);
    tau_->setSingleStep(0.05);
    tau_->setDecimals(2);
    tau_->setToolTip(tr("Accept t* when L_q(prefix + t*) < tau x L_q(prefix)"));
    max_prefix_ = spin(1, 64, cushion::kDefaultMaxPrefix);
    max_prefix_->setObjectName("searchMaxPrefix");
    sample_ = spin(0, 1 << 20, 0, tr("auto (≤ 512)"));
    sample_->setObjectName("searchSample");
    sample_->setToolTip(tr("Tokens of the calibration sample each candidate is scored on"));
    bits_ = new QComboBox;
    for (int b : {8, 6, 4}) bits_->addItem(QString::number(b), b);
    kind_ = new QComboBox;
    kind_->setObjectName("searchKind");
    kind_->addItem(tr("automatic"), false);  // the core's rule: exhaustive up to 2 TFLOP a step, the fast step above
    kind_->addItem(tr("pruned"), true);
    kind_->setToolTip(tr("Automatic: exhaustive steps (every candidate on the whole sample) when a step costs at most "
                         "2 TFLOP, else fast steps (every candidate screened at one token's forward pass, the best 16 "
                         "re-scored on the whole sample), as `cushion calibrate`.\nPruned: score every candidate on a "
                         "window of the sample, re-score the best on the whole sample"));
    window_ = spin(1, 1 << 20, 64);
    window_->setObjectName("searchWindow");
    keep_ = spin(1, 1 << 20, 16);
    keep_->setObjectName("searchKeep");
    candidates_ = new QLineEdit;
    candidates_->setObjectName("searchCandidates");
    candidates_->setPlaceholderText(tr("all non-special tokens (or ids: 3-100,200)"));
    memory_ = spin(0, 1 << 20, 0);
    memory_->setSuffix(" MiB");
    memory_->setSpecialValueText(tr("automatic"));  // 0: sized from the device's free memory, as `cushion calibrate`
    memory_->setObjectName("searchMemory");
    int r = 0;
    addSettingsRow(grid, r, tr("Start"), start_, tr("tau"), tau_);
    addSettingsRow(grid, r, tr("Max prefix"), max_prefix_, tr("Sample"), sample_);
    addSettingsRow(grid, r, tr("Steps"), kind_, tr("L_q bits"), bits_);
    addSettingsRow(grid, r, tr("Window"), window_, tr("Keep"), keep_);
    grid->addWidget(new QLabel(tr("Candidates")), r, 0);
    grid->addWidget(candidates_, r, 1, 1, 3);
    ++r;
    addSettingsRow(grid, r, tr("Batch memory"), memory_, QString(), nullptr);
    grid->setColumnStretch(1, 1);
    grid->setColumnStretch(3, 1);
    v->addWidget(settings_box_);
    connect(fold_, &QToolButton::toggled, this, [this](bool on) { setSettingsVisible(on); });

    new_ = namedButton(tr("New"), "searchNew", tr("Start a new search with these settings on the calibration text"));
    step_ = namedButton(tr("Step"), "searchStep", tr("Score every candidate and accept the best, or stop (F6)"));
    score_ = namedButton(tr("Score"), "searchScore", tr("Score the candidates without changing the prefix"));
    run_ = namedButton(tr("Run"), "searchRun", tr("Step until the search stops (F7)"));
    pause_ = namedButton(tr("Pause"), "searchPause", tr("Stop after the current step"));
    cancel_ = namedButton(tr("Cancel"), "searchCancel", tr("Interrupt the current step; the search stays as before it"));
    accept_ = namedButton(tr("Accept best"), "searchAccept", tr("Append the scored best candidate"));
    use_ = namedButton(tr("Use selected"), "searchUse", tr("Append the selected candidate instead (an override)"));
    undo_ = namedButton(tr("Undo"), "searchUndo", tr("Undo the last step: remove its token, or its stop (Shift+F6)"));
    v->addLayout(buttonGrid({{new_, step_, score_}, {run_, pause_, cancel_}, {accept_, use_, undo_}}));
    bar_ = thinProgressBar();
    v->addWidget(bar_);
    state_ = new QLabel;
    state_->setObjectName("searchState");
    state_->setTextFormat(Qt::PlainText);
    state_->setWordWrap(true);
    state_->setStyleSheet("color: gray");
    v->addWidget(state_);

    prefix_ = new QLabel(tr("Prefix: –"));
    prefix_->setObjectName("searchPrefix");
    prefix_->setTextFormat(Qt::PlainText);  // pieces like <s> are not markup
    prefix_->setWordWrap(true);
    prefix_->setTextInteractionFlags(Qt::TextSelectableByMouse);
    QFont big = prefix_->font();
    big.setPointSizeF(big.pointSizeF() * 1.15);
    big.setBold(true);
    prefix_->setFont(big);
    loss_ = new QLabel;
    loss_->setObjectName("searchLoss");
    loss_->setTextFormat(Qt::PlainText);
    loss_->setWordWrap(true);
    decision_ = new QLabel;
    decision_->setObjectName("searchDecision");
    decision_->setTextFormat(Qt::PlainText);
    decision_->setWordWrap(true);
    decision_->setTextInteractionFlags(Qt::TextSelectableByMouse);
    v->addWidget(prefix_);
    v->addWidget(loss_);
    v->addWidget(decision_);

    auto* split = new QSplitter(Qt::Vertical);
    auto* table_box = new QWidget;
    auto* tv = new QVBoxLayout(table_box);
    tv->setContentsMargins(0, 0, 0, 0);
    table_note_ = new QLabel;
    table_note_->setTextFormat(Qt::PlainText);
    table_note_->setStyleSheet("color: gray");
    table_note_->setWordWrap(true);
    tv->addWidget(table_note_);
    table_ = new QTableView;
    table_->setObjectName("candidateTable");
    model_ = new CandidateModel(this);
    table_->setModel(model_);
    table_->setSelectionBehavior(QAbstractItemView::SelectRows);
    table_->setSelectionMode(QAbstractItemView::SingleSelection);
    table_->verticalHeader()->hide();
    table_->verticalHeader()->setDefaultSectionSize(20);
    table_->horizontalHeader()->setStretchLastSection(true);
    table_->horizontalHeader()->setSectionResizeMode(CandidateModel::Token, QHeaderView::Stretch);
    table_->setAlternatingRowColors(true);
    tv->addWidget(table_);
    split->addWidget(table_box);

    auto* chart = new QChart;
    chart->setTitle(tr("L_q of every candidate"));
    chart->setAnimationOptions(QChart::NoAnimation);
    chart->legend()->setAlignment(Qt::AlignBottom);
    QFont lf = chart->legend()->font();
    lf.setPointSizeF(lf.pointSizeF() * 0.85);
    chart->legend()->setFont(lf);
    chart->setMargins(QMargins(0, 0, 0, 0));
    QFont tf = chart->titleFont();
    tf.setPointSizeF(tf.pointSizeF() * 0.9);
    chart->setTitleFont(tf);
    hist_view_ = new QChartView(chart);
    hist_view_->setObjectName("candidateHistogram");
    hist_view_->setRenderHint(QPainter::Antialiasing);
    hist_view_->setMinimumHeight(150);
    split->addWidget(hist_view_);

    history_ = new QTableWidget(0, 4);
    history_->setObjectName("searchHistory");
    history_->setHorizontalHeaderLabels({tr("step"), tr("token"), tr("L_q before → after"), tr("decision")});
    history_->verticalHeader()->hide();
    history_->verticalHeader()->setDefaultSectionSize(20);
    history_->horizontalHeader()->setStretchLastSection(true);
    history_->setEditTriggers(QAbstractItemView::NoEditTriggers);
    history_->setMinimumHeight(50);
    split->addWidget(history_);
    split->setStretchFactor(0, 2);
    split->setStretchFactor(1, 2);
    split->setStretchFactor(2, 1);
    split->setSizes({200, 230, 70});
    v->addWidget(split, 1);

    connect(new_, &QPushButton::clicked, this, &SearchPanel::newRequested);
    connect(step_, &QPushButton::clicked, this, &SearchPanel::stepRequested);
    connect(score_, &QPushButton::clicked, this, &SearchPanel::scoreRequested);
    connect(run_, &QPushButton::clicked, this, &SearchPanel::runRequested);
    connect(pause_, &QPushButton::clicked, this, &SearchPanel::pauseRequested);
    connect(cancel_, &QPushButton::clicked, this, &SearchPanel::cancelRequested);
    connect(accept_, &QPushButton::clicked, this, &SearchPanel::acceptRequested);
    connect(undo_, &QPushButton::clicked, this, &SearchPanel::undoRequested);
    connect(use_, &QPushButton::clicked, this, [this] {
        const int mode = useSelectedMode();
        if (mode >= 0) emit useRequested(selectedToken(), mode == 1);
    });
    connect(table_->selectionModel(), &QItemSelectionModel::selectionChanged, this, [this] { updateButtons(); });
    connect(table_, &QTableView::doubleClicked, this, [this] {
        if (use_->isEnabled()) use_->click();
    });
    auto sync = [this] {
        const bool p = kind_->currentData().toBool();
        window_->setEnabled(p);
        keep_->setEnabled(p);
    };
    connect(kind_, &QComboBox::currentIndexChanged, this, sync);
    for (QComboBox* c : {start_, kind_, bits_}) connect(c, &QComboBox::currentIndexChanged, this, [this] { updateSummary(); });
    connect(tau_, &QDoubleSpinBox::valueChanged, this, [this] { updateSummary(); });
    for (QSpinBox* b : {max_prefix_, sample_, window_, keep_, memory_})
        connect(b, &QSpinBox::valueChanged, this, [this] { updateSummary(); });
    connect(candidates_, &QLineEdit::textChanged, this, [this] { updateSummary(); });
    setSettings(SearchSettings{});
    sync();
    setSnapshot(nullptr);
}

SearchSettings SearchPanel::settings() const {
    SearchSettings s;
    s.start = start_->currentData().toString();
    s.tau = tau_->value();
    s.max_prefix = max_prefix_->value();
    s.sample_tokens = sample_->value();
    s.bits = bits_->currentData().toInt();
    s.pruned = kind_->currentData().toBool();
    s.prune_window = window_->value();
    s.prune_keep = keep_->value();
    s.candidates = candidates_->text().trimmed();
    s.memory_mb = memory_->value();
    return s;
}

void SearchPanel::setSettings(const SearchSettings& s) {
    start_->setCurrentIndex(std::max(0, start_->findData(s.start)));
    tau_->setValue(s.tau);
    max_prefix_->setValue(s.max_prefix);
    sample_->setValue(s.sample_tokens);
    bits_->setCurrentIndex(std::max(0, bits_->findData(s.bits)));
    kind_->setCurrentIndex(s.pruned ? 1 : 0);
    window_->setValue(s.prune_window);
    keep_->setValue(s.prune_keep);
    candidates_->setText(s.candidates);
    memory_->setValue(s.memory_mb);
}

bool SearchPanel::pruned() const { return kind_->currentData().toBool(); }

void SearchPanel::setSettingsVisible(bool on) {
    settings_box_->setVisible(on);
    fold_->setArrowType(on ? Qt::DownArrow : Qt::RightArrow);
    if (fold_->isChecked() != on) fold_->setChecked(on);
    summary_->setVisible(!on);
}

bool SearchPanel::settingsVisible() const { return settings_box_->isVisible() || fold_->isChecked(); }

void SearchPanel::updateSummary() {
    const SearchSettings s = settings();
    summary_->setText(tr("tau %1, ≤ %2 tokens, sample %3, %4%5, candidates %6")
                          .arg(s.tau, 0, 'g', 3)
                          .arg(s.max_prefix)
                          .arg(s.sample_tokens > 0 ? QString::number(s.sample_tokens) : tr("auto"))
                          .arg(s.pruned ? tr("pruned") : tr("automatic"))
                          .arg(s.pruned ? QString(" %1/%2").arg(s.prune_window).arg(s.prune_keep) : QString())
                          .arg(s.candidates.isEmpty() ? tr("all") : s.candidates));
    summary_->setToolTip(summary_->text());
}

void SearchPanel::setModelAvailable(bool on) {
    has_model_ = on;
    updateButtons();
}

void SearchPanel::setBusy(bool busy, bool running) {
    busy_ = busy;
    running_ = running;
    bar_->setVisible(busy);
    if (busy) bar_->setValue(0);
    updateButtons();
}

void SearchPanel::setProgress(double f, const QString& what) {
    setProgressValue(bar_, static_cast<int>(f * 1000));
    state_->setText(QString("%1 (%2%)").arg(what).arg(static_cast<int>(f * 100)));
}

void SearchPanel::setFailed(const QString& m) { state_->setText(tr("Failed: %1").arg(m)); }
void SearchPanel::setCancelled() { state_->setText(tr("Cancelled: the search is as before the step")); }
void SearchPanel::setNote(const QString& note) { state_->setText(note); }

int SearchPanel::selectedToken() const {
    const QModelIndexList rows = table_->selectionModel()->selectedRows();
    return rows.isEmpty() ? -1 : model_->tokenAt(rows.first().row());
}

bool SearchPanel::selectCandidate(int token) {
    const int row = model_->rowOf(token);
    if (row < 0) return false;
    table_->selectRow(row);
    table_->scrollTo(model_->index(row, 0));
    return true;
}

int SearchPanel::candidateRows() const { return model_->rowCount(); }
int SearchPanel::candidateAt(int row) const { return model_->tokenAt(row); }

int SearchPanel::useSelectedMode() const {
    if (!snap_ || !snap_->scores || selectedToken() < 0) return -1;
    const auto& sp = snap_->scores->scored_prefix;
    const auto& p = snap_->prefix;
    if (p == sp) return static_cast<int>(p.size()) < snap_->settings.max_prefix ? 0 : -1;
    // Right after the committed step these scores produced: replace its token.
    if (p.size() == sp.size() + 1 && std::equal(sp.begin(), sp.end(), p.begin()) && !snap_->history.empty() &&
        snap_->history.back().token == p.back())
        return p.back() == selectedToken() ? -1 : 1;
    return -1;
}

QString SearchPanel::decisionText() const { return decision_->text(); }
QString SearchPanel::prefixText() const { return prefix_->text(); }

void SearchPanel::updateButtons() {
    const bool idle = has_model_ && !busy_;
    const bool has = snap_ != nullptr;
    new_->setEnabled(idle);
    step_->setEnabled(idle && (!has || !snap_->done));
    run_->setEnabled(idle && (!has || !snap_->done));
    score_->setEnabled(idle && (!has || static_cast<int>(snap_->prefix.size()) < snap_->settings.max_prefix));
    pause_->setEnabled(busy_ && running_);
    cancel_->setEnabled(busy_);
    // Accept commits a Score pass (not a step's scores, already committed: after a step that stopped, or an undo, the
    // worker has nothing to commit; found by the monkey test, tests/gui/test_monkey.cpp).
    accept_->setEnabled(idle && has && snap_->scores && !snap_->scores->committed && snap_->scores->best_token >= 0 &&
                        snap_->scores->scored_prefix == snap_->prefix &&
                        static_cast<int>(snap_->prefix.size()) < snap_->settings.max_prefix);
    use_->setEnabled(idle && useSelectedMode() >= 0);
    use_->setText(useSelectedMode() == 1 ? tr("Use selected instead") : tr("Use selected"));
    undo_->setEnabled(idle && has && snap_->canUndo());
    for (QWidget* w : std::initializer_list<QWidget*>{start_, tau_, max_prefix_, sample_, bits_, candidates_, memory_})
        w->setEnabled(!busy_);
}

void SearchPanel::setSnapshot(const SearchSnapshotPtr& snap) {
    snap_ = snap;
    const int selected = selectedToken();
    if (!snap) {
        prefix_->setText(tr("Prefix: – (press Step, Score or Run to start a search on the calibration text)"));
        loss_->clear();
        decision_->clear();
        table_note_->clear();
        model_->setScores(nullptr, nullptr, 0.5, -1);
        updateHistogram();
        updateHistory();
        updateButtons();
        return;
    }
    if (!folded_once_) {
        folded_once_ = true;  // room for the candidates; the arrow brings the settings back
        setSettingsVisible(false);
    }
    prefix_->setText(tr("Prefix (%1 tokens): %2").arg(snap->prefix.size()).arg(snap->prefixText()));
    loss_->setText(tr("L_q %1 (start %2, x%3) · %4 candidates, sample of %5 tokens")
                       .arg(snap->loss, 0, 'g', 6)
                       .arg(snap->initial_loss, 0, 'g', 6)
                       .arg(snap->initial_loss > 0 ? snap->loss / snap->initial_loss : 1.0, 0, 'f', 4)
                       .arg(snap->candidates)
                       .arg(snap->sample_tokens));
    QString decision;
    QString colour = "#4cae4c";
    const SearchScores* sc = snap->scores.get();
    if (snap->done) {
        colour = "#d9822b";
        decision = tr("Stopped (%1). ").arg(snap->stop);
    }
    if (sc) {
        const bool current = sc->scored_prefix == snap->prefix;
        const QString best = sc->best_token >= 0 ? "'" + snap->vocab->value(sc->best_token) + "'" : QString("–");
        const double ratio = sc->loss_before > 0 ? sc->best_loss / sc->loss_before : 0;
        QString tau_says = sc->best_token < 0 ? tr("no candidate scored")
                           : sc->accepted     ? tr("best %1 gives x%2 < tau %3: accept").arg(best).arg(ratio, 0, 'f', 4).arg(snap->settings.tau)
                                              : tr("best %1 gives x%2 ≥ tau %3: stop").arg(best).arg(ratio, 0, 'f', 4).arg(snap->settings.tau);
        if (sc->stop == "max-length") tau_says = tr("the prefix has the maximum length");
        if (!sc->accepted) colour = "#d9822b";
        decision += (sc->committed ? tr("Step %1: ").arg(sc->step) : tr("Scored (not committed): ")) + tau_says;
        if (!current && !sc->committed) decision += tr(" — for an earlier prefix");
        const auto finite = [](const std::vector<double>& v) {
            return std::count_if(v.begin(), v.end(), [](double x) { return std::isfinite(x); });
        };
        table_note_->setText(
            sc->fast ? tr("Fast step: %1 candidates screened (about one token's forward pass each), the best %2 re-scored on "
                          "the whole sample (listed) in %3 s")
                           .arg(finite(sc->window_loss))
                           .arg(sc->shortlist.size())
                           .arg(sc->seconds, 0, 'f', 2)
            : sc->pruned ? tr("Pruned step: %1 candidates on a %2-token window, the best %3 re-scored on the whole sample (listed)")
                             .arg(std::count_if(sc->window_loss.begin(), sc->window_loss.end(), [](double x) { return std::isfinite(x); }))
                             .arg(sc->window_tokens)
                             .arg(sc->shortlist.size())
                       : tr("%1 candidates scored on the whole sample in %2 s (batches of %3)")
                             .arg(sc->evaluated)
                             .arg(sc->seconds, 0, 'f', 2)
                             .arg(sc->batch));
    } else {
        decision += snap->last_action;
        table_note_->clear();
    }
    decision_->setText(decision);
    decision_->setStyleSheet("color: " + colour);
    // The token appended after the scored prefix (if any), in bold.
    int chosen = -1;
    if (sc && snap->prefix.size() > sc->scored_prefix.size() &&
        std::equal(sc->scored_prefix.begin(), sc->scored_prefix.end(), snap->prefix.begin()))
        chosen = snap->prefix[sc->scored_prefix.size()];
    model_->setScores(snap->scores, snap->vocab, snap->settings.tau, chosen);
    if (selected >= 0) selectCandidate(selected);
    table_->resizeColumnToContents(CandidateModel::Rank);
    table_->resizeColumnToContents(CandidateModel::Id);
    table_->resizeColumnToContents(CandidateModel::Loss);
    state_->setText(snap->last_action);
    updateHistogram();
    updateHistory();
    updateButtons();
}

void SearchPanel::updateHistogram() {
    QChart* chart = hist_view_->chart();
    chart->removeAllSeries();
    for (QAbstractAxis* a : chart->axes()) {
        chart->removeAxis(a);
        delete a;
    }
    const SearchScores* sc = snap_ ? snap_->scores.get() : nullptr;
    if (!sc) {
        chart->setTitle(tr("L_q of every candidate"));
        return;
    }
    // Exhaustive: every candidate's L_q on the sample; pruned: every candidate's L_q on the window; fast: every
    // candidate's screen estimate of L_q(prefix + t) (in both, the whole-sample figures exist for the shortlist only,
    // in the table; the "best" line is the best re-scored one's exact L_q).
    const std::vector<double>& src = sc->pruned || sc->fast ? sc->window_loss : sc->loss;
    std::vector<double> vals;
    for (double x : src)
        if (std::isfinite(x) && x > 0) vals.push_back(x);
    if (vals.empty()) return;
    chart->setTitle(sc->pruned ? tr("L_q of %1 candidates on the %2-token window").arg(vals.size()).arg(sc->window_tokens)
                    : sc->fast ? tr("Screen's estimate of L_q, %1 candidates (best %2 re-scored: table)")
                                     .arg(vals.size())
                                     .arg(sc->shortlist.size())
                               : tr("L_q of %1 candidates").arg(vals.size()));
    const auto [mn_it, mx_it] = std::minmax_element(vals.begin(), vals.end());
    double lo = *mn_it, hi = *mx_it;
    const bool markers = !sc->pruned && sc->loss_before > 0;
    if (sc->fast && sc->best_token >= 0) {
        lo = std::min(lo, sc->best_loss);
        hi = std::max(hi, sc->best_loss);
    }
    const double tau_line = snap_->settings.tau * sc->loss_before;
    if (markers) {
        lo = std::min({lo, tau_line, sc->loss_before});
        hi = std::max({hi, sc->loss_before});
    }
    const bool logx = lo > 0 && hi / lo > 30;
    const int bins = std::clamp(static_cast<int>(std::sqrt(double(vals.size())) * 2), 8, 60);
    auto fwd = [&](double x) { return logx ? std::log10(x) : x; };
    auto back = [&](double u) { return logx ? std::pow(10.0, u) : u; };
    double u0 = fwd(lo), u1 = fwd(hi);
    if (u1 <= u0) {
        u0 -= 0.5;
        u1 += 0.5;
        if (!logx) u0 = std::max(u0, 0.0);
    }
    const double pad = (u1 - u0) * 0.02;
    u0 -= pad;
    u1 += pad;
    std::vector<int> count(bins, 0);
    for (double x : vals) count[std::clamp(static_cast<int>((fwd(x) - u0) / (u1 - u0) * bins), 0, bins - 1)]++;
    int top = *std::max_element(count.begin(), count.end());
    auto* upper = new QLineSeries;
    auto* lower = new QLineSeries;
    for (int b = 0; b < bins; ++b) {
        const double x0 = back(u0 + (u1 - u0) * b / bins), x1 = back(u0 + (u1 - u0) * (b + 1) / bins);
        upper->append(x0, count[b]);
        upper->append(x1, count[b]);
        lower->append(x0, 0);
        lower->append(x1, 0);
    }
    auto* area = new QAreaSeries(upper, lower);
    area->setName(tr("candidates"));
    area->setColor(QColor(91, 141, 214, 170));
    area->setBorderColor(QColor(60, 100, 170));
    QAbstractAxis* x;
    if (logx) {
        auto* lx = new QLogValueAxis;
        lx->setBase(10);
        lx->setRange(back(u0), back(u1));
        lx->setLabelFormat("%.3g");
        lx->setMinorTickCount(0);
        x = lx;
    } else {
        auto* vx = new QValueAxis;
        vx->setRange(back(u0), back(u1));
        vx->setLabelFormat("%.4g");
        vx->setTickCount(4);
        x = vx;
    }
    x->setTitleText(sc->pruned ? tr("L_q (window)") : sc->fast ? tr("L_q(prefix + t), screen estimate") : tr("L_q(prefix + t)"));
    QFont af = x->labelsFont();
    af.setPointSizeF(af.pointSizeF() * 0.85);
    x->setLabelsFont(af);
    auto* y = new QValueAxis;
    y->setRange(0, top * 1.1 + 0.5);
    y->setLabelFormat("%d");
    y->setTickCount(3);
    y->setTitleText(tr("tokens"));
    y->setLabelsFont(af);
    chart->addAxis(x, Qt::AlignBottom);
    chart->addAxis(y, Qt::AlignLeft);
    chart->addSeries(area);
    area->attachAxis(x);
    area->attachAxis(y);
    auto vline = [&](double at, const QString& name, const QColor& c, Qt::PenStyle style) {
        auto* s = new QLineSeries;
        s->setName(name);
        s->append(at, 0);
        s->append(at, top * 1.1 + 0.5);
        QPen pen(c);
        pen.setWidthF(2);
        pen.setStyle(style);
        s->setPen(pen);
        chart->addSeries(s);
        s->attachAxis(x);
        s->attachAxis(y);
    };
    if (markers) {
        vline(sc->loss_before, tr("prefix"), QColor(120, 120, 120), Qt::DashLine);
        vline(tau_line, tr("tau x prefix"), QColor(217, 130, 43), Qt::DashLine);
    }
    if (!sc->pruned && sc->best_token >= 0)
        vline(sc->best_loss, sc->fast ? tr("best (re-scored)") : tr("best"), QColor(76, 174, 76), Qt::SolidLine);
    chart->legend()->setVisible(chart->series().size() > 1);
}

void SearchPanel::updateHistory() {
    history_->setRowCount(0);
    if (!snap_) return;
    const auto& h = snap_->history;
    history_->setRowCount(static_cast<int>(h.size()));
    for (int i = 0; i < static_cast<int>(h.size()); ++i) {
        const SearchHistoryRow& e = h[i];
        QString decision = e.token >= 0 ? (e.overridden ? tr("override") : tr("accepted")) : tr("stop: %1").arg(e.stop);
        if (e.pruned) decision += tr(" (pruned)");
        const QStringList cells = {QString::number(e.step), e.token >= 0 ? QString("'%1' (%2)").arg(e.piece).arg(e.token) : QString("–"),
                                   QString("%1 → %2").arg(e.before, 0, 'g', 5).arg(e.after, 0, 'g', 5), decision};
        for (int c = 0; c < 4; ++c) history_->setItem(i, c, new QTableWidgetItem(cells[c]));
    }
    history_->resizeColumnsToContents();
    history_->scrollToBottom();
}

}  // namespace studio
