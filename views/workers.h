// The studio's long work — load a model, probe a prompt, quantize and evaluate (and, in search_workers.h,
// search, tune, export) — as QObject workers
// that live on their own QThreads (PlotJuggler's pattern). Each worker:
//   - is driven by queued calls from the GUI thread (WorkerThreads::post),
//   - reports progress, failure and cancellation as signals,
//   - cancels promptly through its job's own cancel token (cushion::CancelToken), polled by the engine's
//     ProgressFn: cancelling never reaches a job posted after the cancel,
//   - hands the GUI immutable snapshots (std::shared_ptr<const ...>): views never touch tensors.
// The data they exchange is in studio_types.h. No tensor header here: only workers.cpp includes the engine.
#pragma once
#include <QObject>
#include <QString>
#include <QThread>

#include <atomic>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "base/progress.h"  // torch-free: cushion::CancelToken
#include "studio_types.h"

namespace studio {

// Base: progress plumbing and a cancel token per job.
class Worker : public QObject {
    Q_OBJECT
public:
    using QObject::QObject;
    // Thread-safe: cancels every job posted so far, the running one (at its next progress point) and those
    // still queued. A job posted afterwards has its own token and runs.
    void requestCancel();
    bool isBusy() const { return busy_.load(); }
    // On the worker's thread: the running job was cancelled.
    bool jobCancelled() const { return current_.cancelled(); }

signals:
    void started(const QString& what);
    void progress(double fraction, const QString& what);
    void failed(const QString& message);
    void cancelled();
    void finished();  // after any job ends (success, failure or cancel)

protected:
    // Wraps a job: sets busy, turns exceptions into failed()/cancelled().
    void runJob(const QString& what, const std::function<void()>& job);
    // Reports progress (at most 10 a second: each one repaints the window) scaled into [lo, hi]; returns false
    // when the running job was cancelled.
    bool report(double fraction, const std::string& what, double lo = 0, double hi = 1);
    std::atomic<bool> busy_{false};
    qint64 last_report_ms_ = -1000;

private:
    friend class WorkerThreads;
    cushion::CancelToken issue();                    // post(): the new job's token, live until it ends
    void run(const cushion::CancelToken& token, const std::function<void()>& fn);  // on the worker's thread
    std::mutex tokens_mutex_;
    std::vector<cushion::CancelToken> live_;         // posted and not ended
    cushion::CancelToken current_;                   // the job running; a direct call runs under a fresh one
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
    // Where every (layer, site)'s channel map does not fit the probe's budget: keep every layer of the shown site
    // (default; switching layers needs no new probe) or only the shown (layer, site) (false; for the benchmark's
    // before / after).
    void setKeepSiteLayers(bool on) { keep_site_layers_.store(on); }
signals:
    void probed(studio::HeatmapDataPtr data);
    void compared(studio::CompareDataPtr data);

private:
    std::atomic<quint64> latest_{0}, latest_compare_{0};
    std::atomic<bool> keep_site_layers_{true};
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

// A worker's common signals, in one place: each handler (an empty one is skipped) runs on receiver's thread.
struct WorkerHandlers {
    std::function<void(double fraction, const QString& what)> progress;
    std::function<void(const QString& message)> failed;
    std::function<void()> cancelled;
    std::function<void()> finished;  // after every job, after failed / cancelled
};
void connectWorker(Worker* worker, QObject* receiver, WorkerHandlers handlers);

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
    // Queues fn on w's thread as one job with its own cancel token (returned: cancel() stops this job only).
    static cushion::CancelToken post(Worker* w, std::function<void()> fn);
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

}  // namespace studio

