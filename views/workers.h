// The studio's long work — load a model, probe a prompt, quantize and evaluate (and, in search_workers.h,
// search, tune, export) — as QObject workers
// that live on their own QThreads (PlotJuggler's pattern). Each worker:
//   - is driven by queued calls from the GUI thread (WorkerThreads::post),
//   - reports progress, failure and cancellation as signals,
//   - cancels promptly through an atomic flag polled by the engine's ProgressFn,
//   - hands the GUI immutable snapshots (std::shared_ptr<const ...>): views never touch tensors.
// No tensor header here: only workers.cpp includes the engine.
#pragma once
#include <QMetaType>
#include <QObject>
#include <QString>
#include <QStringList>
#include <QThread>

#include <array>
#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

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

// A quantization scheme as the panel edits it (mirrors cushion::QuantConfig without its headers).
struct QuantSettings {
    int wbits = 8;
    qint64 group = 128;
    int abits = 8;
    QString granularity = "per-tensor-static";
    bool smoothquant = false;
    double alpha = 0.8;
    int kv_bits = 0;
};

// A package written by `cushion export` (a directory with quantization.json, core/quantized_package.h),
// opened as the model: its scheme, fixed, and what quantization.json recorded at export.
struct PackageInfo {
    QString dir, describe, tool_version;
    QuantSettings quant;  // the package's scheme
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
    QuantSettings settings;
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

// Base: cancel flag, progress plumbing.
class Worker : public QObject {
    Q_OBJECT
public:
    using QObject::QObject;
    // Thread-safe: asks the running job (if any) to stop at its next progress point.
    void requestCancel() { cancel_.store(true); }
    // Clears the flag; WorkerThreads::post calls it when a job is queued, so a cancel that arrives
    // between queuing and starting still counts.
    void resetCancel() { cancel_.store(false); }
    bool isBusy() const { return busy_.load(); }

signals:
    void started(const QString& what);
    void progress(double fraction, const QString& what);
    void failed(const QString& message);
    void cancelled();
    void finished();  // after any job ends (success, failure or cancel)

protected:
    // Wraps a job: sets busy, clears the cancel flag, turns exceptions into failed()/cancelled().
    void runJob(const QString& what, const std::function<void()>& job);
    // Reports progress (at most 10 a second: each one repaints the window) scaled into [lo, hi]; returns false
    // when cancelled.
    bool report(double fraction, const std::string& what, double lo = 0, double hi = 1);
    std::atomic<bool> cancel_{false};
    std::atomic<bool> busy_{false};
    qint64 last_report_ms_ = -1000;
};

class ModelWorker : public Worker {
    Q_OBJECT
public:
    using Worker::Worker;
    void load(const QString& path, const QString& device, const QString& dtype);
signals:
    void loaded(studio::ModelInfoPtr info);
};

class ProbeWorker : public Worker {
    Q_OBJECT
public:
    using Worker::Worker;
    // Called on the GUI thread before posting: requests older than this are skipped (debounce).
    void setLatest(quint64 id) { latest_.store(id); }
    void probe(const ProbeRequest& req);
    void setLatestCompare(quint64 id) { latest_compare_.store(id); }
    void compare(const CompareRequest& req);
signals:
    void probed(studio::HeatmapDataPtr data);
    void compared(studio::CompareDataPtr data);

private:
    std::atomic<quint64> latest_{0}, latest_compare_{0};
};

class SearchWorker;
class TuneWorker;
class ExportWorker;

class QuantWorker : public Worker {
    Q_OBJECT
public:
    using Worker::Worker;
    void quantize(const QuantRequest& req);
signals:
    void quantized(studio::QuantResultPtr result);
};

// Owns one QThread per worker; post() runs a functor on the worker's thread.
class WorkerThreads : public QObject {
    Q_OBJECT
public:
    explicit WorkerThreads(QObject* parent = nullptr);
    ~WorkerThreads() override;  // cancels, quits and joins every thread
    ModelWorker* model() const { return model_; }
    ProbeWorker* probe() const { return probe_; }
    QuantWorker* quant() const { return quant_; }
    SearchWorker* search() const { return search_; }  // search_workers.h
    TuneWorker* tune() const { return tune_; }
    ExportWorker* exporter() const { return export_; }
    static void post(Worker* w, std::function<void()> fn);
    void cancelAll();

private:
    QThread model_thread_, probe_thread_, quant_thread_, search_thread_, tune_thread_, export_thread_;
    ModelWorker* model_;
    ProbeWorker* probe_;
    QuantWorker* quant_;
    SearchWorker* search_;
    TuneWorker* tune_;
    ExportWorker* export_;
};

// Resident set size of this process in bytes (0 if unknown).
qint64 processRss();
QString formatBytes(qint64 bytes);

}  // namespace studio

Q_DECLARE_METATYPE(studio::ModelInfoPtr)
Q_DECLARE_METATYPE(studio::HeatmapDataPtr)
Q_DECLARE_METATYPE(studio::QuantResultPtr)
Q_DECLARE_METATYPE(studio::CompareDataPtr)
