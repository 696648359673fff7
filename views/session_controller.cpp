#include "session_controller.h"

#include <QFileInfo>

#include "model_controller.h"
#include "search_controller.h"
#include "search_workers.h"
#include "tune_controller.h"

namespace studio {

SessionController::SessionController(ModelController* model, SearchController* search, TuneController* tune,
                                     ExportWorker* exporter, QObject* parent)
    : QObject(parent), model_(model), search_(search), tune_(tune), exporter_(exporter) {
    connect(exporter_, &ExportWorker::sessionSaved, this, [this](const QString& p) {
        path_ = p;
        emit saved(p);
    });
    connect(search_, &SearchController::started, this, [this](const SearchSnapshotPtr& snap, bool) {
        if (!pending_ || stage_ != 2) return;
        const SessionData& d = *pending_;
        if (!d.prefix.empty() && d.prefix != snap->prefix) {
            finish(tr("the restored prefix differs from the session's"));
        } else if (d.tuned && !d.cushion_file.isEmpty()) {
            stage_ = 3;
            ExportWorker* w = exporter_;
            const QString file = d.cushion_file;
            const ModelInfoPtr m = model_->model();
            WorkerThreads::post(w, [w, file, m] { w->loadCushion(file, m); });
        } else {
            restoreTuner();
        }
    });
    connect(exporter_, &ExportWorker::cushionLoaded, this, [this](const CushionPtr& c, const QString& file) {
        if (!pending_ || stage_ != 3) return;
        const SearchSnapshotPtr s = search_->snapshot();
        if (!s || pending_->cushion_prefix != s->prefix) {
            finish(tr("the cushion file %1 is for another prefix").arg(file));
            return;
        }
        tune_->setRestored(c, pending_->tune_points);
        emit tunedRestored(c, pending_->tune_points);
        emit log(tr("Tuned cushion restored from %1").arg(file));
        restoreTuner();
    });
    connect(tune_, &TuneController::updated, this, [this](const TuneSnapshotPtr& snap) {
        if (!pending_ || stage_ != 4) return;
        emit log(tr("Tuning resumes from the session: %1 of %2 batches done").arg(snap->steps_done).arg(snap->total_steps));
        finish({});
    });
}

void SessionController::save(const QString& path, SessionData d, const CushionPtr& c, bool tuned) {
    const ModelInfoPtr m = model_->model();
    if (!m) {
        emit error(tr("Open a model first: a session starts from a model"));
        return;
    }
    d.model_path = QFileInfo(m->path).absoluteFilePath();
    d.device = m->device;
    d.dtype = m->dtype;
    if (const SearchSnapshotPtr s = search_->snapshot()) {
        // The search is restored from its own settings and sample (its calibration text).
        const bool pruned = d.search.pruned;
        d.search = s->settings;
        d.search.pruned = pruned;
        d.calib_path = s->calib_path;
        d.prefix = s->prefix;
        d.search_state = s->state_json;
    }
    d.tune_points = tune_->points();
    d.tuned = tuned;
    if (c) {
        const SearchSnapshotPtr s = search_->snapshot();
        d.cushion_prefix = s ? s->prefix : std::vector<int>{};
    }
    emit log(tr("Saving the session to %1").arg(path));
    ExportWorker* w = exporter_;
    // The session, the cushion and the tuner state are written as one set on the export thread (session_files.h).
    auto write = [w, path, d, c](const TunerStatePtr& t) {
        WorkerThreads::post(w, [w, path, d, c, t] { w->saveSession(path, d, c, t); });
    };
    if (!tune_->snapshot()) {
        write(nullptr);
        return;
    }
    // The tuner lives on the tuning thread: its state taken there first (between batches), then the set written.
    tune_->takeState(write, [this](const QString& m) {
        emit error(tr("The session was not saved: the tuner state could not be taken: %1").arg(m));
    });
}

void SessionController::open(const QString& path) {
    SessionData d;
    try {
        // Core's rule for inputs first: a named pipe (whose open would wait for a writer for ever), a device or a
        // directory is refused, naming what it is.
        d = readSessionFile(path);
    } catch (const std::exception& e) {
        emit error(tr("Cannot open the session: %1").arg(QString::fromUtf8(e.what())));  // names the file
        return;
    }
    // The cushion and tuner files must be the ones saved with the session (SHA-256): one left by a save that did
    // not finish, or replaced by hand, is not restored.
    const QStringList mismatched = checkSessionFiles(&d);
    for (const QString& m : mismatched) emit error(tr("The session %1 opens without a file: %2").arg(path, m));
    if (!QFileInfo::exists(d.model_path)) {
        emit error(tr("The session's model %1 does not exist").arg(d.model_path));
        return;
    }
    emit log(tr("Opening the session %1").arg(path));
    path_ = path;
    emit settingsRead(d);
    pending_ = std::make_unique<SessionData>(d);
    const ModelInfoPtr m = model_->model();
    const bool same_model = m && QFileInfo(m->path).canonicalFilePath() == QFileInfo(d.model_path).canonicalFilePath() &&
                            m->device == d.device && m->dtype == d.dtype;
    if (same_model) {
        search_->reset();
        tune_->reset();
        continueRestore();
    } else {
        stage_ = 1;
        model_->open(d.model_path, d.device, d.dtype);
    }
}

void SessionController::modelLoaded() {
    if (pending_ && stage_ == 1) continueRestore();
}

void SessionController::continueRestore() {
    if (!pending_) return;
    if (!pending_->search_state.isEmpty()) {
        stage_ = 2;
        search_->restore(pending_->search_state);
        return;
    }
    finish({});
}

// Stage 4, after the search and the tuned cushion: a tuner from the session's state file, to resume tuning.
void SessionController::restoreTuner() {
    if (!pending_) return;
    const SessionData& d = *pending_;
    const SearchSnapshotPtr s = search_->snapshot();
    if (d.tuner_file.isEmpty() || !s || !s->cushion) {
        finish({});
        return;
    }
    if (!QFileInfo::exists(d.tuner_file)) {
        finish(tr("the tuner state %1 is missing: tuning cannot resume").arg(d.tuner_file));
        return;
    }
    stage_ = 4;
    tune_->resumeFrom(d.tuner_file, d.calib_path, d.tune);
}

void SessionController::finish(const QString& problem) {
    if (!pending_) return;
    pending_.reset();
    stage_ = 0;
    if (!problem.isEmpty()) emit error(tr("The session was opened in part: %1").arg(problem));
    emit log(tr("Session %1 opened").arg(path_));
    emit opened();
}

bool SessionController::takeModelFailure() {
    if (!pending_ || stage_ != 1) return false;
    finish(tr("the model could not be loaded"));
    return true;
}

bool SessionController::takeSearchFailure(const QString& m) {
    if (!pending_ || stage_ != 2) return false;
    finish(tr("the search could not be restored: %1").arg(m));
    return true;
}

bool SessionController::takeTuneFailure(const QString& m) {
    if (!pending_ || stage_ != 4) return false;
    finish(tr("tuning cannot resume: %1").arg(m));
    return true;
}

bool SessionController::takeExportFailure(const QString& m) {
    if (!pending_ || stage_ != 3) return false;
    finish(tr("the cushion could not be loaded: %1").arg(m));
    return true;
}

}  // namespace studio
