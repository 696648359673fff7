// The open model, apart from any widget: one load at a time (opening another cancels the running load, and
// it starts once that one has stopped); a package's quantization.json opens its directory.
#pragma once
#include <QObject>

#include "studio_types.h"

namespace studio {

class ModelWorker;

class ModelController : public QObject {
    Q_OBJECT
public:
    explicit ModelController(ModelWorker* worker, QObject* parent = nullptr);
    void open(const QString& path, const QString& device, const QString& dtype);
    void cancel();  // the running load, and one waiting for it
    ModelInfoPtr model() const { return model_; }

signals:
    void loading(const QString& path, const QString& device, const QString& dtype);
    void loaded(const studio::ModelInfoPtr& info);
    void started(const QString& what);
    void progress(double fraction, const QString& what);
    void failed(const QString& message);
    void cancelled();
    void error(const QString& text);  // a path that does not exist

private:
    ModelWorker* worker_;
    ModelInfoPtr model_;
    QString pending_path_, pending_device_, pending_dtype_;
};

}  // namespace studio
