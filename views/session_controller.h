// Session project files (session.h), apart from any widget. Saving writes the tuner's state first (between
// batches) when there is a tuner, then the cushion and the session JSON. Opening reads the file, hands its
// settings to the views (settingsRead), then restores in stages, each waiting for its job: 1 the model (when
// another is open), 2 the search (its state and sample), 3 the tuned cushion, 4 the tuner (tuning resumes).
// A stage that fails ends the restore with what was restored so far and says what was not.
#pragma once
#include <QObject>

#include <memory>

#include "session.h"
#include "studio_types.h"

namespace studio {

class ExportWorker;
class ModelController;
class SearchController;
class TuneController;

class SessionController : public QObject {
    Q_OBJECT
public:
    SessionController(ModelController* model, SearchController* search, TuneController* tune, ExportWorker* exporter,
                      QObject* parent = nullptr);

    // d: the views' part (model, prompt, texts, quantization, search and tuning settings, site); the search's
    // state, the tuning curve and the files beside the session are added here. cushion: the one to save.
    void save(const QString& path, SessionData d, const CushionPtr& cushion, bool tuned);
    void open(const QString& path);
    // The window calls this once it has taken a newly loaded model in (stage 1 goes on from there).
    void modelLoaded();
    // Failures of the jobs a restore waits for: true when the restore took it (and ended, saying so).
    bool takeModelFailure();
    bool takeSearchFailure(const QString& message);
    bool takeTuneFailure(const QString& message);
    bool takeExportFailure(const QString& message);

    QString path() const { return path_; }
    bool restoring() const { return pending_ != nullptr; }
    int stage() const { return stage_; }

signals:
    void settingsRead(const studio::SessionData& d);  // before the model loads: for the views
    void tunedRestored(const studio::CushionPtr& tuned, const std::vector<studio::TunePoint>& points);
    void saved(const QString& path);
    void opened();  // restored, in full or in part
    void log(const QString& line);
    void error(const QString& text);

private:
    void continueRestore();
    void restoreTuner();
    void finish(const QString& problem);

    ModelController* model_;
    SearchController* search_;
    TuneController* tune_;
    ExportWorker* exporter_;
    QString path_;
    std::unique_ptr<SessionData> pending_;
    int stage_ = 0;  // 1: waiting for the model, 2: the search, 3: the cushion, 4: the tuner
};

}  // namespace studio
