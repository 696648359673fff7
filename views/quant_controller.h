// The quantized model, apart from any widget: quantize-and-evaluate (the Quantization panel, QuantWorker) and
// the package export (the export dialog, ExportWorker). The rules live here: one quantization at a time, an
// opened package's scheme is fixed, an export needs a model that is not a package, a cushion and a
// directory. cancelExport() stops the export job only: a session save on the same worker, posted before or
// after, runs; cancelQuantization() likewise stops this controller's quantize job only (a token per job). The window maps the signals onto the panel and the dialog; tests drive it alone
// (tests/gui/test_controllers.cpp).
#pragma once
#include <QObject>

#include <functional>

#include "base/progress.h"  // torch-free: cushion::CancelToken
#include "studio_types.h"

namespace studio {

class ExportWorker;
class QuantWorker;

class QuantController : public QObject {
    Q_OBJECT
public:
    // What both take from the views, asked when a job is posted.
    struct Inputs {
        cushion::QuantConfig quant;
        QString calib_path, eval_path;
        CushionPtr cushion;  // the cushion an export carries (the current one)
    };
    // The export dialog's part of an export.
    struct ExportTarget {
        QString dir;
        int eval_docs = 0;  // 0 = all
        bool overwrite = false;
    };
    QuantController(QuantWorker* quant, ExportWorker* exporter, std::function<Inputs()> inputs, QObject* parent = nullptr);

    void setModel(const ModelInfoPtr& model);
    void quantize();
    void exportPackage(const ExportTarget& target);
    void cancelExport();  // the export job only
    void cancelQuantization();  // the quantize job only (not another job on the quant worker)

    bool exporting() const { return exporting_; }
    bool quantizing() const { return quantizing_; }  // posted and not yet ended
    QuantRequest lastQuantization() const { return last_quant_; }
    ExportRequest lastExport() const { return last_export_; }

signals:
    void quantStarted();
    void quantProgress(double fraction, const QString& what);
    void quantized(const studio::QuantResultPtr& result);  // for the model open now
    void quantDropped();                                   // a result for a model no longer open
    void quantFailed(const QString& message);
    void quantCancelled();
    void exportStarted(const QString& dir);
    void exportRefused(const QString& why);  // nothing was posted
    void exportProgress(double fraction, const QString& what);
    void exported(const studio::ExportResultPtr& result);
    void exportFailed(const QString& message);
    void exportCancelled();
    void otherJobFailed(const QString& message);  // a job of the export worker that is not an export (sessions)
    void log(const QString& line);
    void error(const QString& text);  // a request that cannot be served (no model)

private:
    QuantWorker* quant_;
    ExportWorker* exporter_;
    std::function<Inputs()> inputs_;
    ModelInfoPtr model_;
    bool exporting_ = false, quantizing_ = false;
    cushion::CancelToken export_job_, quant_job_;
    QuantRequest last_quant_;
    ExportRequest last_export_;
};

}  // namespace studio
