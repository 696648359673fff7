#include "probe_controller.h"

#include <algorithm>

#include "workers.h"

namespace studio {

ProbeController::ProbeController(ProbeWorker* worker, std::function<Inputs()> inputs, QObject* parent)
    : QObject(parent), worker_(worker), inputs_(std::move(inputs)) {
    connectWorker(worker_, this, {{}, [this](const QString& m) { emit failed(m); }, {}, {}});
    connect(worker_, &ProbeWorker::probed, this, [this](const HeatmapDataPtr& d) {
        if (d->request_id != probe_id_ || !model_ || d->model_key != model_->model.get()) return;  // stale
        emit probed(d);
    });
    connect(worker_, &ProbeWorker::compared, this, [this](const CompareDataPtr& d) {
        if (d->request_id != compare_id_ || !model_ || d->model_key != model_->model.get()) return;
        emit compared(d);
    });
}

void ProbeController::setModel(const ModelInfoPtr& model) {
    model_ = model;
    compare_dirty_ = true;
}

void ProbeController::post(std::function<void()> fn) {
    jobs_.erase(std::remove_if(jobs_.begin(), jobs_.end(), [](const Job& j) { return j.ended->load(); }), jobs_.end());
    auto ended = std::make_shared<std::atomic<bool>>(false);
    const cushion::CancelToken token = WorkerThreads::post(worker_, [fn = std::move(fn), ended] {
        struct Mark {
            std::atomic<bool>& e;
            ~Mark() { e.store(true); }
        } mark{*ended};
        fn();
    });
    jobs_.push_back({token, ended});
}

void ProbeController::probe() {
    if (!model_) return;
    const Inputs in = inputs_();
    if (in.text.trimmed().isEmpty()) {
        emit status(tr("Type a prompt"));
        return;
    }
    ProbeRequest req;
    req.id = ++probe_id_;
    req.model = model_;
    req.text = in.text;
    req.layer = in.layer;
    req.site = in.site;
    last_probe_ = req;
    ProbeWorker* w = worker_;
    w->setLatest(req.id);
    emit status(tr("Probing…"));
    post([w, req] { w->probe(req); });
    compare_dirty_ = true;  // the prompt may have changed
    if (in.compare_shown) compare();
}

void ProbeController::compare() {
    compare_dirty_ = false;
    const Inputs in = inputs_();
    if (!model_ || !in.cushion || in.text.trimmed().isEmpty()) {
        ++compare_id_;  // a comparison still running is stale
        emit compareCleared();
        return;
    }
    CompareRequest req;
    req.id = ++compare_id_;
    req.model = model_;
    req.text = in.text;
    req.cushion = in.cushion;
    last_compare_ = req;
    ProbeWorker* w = worker_;
    w->setLatestCompare(req.id);
    post([w, req] { w->compare(req); });
}

void ProbeController::cushionChanged() {
    compare_dirty_ = true;
    if (inputs_().compare_shown) compare();
}

void ProbeController::compareShown() {
    if (compare_dirty_) compare();
}

void ProbeController::cancel() {
    for (const Job& j : jobs_) j.token.cancel();
    jobs_.clear();
}

}  // namespace studio
