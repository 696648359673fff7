#include "tune_controller.h"

#include "search_controller.h"
#include "search_workers.h"

namespace studio {

TuneController::TuneController(TuneWorker* worker, const SearchController* search, std::function<Inputs()> inputs,
                               QObject* parent)
    : QObject(parent), worker_(worker), search_(search), inputs_(std::move(inputs)) {
    connectWorker(worker_, this,
                  {[this](double f, const QString& w) { emit progress(f, w); },
                   [this](const QString& m) {
                       const bool handled = save_failed_ != nullptr;
                       const auto on_failed = std::move(save_failed_);
                       save_failed_ = nullptr;
                       after_saved_ = nullptr;
                       if (stale_ == 0) {  // else a job of the tuning before the last reset: only a save hears it
                           running_ = false;
                           emit failed(m, handled);
                       }
                       if (on_failed) on_failed(m);  // a session save waiting for the tuner state: not saved
                   },
                   [this] {
                       if (const auto on_failed = std::move(save_failed_)) {  // the state was not taken
                           save_failed_ = nullptr;
                           after_saved_ = nullptr;
                           on_failed(tr("cancelled"));
                       }
                       if (stale_ > 0) return;
                       running_ = false;
                       emit cancelled();
                       emit log(tr("Tuning cancelled; the interrupted batch was not applied"));
                   },
                   [this] {
                       jobs_ = std::max(0, jobs_ - 1);
                       stale_ = std::max(0, stale_ - 1);
                       changed();
                       emit jobEnded();
                   }});
    connect(worker_, &TuneWorker::updated, this, &TuneController::onUpdated);
    connect(worker_, &TuneWorker::measured, this, [this](const PplResultPtr& r) {
        if (stale_ > 0) return;  // measured for the tuning before the last reset
        if (!model_ || r->model_key != model_->model.get()) return;
        ppl_[static_cast<int>(r->which)] = r;
        static const char* names[] = {"no cushion", "search cushion", "tuned cushion"};
        emit measured(r);
        emit log(tr("Perplexity with %1: FP %2, %3 %4 (%5 s)")
                     .arg(names[static_cast<int>(r->which)])
                     .arg(r->fp, 0, 'f', 4)
                     .arg(r->scheme)
                     .arg(r->quant, 0, 'f', 4)
                     .arg(r->seconds, 0, 'f', 2));
    });
    connect(worker_, &TuneWorker::stateTaken, this, [this](const TunerStatePtr& state) {
        const auto then = std::move(after_saved_);
        after_saved_ = nullptr;
        save_failed_ = nullptr;
        if (then) then(state);
    });
}

void TuneController::setModel(const ModelInfoPtr& model) {
    model_ = model;
    reset();
}

void TuneController::reset() {
    running_ = false;
    worker_->requestCancel();  // the jobs posted so far; reset() has a token of its own
    stale_ = jobs_;            // what they still report is ignored
    TuneWorker* w = worker_;
    WorkerThreads::post(w, [w] { w->reset(); });
    snap_.reset();
    tuned_.reset();
    restored_points_.clear();
    ppl_ = {};
    emit cleared({});
    changed();
}

void TuneController::clear(const QString& note) {
    snap_.reset();
    tuned_.reset();
    restored_points_.clear();
    ppl_ = {};
    emit cleared(note);
}

void TuneController::post(std::function<void(TuneWorker*)> job, int jobs) {
    jobs_ += jobs;
    changed();
    TuneWorker* w = worker_;
    WorkerThreads::post(w, [w, job = std::move(job)] { job(w); });
}

void TuneController::postStep() {
    post([](TuneWorker* w) { w->step(); });
}

void TuneController::invalidate(const QString& why) {
    const bool had = snap_ || tuned_ || !restored_points_.empty();
    if (running_ || jobs_ > 0) {
        running_ = false;
        worker_->requestCancel();
    }
    clear(had ? tr("The tuning was for another prefix (%1): start again").arg(why) : QString());
    changed();
}

PplRequest TuneController::pplRequest(PplWhich which, const CushionPtr& c, const Inputs& in) const {
    PplRequest r;
    r.model = model_;
    r.which = which;
    r.cushion = c;
    r.quant = in.quant;
    r.calib_path = in.calib_path;
    r.eval_path = in.eval_path;
    r.eval_docs = in.settings.eval_docs;
    const SearchSnapshotPtr s = search_->snapshot();
    r.fit_after = cushionLength(s ? s->cushion : c);  // every row predicts the same tokens
    return r;
}

void TuneController::start() {
    const SearchSnapshotPtr s = search_->snapshot();
    if (!model_ || !s || !s->cushion) {
        emit error(tr("Run the search first: tuning starts from its cushion"));
        return;
    }
    if (!idle()) return;
    clear({});
    emit cushionChanged();
    const Inputs in = inputs_();
    TuneRequest req;
    req.model = model_;
    req.init = s->cushion;
    req.calib_path = in.calib_path;
    req.settings = in.settings;
    emit startRequested(req);
    emit log(tr("Tuning the cushion %1: %2 epochs, batch %3, lr %4, lambda %5")
                 .arg(s->prefixText())
                 .arg(req.settings.epochs)
                 .arg(req.settings.batch)
                 .arg(req.settings.lr)
                 .arg(req.settings.lambda));
    const PplRequest none = pplRequest(PplWhich::None, nullptr, in);
    const PplRequest before = pplRequest(PplWhich::Before, s->cushion, in);
    running_ = true;  // the batches follow the perplexities before tuning
    post([req](TuneWorker* w) { w->start(req); });
    post([none](TuneWorker* w) { w->measure(none); });
    post([before](TuneWorker* w) { w->measure(before); });
}

void TuneController::pause() {
    if (!running_) return;
    running_ = false;
    emit note(tr("Pausing after the current batch…"));
    changed();
}

void TuneController::resume() {
    if (!idle() || !snap_ || snap_->done) return;
    running_ = true;
    postStep();
}

void TuneController::step() {
    if (!idle() || !snap_ || snap_->done) return;
    postStep();
}

void TuneController::cancel() {
    running_ = false;
    worker_->requestCancel();
    changed();
}

void TuneController::measure() {
    if (!model_ || !idle()) return;
    const SearchSnapshotPtr s = search_->snapshot();
    const CushionPtr search = s ? s->cushion : nullptr;
    const Inputs in = inputs_();
    std::vector<PplRequest> reqs;
    if (!perplexity(PplWhich::None)) reqs.push_back(pplRequest(PplWhich::None, nullptr, in));
    if (search && !perplexity(PplWhich::Before)) reqs.push_back(pplRequest(PplWhich::Before, search, in));
    if (tuned_) reqs.push_back(pplRequest(PplWhich::After, tuned_, in));
    if (reqs.empty() && search) reqs.push_back(pplRequest(PplWhich::Before, search, in));
    for (const PplRequest& r : reqs) post([r](TuneWorker* w) { w->measure(r); });
}

void TuneController::setRestored(const CushionPtr& tuned, const std::vector<TunePoint>& points) {
    tuned_ = tuned;
    restored_points_ = points;
}

void TuneController::resumeFrom(const QString& state_path, const QString& calib_path, const TuneSettings& settings) {
    const SearchSnapshotPtr s = search_->snapshot();
    TuneRequest req;
    req.model = model_;
    req.init = s ? s->cushion : nullptr;
    req.calib_path = calib_path;
    req.settings = settings;
    req.state_path = state_path;
    post([req](TuneWorker* w) { w->start(req); });
}

void TuneController::takeState(std::function<void(const TunerStatePtr&)> then,
                               std::function<void(const QString&)> failed) {
    after_saved_ = std::move(then);
    save_failed_ = std::move(failed);
    post([](TuneWorker* w) { w->takeState(); });
}

void TuneController::onUpdated(const TuneSnapshotPtr& snap) {
    if (stale_ > 0) return;  // from a job of the tuning before the last reset
    if (!model_ || snap->model_key != model_->model.get()) return;
    const SearchSnapshotPtr s = search_->snapshot();
    if (!s || snap->prefix != s->prefix) return;  // for an earlier prefix
    snap_ = snap;
    if (snap->steps_done > 0) {
        tuned_ = snap->cushion;
        emit cushionChanged();
    }
    emit updated(snap);
    if (running_) {
        if (snap->done) {
            running_ = false;
            emit finished(snap);
            const TunePoint* last = snap->points.empty() ? nullptr : &snap->points.back();
            emit log(tr("Tuning done: %1 batches%2")
                         .arg(snap->steps_done)
                         .arg(last ? tr(", last CE %1, L_q %2").arg(last->ce, 0, 'f', 4).arg(last->lq, 0, 'g', 5) : QString()));
            const PplRequest after = pplRequest(PplWhich::After, snap->cushion, inputs_());
            post([after](TuneWorker* w) { w->measure(after); });
        } else {
            postStep();
        }
    }
    changed();
}

}  // namespace studio
