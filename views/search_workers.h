// CushionCache's own work in the studio — the greedy prefix search, prefix tuning, exporting a package and
// saving a session's cushion — as workers on their own QThreads, in the pattern of workers.h:
//   - every job runs on the worker's thread (WorkerThreads::post), one step per job, so the GUI decides
//     between steps whether to go on (Run), stop (Pause) or not (Step);
//   - Cancel interrupts the running step through the engine's ProgressFn; a cancelled step leaves the
//     engine exactly as before it (GreedySearch and PrefixTuner guarantee it);
//   - the worker owns the mutable engine objects (GreedySearch, PrefixTuner); views get immutable
//     snapshots (std::shared_ptr<const ...>) and never touch a tensor. A cushion travels as an opaque
//     std::shared_ptr<const cushion::Cushion> between workers.
// No tensor header here: only search_workers.cpp includes the engine.
#pragma once
#include <QMetaType>
#include <QString>
#include <QStringList>

#include <limits>
#include <memory>
#include <vector>

#include "workers.h"

namespace cushion {
struct Cushion;
}

namespace studio {

using CushionPtr = std::shared_ptr<const cushion::Cushion>;

// The search settings as the panel edits them (mirrors cushion::GreedySearchOptions).
struct SearchSettings {
    QString start = "bos";  // "bos" or "newline" (<bos> is put first when the model has one)
    double tau = 0.5;
    int max_prefix = 4;
    int sample_tokens = 0;  // 0 = cushion::default_sample_tokens (min(512, context - max_prefix))
    int bits = 8;           // bits of L_q's quantizer
    bool pruned = false;    // Step / Run use pruned steps (window, then re-score the best)
    int prune_window = 64;
    int prune_keep = 16;
    QString candidates;     // "" = every non-special token; else ids and ranges "3-100,200"
    int memory_mb = 256;    // transient memory per candidate batch
    bool operator==(const SearchSettings& o) const;
};

struct TuneSettings {
    int epochs = 2;
    int batch = 4;
    double lr = 1e-3;
    double lambda = 0.01;
    int seed = 0;
    int doc_tokens = 0;  // 0 = whole documents (up to the context); > 0: each calibration document cut to this
    int eval_docs = 0;   // documents of the evaluation text for the perplexities; 0 = all
};

// One candidate scoring (a step or a score-only pass) as the views show it.
struct SearchScores {
    int step = 0;
    bool pruned = false;
    bool committed = false;           // a step() that changed the search; false: score() only (nothing changed)
    std::vector<int> scored_prefix;   // the prefix the candidates were scored after
    std::vector<double> loss;         // (V) L_q(prefix + t) on the whole sample; NaN where not scored
    std::vector<double> window_loss;  // pruned: (V) L_q on the pruning window; NaN where not scored
    std::vector<int> shortlist;       // pruned: re-scored candidates, best first
    int best_token = -1;
    double best_loss = 0;
    double loss_before = 0;           // L_q(scored_prefix)
    bool accepted = false;            // tau's decision: best_loss < tau * loss_before
    QString stop;                     // "no-improvement", "max-length", ... when not accepted
    QString reason;
    qint64 evaluated = 0, batch = 0, window_tokens = 0;
    double seconds = 0;
};
using SearchScoresPtr = std::shared_ptr<const SearchScores>;

struct SearchHistoryRow {
    int step = 0;
    int token = -1;  // -1: a stop
    QString piece;
    double before = 0, after = 0, best = 0;
    bool accepted = false, overridden = false, pruned = false;
    QString stop;
    double seconds = 0;
};

struct SearchSnapshot {
    quint64 serial = 0;
    const void* model_key = nullptr;
    SearchSettings settings;
    QString calib_path;
    std::vector<int> start, prefix;
    QStringList prefix_pieces;   // printable
    double loss = 0, initial_loss = 0;
    bool done = false;
    QString stop;                // stop reason name, "" while the search goes on
    qint64 candidates = 0, sample_tokens = 0;
    std::vector<SearchHistoryRow> history;
    SearchScoresPtr scores;      // the last scoring (possibly for the prefix before the last step)
    QString last_action;         // what the last job did, one line
    std::shared_ptr<const QStringList> vocab;  // printable piece of every token id
    CushionPtr cushion;          // the cushion of the current prefix (make_cushion)
    QString state_json;          // GreedySearch::state_json(), for sessions
    bool canUndo() const { return prefix.size() > start.size() || done; }
    QString prefixText() const;  // pieces joined with spaces, quoted
};
using SearchSnapshotPtr = std::shared_ptr<const SearchSnapshot>;

struct SearchRequest {
    ModelInfoPtr model;
    SearchSettings settings;
    QString calib_path;
    QString restore_state;  // non-empty: GreedySearch::restore() this state after creating the search
};

struct TunePoint {
    qint64 step = 0;
    int epoch = 0;
    qint64 batch = 0, batches_per_epoch = 0;
    double ce = 0, lq = 0, total = 0, grad_norm = 0;
    bool epoch_end = false, done = false;
    double seconds = 0;
};

struct TuneSnapshot {
    quint64 serial = 0;
    const void* model_key = nullptr;
    TuneSettings settings;
    std::vector<int> prefix;
    QString prefix_text;
    std::vector<TunePoint> points;
    qint64 total_steps = 0, steps_done = 0, batches_per_epoch = 0, documents = 0;
    bool done = false;
    CushionPtr cushion;  // the tuned cushion now
};
using TuneSnapshotPtr = std::shared_ptr<const TuneSnapshot>;

struct TuneRequest {
    ModelInfoPtr model;
    CushionPtr init;  // the search's cushion
    QString calib_path;
    TuneSettings settings;
    QString state_path;  // non-empty: PrefixTuner::load_state() this file (a session's tuner) after creating it
};

// Perplexity of the evaluation text in full precision and quantized (the quantization panel's scheme,
// static ranges calibrated with the cushion in place), without a cushion, with the search's cushion
// (before tuning) or with the tuned one (after).
enum class PplWhich { None = 0, Before = 1, After = 2 };
struct PplRequest {
    ModelInfoPtr model;
    PplWhich which = PplWhich::None;
    CushionPtr cushion;  // null for None
    // Documents are cut to fit after a cushion of this many tokens (at least the cushion's own length), so
    // the rows with and without a cushion predict the same tokens, as `cushion eval` does.
    qint64 fit_after = 0;
    QuantSettings quant;
    QString calib_path, eval_path;
    int eval_docs = 0;
};
struct PplResult {
    const void* model_key = nullptr;
    PplWhich which = PplWhich::None;
    QString scheme;
    double fp = 0, quant = 0;
    qint64 tokens = 0, docs = 0;
    double seconds = 0;
};
using PplResultPtr = std::shared_ptr<const PplResult>;

struct ExportRequest {
    ModelInfoPtr model;
    CushionPtr cushion;
    QString dir;
    QuantSettings quant;
    QString calib_path, eval_path;
    int eval_docs = 0;  // 0 = all; measured at export (FP / quantized, without / with the cushion)
    bool overwrite = false;
};
struct ExportResult {
    QString dir, describe;
    double ppl_fp = 0, ppl_fp_cushion = 0, ppl_quant = 0, ppl_quant_cushion = 0;
    qint64 eval_tokens = 0, bytes = 0, fp32_weight_bytes = 0, package_weight_bytes = 0;
    QStringList notes;
    double seconds = 0;
};
using ExportResultPtr = std::shared_ptr<const ExportResult>;

class SearchWorker : public Worker {
    Q_OBJECT
public:
    explicit SearchWorker(QObject* parent = nullptr);
    ~SearchWorker() override;
    // Each runs on the worker's thread and ends with updated() (or failed()/cancelled(), state unchanged).
    void start(const SearchRequest& req);            // a new search (or one restored from a session)
    void step(bool pruned);                           // one greedy step: score, then accept t* or stop
    void score(bool pruned);                          // score the candidates only (nothing changes)
    void acceptScored();                              // commit the last scoring's best candidate
    void useToken(int token, bool replace_last);      // append this token instead (override_step)
    void undo();                                      // remove the last appended token (and stops after it)
    void reset();                                     // forget the search (the model changed)
signals:
    void updated(studio::SearchSnapshotPtr snap);

private:
    struct State;
    void publish(const QString& action);
    void requireSearch() const;
    std::unique_ptr<State> s_;
};

class TuneWorker : public Worker {
    Q_OBJECT
public:
    explicit TuneWorker(QObject* parent = nullptr);
    ~TuneWorker() override;
    void start(const TuneRequest& req);  // a new tuner from the search's cushion (or resumed from a file)
    void step();                         // one Adam step on the next batch
    void saveState(const QString& path); // PrefixTuner::save_state (atomic); stateSaved() when written
    void measure(const PplRequest& req); // req.cushion null and which == After: the tuned cushion now
    void reset();
signals:
    void updated(studio::TuneSnapshotPtr snap);
    void measured(studio::PplResultPtr result);
    void stateSaved(const QString& path);

private:
    struct State;
    void publish();
    std::unique_ptr<State> s_;
};

class ExportWorker : public Worker {
    Q_OBJECT
public:
    using Worker::Worker;
    void exportPackage(const ExportRequest& req);
    // Writes the cushion (save_cushion, atomic) then the session JSON (QSaveFile) next to it.
    void saveSession(const QString& path, const QByteArray& json, const CushionPtr& cushion, const QString& cushion_path);
    // Loads a cushion file and checks that it fits the model.
    void loadCushion(const QString& path, const ModelInfoPtr& model);
signals:
    void exported(studio::ExportResultPtr result);
    void sessionSaved(const QString& path);
    void cushionLoaded(studio::CushionPtr cushion, const QString& path);
};

// Printable prefix text of a cushion (pieces as the vocabulary spells them), its length; "" / 0 for null.
QString cushionText(const CushionPtr& c);
qint64 cushionLength(const CushionPtr& c);

}  // namespace studio

Q_DECLARE_METATYPE(studio::SearchSnapshotPtr)
Q_DECLARE_METATYPE(studio::TuneSnapshotPtr)
Q_DECLARE_METATYPE(studio::PplResultPtr)
Q_DECLARE_METATYPE(studio::ExportResultPtr)
Q_DECLARE_METATYPE(studio::CushionPtr)
