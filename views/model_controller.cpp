#include "model_controller.h"

#include <QFileInfo>

#include "workers.h"

namespace studio {

ModelController::ModelController(ModelWorker* worker, QObject* parent) : QObject(parent), worker_(worker) {
    connect(worker_, &Worker::started, this, &ModelController::started);
    connectWorker(worker_, this,
                  {[this](double f, const QString& w) { emit progress(f, w); },
                   [this](const QString& m) { emit failed(m); }, [this] { emit cancelled(); },
                   [this] {
                       if (pending_path_.isEmpty()) return;
                       const QString p = pending_path_;
                       pending_path_.clear();
                       open(p, pending_device_, pending_dtype_);
                   }});
    connect(worker_, &ModelWorker::loaded, this, [this](const ModelInfoPtr& info) {
        model_ = info;
        emit loaded(info);
    });
}

void ModelController::open(const QString& chosen, const QString& device, const QString& dtype) {
    // An exported package is its directory; choosing (or dropping) its quantization.json opens it too.
    const QFileInfo fi(chosen);
    const QString path = fi.fileName() == "quantization.json" && fi.isFile() ? fi.absolutePath() : chosen;
    if (worker_->isBusy()) {
        // One load at a time: cancel the running one, this one starts when it has stopped.
        pending_path_ = path;
        pending_device_ = device;
        pending_dtype_ = dtype;
        worker_->requestCancel();
        return;
    }
    if (!QFileInfo::exists(path)) {
        emit error(tr("No such file or directory: %1").arg(path));
        return;
    }
    emit loading(path, device, dtype);
    ModelWorker* w = worker_;
    WorkerThreads::post(w, [w, path, device, dtype] { w->load(path, device, dtype); });
}

void ModelController::cancel() {
    pending_path_.clear();
    worker_->requestCancel();
}

}  // namespace studio
