// The greedy search's state machine, apart from any widget: one SearchWorker job at a time (start, step,
// score, accept, use a token, undo), Run as a chain of steps that Pause stops between steps and Cancel
// interrupts, and Step / Score / Run that first start a search when there is none. The window maps its
// signals onto the search panel; tests drive it alone (tests/gui/test_controllers.cpp).
#pragma once
#include <QObject>

#include <functional>

#include "studio_types.h"

namespace studio {

class SearchWorker;

class SearchController : public QObject {
    Q_OBJECT
public:
    // What a new search and a step take from the views, asked when they are needed.
    struct Inputs {
        SearchSettings settings;  // settings.pruned: the step kind chosen now
        QString calib_path;
    };
    SearchController(SearchWorker* worker, std::function<Inputs()> inputs, QObject* parent = nullptr);

    void setModel(const ModelInfoPtr& model);  // forgets the search (it was for the model before)
    void reset();                              // forgets the search, cancels its jobs
    void newSearch();
    void step();
    void score();
    void run();
    void pause();    // after the current step
    void cancel();   // interrupts the current step; the search stays as before it
    void acceptBest();
    void useToken(int token, bool replace_last);
    void undo();
    void restore(const QString& state_json);  // a session's search: started() when it is back

    ModelInfoPtr model() const { return model_; }
    SearchSnapshotPtr snapshot() const { return snap_; }
    bool running() const { return running_; }
    bool busy() const { return jobs_ > 0 || starting_ || running_; }
    bool idle() const { return !busy(); }

signals:
    void updated(const studio::SearchSnapshotPtr& snap, bool prefix_changed);
    void started(const studio::SearchSnapshotPtr& snap, bool restored);  // after updated() of a start job
    void startRequested(bool restoring);  // a start job was posted
    void cleared();                       // no search now (reset)
    void busyChanged(bool busy, bool running);
    void progress(double fraction, const QString& what);
    void failed(const QString& message);  // a job failed (the search is as before it)
    void cancelled();
    void jobEnded();  // after any job (success, failure, cancel)
    void stopped(const studio::SearchSnapshotPtr& snap);  // Run ended because the search stopped
    void note(const QString& text);   // for the panel: why a button did nothing
    void log(const QString& line);    // what happened, for the log
    void error(const QString& text);  // a request that cannot be served (no model)

private:
    enum class Then { None, Step, Score, Run };
    bool ensureSearch(Then then);  // false: a search is being started; `then` runs after it
    void postStart(const QString& restore_state);
    void post(std::function<void(SearchWorker*)> job);
    void onUpdated(const SearchSnapshotPtr& snap);
    void changed() { emit busyChanged(busy(), running_); }

    SearchWorker* worker_;
    std::function<Inputs()> inputs_;
    ModelInfoPtr model_;
    SearchSnapshotPtr snap_;
    bool running_ = false, starting_ = false, restoring_ = false;
    int jobs_ = 0;  // posted and not yet finished
    // Of those, the jobs posted before the last reset(): whatever they still report (an update, a failure, a cancel)
    // is about the search that was reset and is ignored. Jobs run and report in the order posted, each ending with
    // finished, so they are the next stale_ jobs to finish. (Opening a session while a step ran took that step's
    // update for the restored search: "the restored prefix differs"; found by tests/gui/test_monkey.cpp.)
    int stale_ = 0;
    Then then_ = Then::None;
};

}  // namespace studio
