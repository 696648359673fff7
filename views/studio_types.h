// The studio's data: what the workers hand the views (immutable snapshots behind std::shared_ptr<const ...>),
// the requests the views post, and the settings the panels edit. No worker class and no tensor header here:
// panels and controllers include this, only the workers include the engine. Engine objects travel opaque
// (cushion::Model, cushion::Cushion); schemes are core's own torch-free QuantConfig.
#pragma once
#include <QMetaType>
#include <QString>
#include <QStringList>

#include <array>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "quant/quant_config.h"  // torch-free: the studio edits core's QuantConfig as it is

namespace cushion {
class Model;
struct Cushion;
}

namespace studio {

constexpr int kSites = 5;  // attn_in, o_in, mlp_in, down_in, residual (cushion::Site order)
QString siteName(int site);   // "attn_in", ...
// Token text on one line: newlines, tabs and other control characters shown as escapes.
QString printableToken(const std::string& utf8);
QString siteLabel(int site);  // "q/k/v in", "o in", "gate/up in", "down in", "residual"

struct PackageInfo;

// A loaded model and what the side panel shows about it.
struct ModelInfo {
    std::shared_ptr<const cushion::Model> model;
    QString path, format, arch, tokenizer, device, dtype, describe;
    qint64 dim = 0, hidden = 0, layers = 0, heads = 0, kv_heads = 0, head_dim = 0, vocab = 0, context = 0;
    double rope_theta = 0;
    qint64 params = 0, weight_bytes = 0;
    QStringList warnings;
    double load_seconds = 0;
    std::shared_ptr<const PackageInfo> package;  // an exported package was opened: the model is its dequantized one
};
using ModelInfoPtr = std::shared_ptr<const ModelInfo>;

// Devices this process can use: "cpu", then "cuda:0", "cuda:1", ... for each GPU found.
QStringList availableDevices();

struct ProbeRequest {
    quint64 id = 0;
    ModelInfoPtr model;
    QString text;
    // Full activations (tokens x channels) are kept for every (layer, site) when they fit in a budget,
    // else only for this one.
    int layer = 0, site = 3;
};

// tokens x channels |x| of one (layer, site), stored channel-major: values[c * tokens + t].
struct ChannelMap {
    int layer = 0, site = 0, channels = 0, tokens = 0;
    std::vector<float> values;
};

// One probed prompt: everything the heatmaps need, immutable once published.
struct HeatmapData {
    quint64 request_id = 0;
    const void* model_key = nullptr;  // identifies the model it came from
    int layers = 0, tokens = 0;
    std::vector<int> token_ids;
    QStringList token_text;   // text each token contributes (for the strip)
    QStringList token_piece;  // raw vocabulary entries (for the tooltip)
    std::array<std::vector<float>, kSites> token_max;    // [site] layers x tokens, max |x| over channels
    std::array<std::vector<float>, kSites> token_ratio;  // [site] layers x tokens, max |x| / median |x|
    std::vector<ChannelMap> channel_maps;
    bool truncated = false;   // the text was longer than the model's context
    double seconds = 0;
    const ChannelMap* channelMap(int layer, int site) const;
};
using HeatmapDataPtr = std::shared_ptr<const HeatmapData>;

// The prompt probed twice for the before/after view: as typed (with its <bos>), and after a cushion (its KV
// prepended, the text without <bos>: the cushion starts with it). Layer x token maps of every site only.
struct CompareRequest {
    quint64 id = 0;
    ModelInfoPtr model;
    QString text;
    std::shared_ptr<const cushion::Cushion> cushion;
};
struct CompareData {
    quint64 request_id = 0;
    const void* model_key = nullptr;
    HeatmapDataPtr before, after;
    QString prefix_text;   // the cushion's pieces
    int prefix_len = 0;
};
using CompareDataPtr = std::shared_ptr<const CompareData>;

constexpr double kDefaultSmoothQuantAlpha = 0.8;  // SmoothQuant's strength when it is turned on (the CLI's)
// The studio's scheme until the user picks one: W8A8, per-tensor static activations, weight groups of 128,
// the four linear-input sites (SmoothQuant, when turned on, starts at alpha 0.8 as in the CLI).
inline cushion::QuantConfig defaultQuantScheme() {
    cushion::QuantConfig c;
    c.wbits = 8;
    c.abits = 8;
    return c;
}

// A package written by `cushion export` (a directory with quantization.json, core/quantized_package.h),
// opened as the model: its scheme, fixed, and what quantization.json recorded at export.
struct PackageInfo {
    QString dir, describe, tool_version;
    cushion::QuantConfig quant;  // the package's scheme
    QString sites;        // quantized activation sites, "attn_in,o_in,mlp_in,down_in"
    bool measured = false;  // perplexities were measured at export (else the four below are 0)
    double ppl_fp = 0, ppl_fp_cushion = 0, ppl_quant = 0, ppl_quant_cushion = 0;
    qint64 eval_tokens = 0;
    QString eval_file;
    std::shared_ptr<const cushion::Cushion> cushion;  // the package's cushion (on the model's device and dtype)
    QString cushion_text;
};

struct QuantRequest {
    ModelInfoPtr model;
    cushion::QuantConfig settings;
    QString calib_path, eval_path;
    int max_eval_docs = 0;  // 0 = all
};

struct QuantResult {
    const void* model_key = nullptr;
    QString describe;
    double fp_ppl = 0, q_ppl = 0;
    qint64 eval_tokens = 0, eval_docs = 0, calib_docs = 0;
    // Per layer: relative L2 error of each quantized linear input, ||Q(x) - x|| / ||x|| ([site] x layers,
    // sites 0..3), and the relative drift of the residual stream from the full-precision model.
    std::array<std::vector<double>, 4> act_error;
    std::vector<double> residual_drift;
    QStringList notes;
    double seconds = 0;
};
using QuantResultPtr = std::shared_ptr<const QuantResult>;

using CushionPtr = std::shared_ptr<const cushion::Cushion>;
// The tuner's state taken for a session save (session_files.h; opaque here).
struct TunerState;
using TunerStatePtr = std::shared_ptr<const TunerState>;

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
    int memory_mb = 0;      // transient memory per candidate batch; 0 = automatic, from the free memory (as the CLI)
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
    bool fast = false;                // a fast step: every candidate screened (window_loss), the best re-scored (loss)
    bool committed = false;           // a step() that changed the search; false: score() only (nothing changed)
    std::vector<int> scored_prefix;   // the prefix the candidates were scored after
    std::vector<double> loss;         // (V) L_q(prefix + t) on the whole sample; NaN where not scored
    std::vector<double> window_loss;  // pruned: (V) L_q on the pruning window; fast: (V) the screen's estimate of
                                      // L_q(prefix + t); NaN where not scored
    std::vector<int> shortlist;       // pruned and fast: re-scored candidates, best first
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
// static activation ranges collected with the cushion in place), without a cushion, with the search's cushion
// (before tuning) or with the tuned one (after).
enum class PplWhich { None = 0, Before = 1, After = 2 };
struct PplRequest {
    ModelInfoPtr model;
    PplWhich which = PplWhich::None;
    CushionPtr cushion;  // null for None
    // Documents are cut to fit after a cushion of this many tokens (at least the cushion's own length), so
    // the rows with and without a cushion predict the same tokens, as `cushion eval` does.
    qint64 fit_after = 0;
    cushion::QuantConfig quant;
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
    cushion::QuantConfig quant;
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

// Resident set size of this process in bytes (0 if unknown).
qint64 processRss();
QString formatBytes(qint64 bytes);

// Printable prefix text of a cushion (pieces as the vocabulary spells them), its length; "" / 0 for null.
QString cushionText(const CushionPtr& c);
qint64 cushionLength(const CushionPtr& c);

}  // namespace studio

Q_DECLARE_METATYPE(studio::ModelInfoPtr)
Q_DECLARE_METATYPE(studio::HeatmapDataPtr)
Q_DECLARE_METATYPE(studio::QuantResultPtr)
Q_DECLARE_METATYPE(studio::CompareDataPtr)
Q_DECLARE_METATYPE(studio::SearchSnapshotPtr)
Q_DECLARE_METATYPE(studio::TuneSnapshotPtr)
Q_DECLARE_METATYPE(studio::PplResultPtr)
Q_DECLARE_METATYPE(studio::ExportResultPtr)
Q_DECLARE_METATYPE(studio::CushionPtr)
Q_DECLARE_METATYPE(studio::TunerStatePtr)
