// Prefix tuning's state machine, apart from any widget: a tuner started from the search's cushion, Run as a
// chain of one-batch jobs that Pause stops between batches and Cancel interrupts, the perplexities without a
// cushion, with the search's and with the tuned one, and the tuned cushion itself (forgotten when the
// search's prefix changes). The window maps its signals onto the tuning panel; tests drive it alone.
#pragma once
#include <QObject>

#include <array>
#include <functional>
#include <vector>

#include "studio_types.h"

namespace studio {

class SearchController;
class TuneWorker;

class TuneController : public QObject {
    Q_OBJECT
public:
    // What tuning and the perplexities take from the views, asked when they are needed.
    struct Inputs {
        TuneSettings settings;
        cushion::QuantConfig quant;
        QString calib_path, eval_path;
    };
    TuneController(TuneWorker* worker, const SearchController* search, std::function<Inputs()> inputs,
                   QObject* parent = nullptr);

    void setModel(const ModelInfoPtr& model);  // forgets the tuning
    void reset();                              // forgets the tuning, cancels its jobs
    void start();    // a new tuner from the search's cushion; the perplexities before, then Run
    void pause();    // after the current batch
    void resume();
    void step();     // one batch
    void cancel();   // interrupts the current batch (not applied)
    void measure();  // the perplexities not yet shown, and the tuned cushion's
    // The search's prefix changed: the tuning was for another prefix.
    void invalidate(const QString& why);
    // Sessions: a tuned cushion and its curve restored; a tuner resumed from its state file; the tuner's
    // state taken between batches for a session save (then() runs with it, failed() if it cannot be taken).
    void setRestored(const CushionPtr& tuned, const std::vector<TunePoint>& points);
    void resumeFrom(const QString& state_path, const QString& calib_path, const TuneSettings& settings);
    void takeState(std::function<void(const TunerStatePtr&)> then, std::function<void(const QString&)> failed);

    TuneSnapshotPtr snapshot() const { return snap_; }
    CushionPtr tunedCushion() const { return tuned_; }
    std::vector<TunePoint> points() const { return snap_ ? snap_->points : restored_points_; }
    PplResultPtr perplexity(PplWhich which) const { return ppl_[static_cast<int>(which)]; }
    bool running() const { return running_; }
    bool busy() const { return jobs_ > 0 || running_; }
    bool idle() const { return !busy(); }

signals:
    void cleared(const QString& note);    // no tuning (nor perplexities) now; note: why, or empty
    void updated(const studio::TuneSnapshotPtr& snap);
    void cushionChanged();                // the tuned cushion changed (or is gone)
    void measured(const studio::PplResultPtr& result);
    void startRequested(const studio::TuneRequest& req);
    void finished(const studio::TuneSnapshotPtr& snap);  // Run went through every batch
    void busyChanged(bool busy, bool running);
    void progress(double fraction, const QString& what);
    void failed(const QString& message, bool handled);  // handled: a session's takeState() took it
    void cancelled();
    void jobEnded();
    void note(const QString& text);
    void log(const QString& line);
    void error(const QString& text);

private:
    PplRequest pplRequest(PplWhich which, const CushionPtr& c, const Inputs& in) const;
    void post(std::function<void(TuneWorker*)> job, int jobs = 1);
    void postStep();
    void clear(const QString& note);
    void onUpdated(const TuneSnapshotPtr& snap);
    void changed() { emit busyChanged(busy(), running_); }

    TuneWorker* worker_;
    const SearchController* search_;
    std::function<Inputs()> inputs_;
    ModelInfoPtr model_;
    TuneSnapshotPtr snap_;
    CushionPtr tuned_;  // the tuned cushion (from tuning or a session), for the search's prefix
    std::vector<TunePoint> restored_points_;
    std::array<PplResultPtr, 3> ppl_;
    bool running_ = false;
    int jobs_ = 0;  // posted and not yet finished
    // Of those, the jobs posted before the last reset(): what they still report (an update, a perplexity, a failure,
    // a cancel) is about the tuning that was reset and is ignored; they are the next stale_ jobs to finish (jobs run
    // and report in order). As SearchController's stale_: opening a session while a tuning step ran could take that
    // step's late update as the resumed tuner's (gui_controller_tests aLateTuningResultIsNotTheResumedOne).
    int stale_ = 0;
    std::function<void(const TunerStatePtr&)> after_saved_;
    std::function<void(const QString&)> save_failed_;
};

}  // namespace studio
