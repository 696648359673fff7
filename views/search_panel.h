// The greedy search panel (step 1 of CushionCache, core/greedy_search.h), stepped by hand or run:
//   - settings: start token, tau, maximum prefix, sample length, L_q bits, exhaustive or pruned steps
//     (window, keep), a candidate subset, memory per batch;
//   - Step (score every candidate, accept t* or stop), Score (show the candidates without committing),
//     Run (steps until the search stops, Pause takes effect after the current step), Cancel (interrupts
//     the current step; the search stays as before it);
//   - after each scoring: the candidates sorted by L_q (token text, L_q, ratio to L_q of the current
//     prefix), a histogram of every candidate's L_q with the current L_q and tau's threshold marked, the
//     prefix so far and tau's decision;
//   - Accept best (commit the scored best), Use selected (append the selected candidate instead:
//     override_step; right after a committed step it replaces that step's token), Undo (remove the last
//     appended token).
// The panel only shows snapshots and emits requests; MainWindow posts them to the SearchWorker.
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
class QSpinBox;
class QTableView;
class QToolButton;
class QTableWidget;
class QChartView;

namespace studio {

class CandidateModel;

class SearchPanel : public QWidget {
    Q_OBJECT
public:
    explicit SearchPanel(QWidget* parent = nullptr);

    SearchSettings settings() const;
    void setSettings(const SearchSettings& s);
    bool pruned() const;  // the step kind chosen now

    void setModelAvailable(bool on);
    // busy: a search job is running; running: Run is looping (Pause is possible).
    void setBusy(bool busy, bool running);
    void setProgress(double fraction, const QString& what);
    void setSnapshot(const SearchSnapshotPtr& snap);  // null: no search
    void setFailed(const QString& message);
    void setCancelled();
    void setNote(const QString& note);

    SearchSnapshotPtr snapshot() const { return snap_; }
    int selectedToken() const;             // -1: none
    bool selectCandidate(int token);       // selects its row; false if it is not in the table
    int candidateRows() const;
    int candidateAt(int row) const;        // token id of a table row (sorted by L_q)
    // Use selected replaces the last step (true) or appends after the scored prefix (false); -1 if not possible.
    int useSelectedMode() const;
    QString decisionText() const;
    QString prefixText() const;
    // The settings box folds away (a summary line stays) once a search exists; the arrow unfolds it.
    void setSettingsVisible(bool on);
    bool settingsVisible() const;

    QPushButton* newButton() const { return new_; }
    QPushButton* stepButton() const { return step_; }
    QPushButton* scoreButton() const { return score_; }
    QPushButton* runButton() const { return run_; }
    QPushButton* pauseButton() const { return pause_; }
    QPushButton* cancelButton() const { return cancel_; }
    QPushButton* acceptButton() const { return accept_; }
    QPushButton* useButton() const { return use_; }
    QPushButton* undoButton() const { return undo_; }
    QTableView* candidateView() const { return table_; }
    QChartView* histogramView() const { return hist_view_; }
    QTableWidget* historyView() const { return history_; }

signals:
    void newRequested();
    void stepRequested();
    void scoreRequested();
    void runRequested();
    void pauseRequested();
    void cancelRequested();
    void acceptRequested();
    void useRequested(int token, bool replace_last);
    void undoRequested();

private:
    void updateButtons();
    void updateHistogram();
    void updateHistory();

    void updateSummary();
    QToolButton* fold_;
    QLabel* summary_;
    QWidget* settings_box_;
    bool folded_once_ = false;
    QComboBox *start_, *kind_, *bits_;
    QDoubleSpinBox* tau_;
    QSpinBox *max_prefix_, *sample_, *window_, *keep_, *memory_;
    QLineEdit* candidates_;
    QPushButton *new_, *step_, *score_, *run_, *pause_, *cancel_, *accept_, *use_, *undo_;
    QProgressBar* bar_;
    QLabel *state_, *prefix_, *loss_, *decision_, *table_note_;
    QTableView* table_;
    CandidateModel* model_;
    QChartView* hist_view_;
    QTableWidget* history_;
    SearchSnapshotPtr snap_;
    bool has_model_ = false, busy_ = false, running_ = false;
};

}  // namespace studio
