#include "search_controller.h"

#include "search_workers.h"

namespace studio {

SearchController::SearchController(SearchWorker* worker, std::function<Inputs()> inputs, QObject* parent)
    : QObject(parent), worker_(worker), inputs_(std::move(inputs)) {
    connectWorker(worker_, this,
                  {[this](double f, const QString& w) { emit progress(f, w); },
                   [this](const QString& m) {
                       if (stale_ > 0) return;  // a job of the search before the last reset
                       running_ = starting_ = restoring_ = false;
                       then_ = Then::None;
                       emit failed(m);
                   },
                   [this] {
                       if (stale_ > 0) return;
                       running_ = starting_ = restoring_ = false;
                       then_ = Then::None;
                       emit cancelled();
                       emit log(tr("Search step cancelled; the search is as before it"));
                   },
                   [this] {
                       jobs_ = std::max(0, jobs_ - 1);
                       stale_ = std::max(0, stale_ - 1);
                       changed();
                       emit jobEnded();
                   }});
    connect(worker_, &SearchWorker::updated, this, &SearchController::onUpdated);
}

void SearchController::setModel(const ModelInfoPtr& model) {
    model_ = model;
    reset();
}

void SearchController::reset() {
    running_ = starting_ = restoring_ = false;
    then_ = Then::None;
    worker_->requestCancel();  // the jobs posted so far; reset() has a token of its own
    stale_ = jobs_;            // what they still report is ignored
    SearchWorker* w = worker_;
    WorkerThreads::post(w, [w] { w->reset(); });
    snap_.reset();
    emit cleared();
    changed();
}

void SearchController::post(std::function<void(SearchWorker*)> job) {
    ++jobs_;
    changed();
    SearchWorker* w = worker_;
    WorkerThreads::post(w, [w, job = std::move(job)] { job(w); });
}

void SearchController::postStart(const QString& restore_state) {
    SearchRequest req;
    req.model = model_;
    const Inputs in = inputs_();
    req.settings = in.settings;
    req.calib_path = in.calib_path;
    req.restore_state = restore_state;
    starting_ = true;
    restoring_ = !restore_state.isEmpty();
    emit startRequested(restoring_);
    emit log(restoring_ ? tr("Restoring the search") : tr("Starting a search on %1").arg(req.calib_path));
    post([req](SearchWorker* w) { w->start(req); });
}

bool SearchController::ensureSearch(Then then) {
    if (!model_) {
        emit error(tr("Open a model first"));
        return false;
    }
    if (snap_) {
        SearchSettings now = inputs_().settings;
        now.pruned = snap_->settings.pruned;  // the step kind is chosen per step
        if (!(now == snap_->settings))
            emit note(tr("The settings changed: press New to search with them (this continues the current search)"));
        return true;
    }
    then_ = then;
    postStart({});
    return false;
}

void SearchController::newSearch() {
    if (!model_) {
        emit error(tr("Open a model first"));
        return;
    }
    if (!idle()) return;
    then_ = Then::None;
    postStart({});
}

void SearchController::restore(const QString& state_json) {
    then_ = Then::None;
    postStart(state_json);
}

void SearchController::step() {
    if (!idle() || !ensureSearch(Then::Step)) return;
    const bool pruned = inputs_().settings.pruned;
    post([pruned](SearchWorker* w) { w->step(pruned); });
}

void SearchController::score() {
    if (!idle() || !ensureSearch(Then::Score)) return;
    const bool pruned = inputs_().settings.pruned;
    post([pruned](SearchWorker* w) { w->score(pruned); });
}

void SearchController::run() {
    if (!idle() || !ensureSearch(Then::Run)) return;
    if (snap_->done) {
        emit note(tr("The search has stopped: undo or use a candidate to go on"));
        return;
    }
    running_ = true;
    const bool pruned = inputs_().settings.pruned;
    post([pruned](SearchWorker* w) { w->step(pruned); });
}

void SearchController::pause() {
    if (!running_) return;
    running_ = false;
    emit note(tr("Pausing after the current step…"));
    changed();
}

void SearchController::cancel() {
    running_ = false;
    then_ = Then::None;
    worker_->requestCancel();
    changed();
}

void SearchController::acceptBest() {
    if (!idle() || !snap_) return;
    post([](SearchWorker* w) { w->acceptScored(); });
}

void SearchController::useToken(int token, bool replace_last) {
    if (!idle() || !snap_) return;
    post([token, replace_last](SearchWorker* w) { w->useToken(token, replace_last); });
}

void SearchController::undo() {
    if (!idle() || !snap_ || !snap_->canUndo()) return;
    post([](SearchWorker* w) { w->undo(); });
}

void SearchController::onUpdated(const SearchSnapshotPtr& snap) {
    if (stale_ > 0) return;                                          // from a job of the search before the last reset
    if (!model_ || snap->model_key != model_->model.get()) return;  // for a model no longer open
    const bool was_starting = starting_, was_restoring = restoring_;
    starting_ = restoring_ = false;
    const bool prefix_changed = !snap_ || snap_->prefix != snap->prefix || was_starting;
    snap_ = snap;
    emit updated(snap, prefix_changed);
    if (!snap->last_action.isEmpty()) emit log(snap->last_action);
    if (was_starting) {
        emit started(snap, was_restoring);
        const Then then = then_;
        then_ = Then::None;
        if (snap_ == snap) {  // still this search (a slot above may have reset it)
            const bool pruned = inputs_().settings.pruned;
            if (then == Then::Step || (then == Then::Run && !snap->done)) {
                running_ = then == Then::Run;
                post([pruned](SearchWorker* w) { w->step(pruned); });
            } else if (then == Then::Score) {
                post([pruned](SearchWorker* w) { w->score(pruned); });
            }
        }
    } else if (running_) {
        if (snap->done) {
            running_ = false;
            emit stopped(snap);
            emit log(tr("The search stopped (%1): prefix %2, L_q %3 -> %4")
                         .arg(snap->stop, snap->prefixText())
                         .arg(snap->initial_loss, 0, 'g', 6)
                         .arg(snap->loss, 0, 'g', 6));
        } else {
            const bool pruned = inputs_().settings.pruned;
            post([pruned](SearchWorker* w) { w->step(pruned); });
        }
    }
    changed();
}

}  // namespace studio
