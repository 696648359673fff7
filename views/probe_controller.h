// The prompt's probes, apart from any widget: the activation heatmaps of the prompt (ProbeWorker::probe) and
// the before / after view of the current cushion (ProbeWorker::compare). Each request gets an id; a result
// for an older request or another model is dropped (stale), and the worker skips a request when a newer one
// is queued (debounce). The comparison is computed when the view shows it and the prompt or the cushion
// changed since the last one ("dirty"). cancel() stops this controller's own jobs only: a probe posted
// afterwards runs. The window maps the signals onto the prompt panel and the centre; tests drive it alone
// (tests/gui/test_controllers.cpp).
#pragma once
#include <QObject>

#include <atomic>
#include <functional>
#include <memory>
#include <vector>

#include "base/progress.h"  // torch-free: cushion::CancelToken
#include "studio_types.h"

namespace studio {

class ProbeWorker;

class ProbeController : public QObject {
    Q_OBJECT
public:
    // What a probe takes from the views, asked when one is posted.
    struct Inputs {
        QString text;               // the prompt
        int layer = 0, site = 3;    // the channel map's layer and the probe site
        CushionPtr cushion;         // the current cushion (null: nothing to compare with)
        bool compare_shown = false; // the before / after view is on screen
    };
    ProbeController(ProbeWorker* worker, std::function<Inputs()> inputs, QObject* parent = nullptr);

    void setModel(const ModelInfoPtr& model);  // results for another model are dropped
    void probe();             // the prompt's heatmaps; then the comparison when it is shown
    void compare();           // before / after the current cushion (or cleared when there is none)
    void cushionChanged();    // the comparison is out of date; recomputed now when it is shown
    void compareShown();      // the view came on screen: recomputed when out of date
    void cancel();            // this controller's posted jobs (not those posted afterwards)

    ModelInfoPtr model() const { return model_; }
    ProbeRequest lastProbe() const { return last_probe_; }
    CompareRequest lastCompare() const { return last_compare_; }
    bool compareDirty() const { return compare_dirty_; }

signals:
    void probed(const studio::HeatmapDataPtr& data);       // the latest request's, for the current model
    void compared(const studio::CompareDataPtr& data);     // likewise
    void compareCleared();  // no comparison now: no model, no cushion or no prompt
    void status(const QString& text);                      // for the prompt panel
    void failed(const QString& message);

private:
    void post(std::function<void()> job);
    struct Job {
        cushion::CancelToken token;
        std::shared_ptr<std::atomic<bool>> ended;  // set on the worker's thread when the job has run
    };

    ProbeWorker* worker_;
    std::function<Inputs()> inputs_;
    ModelInfoPtr model_;
    quint64 probe_id_ = 0, compare_id_ = 0;
    bool compare_dirty_ = true;
    ProbeRequest last_probe_;
    CompareRequest last_compare_;
    std::vector<Job> jobs_;  // posted; those ended are dropped at the next post
};

}  // namespace studio
