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

#include "session.h"
#include "workers.h"

namespace cushion {
struct Cushion;
}

namespace studio {

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
    void takeState();                    // the tuner's state copied (for a session save): stateTaken()
    void measure(const PplRequest& req); // req.cushion null and which == After: the tuned cushion now
    void reset();
signals:
    void updated(studio::TuneSnapshotPtr snap);
    void measured(studio::PplResultPtr result);
    void stateTaken(studio::TunerStatePtr state);

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
    // Writes the session's files as one set (session_files.h: the tuner state, the cushion, the session JSON).
    void saveSession(const QString& path, const SessionData& d, const CushionPtr& cushion, const TunerStatePtr& tuner);
    // Loads a cushion file and checks that it fits the model.
    void loadCushion(const QString& path, const ModelInfoPtr& model);
signals:
    void exported(studio::ExportResultPtr result);
    void sessionSaved(const QString& path);
    void cushionLoaded(studio::CushionPtr cushion, const QString& path);
};

}  // namespace studio

