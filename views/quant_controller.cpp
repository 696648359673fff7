#include "quant_controller.h"

#include "search_workers.h"
#include "workers.h"

namespace studio {

QuantController::QuantController(QuantWorker* quant, ExportWorker* exporter, std::function<Inputs()> inputs,
                                 QObject* parent)
    : QObject(parent), quant_(quant), exporter_(exporter), inputs_(std::move(inputs)) {
    connectWorker(quant_, this,
                  {[this](double f, const QString& w) { emit quantProgress(f, w); },
                   [this](const QString& m) {
                       quantizing_ = false;
                       emit quantFailed(m);
                   },
                   [this] {
                       quantizing_ = false;
                       emit quantCancelled();
                   },
                   [this] { quantizing_ = false; }});
    connect(quant_, &QuantWorker::quantized, this, [this](const QuantResultPtr& r) {
        quantizing_ = false;
        if (!model_ || r->model_key != model_->model.get()) {
            emit quantDropped();
            return;
        }
        emit log(tr("Quantization %1: perplexity %2 -> %3 (%4 s)")
                     .arg(r->describe)
                     .arg(r->fp_ppl, 0, 'f', 3)
                     .arg(r->q_ppl, 0, 'f', 3)
                     .arg(r->seconds, 0, 'f', 2));
        emit quantized(r);
    });
    // The export worker also saves sessions and loads their cushions: only the export's signals are ours.
    connectWorker(exporter_, this,
                  {[this](double f, const QString& w) {
                       if (exporting_) emit exportProgress(f, w);
                   },
                   [this](const QString& m) {
                       if (!exporting_) {
                           emit otherJobFailed(m);
                           return;
                       }
                       exporting_ = false;
                       emit exportFailed(m);
                   },
                   [this] {
                       if (!exporting_) return;
                       exporting_ = false;
                       emit log(tr("Export cancelled; nothing was written"));
                       emit exportCancelled();
                   },
                   {}});
    connect(exporter_, &ExportWorker::exported, this, [this](const ExportResultPtr& r) {
        exporting_ = false;
        emit log(tr("Exported %1 (%2, %3): quantized perplexity with the cushion %4")
                     .arg(r->dir, r->describe, formatBytes(r->bytes))
                     .arg(r->ppl_quant_cushion, 0, 'f', 4));
        emit exported(r);
    });
}

void QuantController::setModel(const ModelInfoPtr& model) { model_ = model; }

void QuantController::quantize() {
    if (!model_) {
        emit error(tr("Open a model first"));
        return;
    }
    if (quantizing_ || quant_->isBusy()) return;
    if (model_->package) {
        emit log(tr("The package's scheme is fixed: its perplexities are those measured at export"));
        return;
    }
    const Inputs in = inputs_();
    QuantRequest req;
    req.model = model_;
    req.settings = in.quant;
    req.calib_path = in.calib_path;
    req.eval_path = in.eval_path;
    last_quant_ = req;
    emit quantStarted();
    emit log(tr("Quantizing with W%1 A%2 %3%4")
                 .arg(req.settings.wbits)
                 .arg(req.settings.abits)
                 .arg(cushion::granularity_name(req.settings.act))
                 .arg(req.settings.smoothquant_on() ? " SmoothQuant" : ""));
    QuantWorker* w = quant_;
    quantizing_ = true;
    quant_job_ = WorkerThreads::post(w, [w, req] { w->quantize(req); });
}

void QuantController::exportPackage(const ExportTarget& t) {
    const Inputs in = inputs_();
    if (model_ && model_->package) {
        emit exportRefused(tr("this model is an exported package already: export from the original model"));
        return;
    }
    if (!model_ || !in.cushion) {
        emit exportRefused(tr("run the search first: the package carries its cushion"));
        return;
    }
    if (t.dir.isEmpty()) {
        emit exportRefused(tr("choose the package directory"));
        return;
    }
    if (exporting_) {
        emit exportRefused(tr("an export is running"));
        return;
    }
    ExportRequest req;
    req.model = model_;
    req.cushion = in.cushion;
    req.dir = t.dir;
    req.quant = in.quant;
    req.calib_path = in.calib_path;
    req.eval_path = in.eval_path;
    req.eval_docs = t.eval_docs;
    req.overwrite = t.overwrite;
    last_export_ = req;
    exporting_ = true;
    emit exportStarted(t.dir);
    emit log(tr("Exporting to %1").arg(t.dir));
    ExportWorker* w = exporter_;
    export_job_ = WorkerThreads::post(w, [w, req] { w->exportPackage(req); });
}

void QuantController::cancelQuantization() {
    if (quantizing_) quant_job_.cancel();
}

void QuantController::cancelExport() {
    if (exporting_) export_job_.cancel();
}

}  // namespace studio
