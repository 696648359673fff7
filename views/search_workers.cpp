// The engine's headers come before any Qt header: Qt's `slots`/`signals` macros break libtorch's.
#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "cushion/cushion.h"
#include "base/atomic_file.h"
#include "base/error.h"
#include "cushion/greedy_search.h"
#include "cushion/token_lists.h"
#include "model/model.h"
#include "model/perplexity.h"
#include "cushion/prefix_tuner.h"
#include "quant/quant_config.h"
#include "quant/quantized_model.h"
#include "package/quantized_package.h"

#include "search_workers.h"
#include "session_files.h"

#include <QElapsedTimer>
#include <QFile>
#include <QFileInfo>

#include <algorithm>
#include <cmath>

namespace studio {

using json = nlohmann::json;

namespace {

QString q(const std::string& s) { return QString::fromStdString(s); }

// The vocabulary piece of a token, one line.
QString printablePiece(const cushion::Model& m, int32_t id) {
    return printableToken(m.tokenizer ? m.tokenizer->piece(id) : std::to_string(id));
}

cushion::GreedySearchOptions searchOptions(const SearchSettings& s, const cushion::Model& m) {
    cushion::GreedySearchOptions o;
    const auto& tk = *m.tokenizer;
    o.start_tokens = cushion::parse_start_tokens(s.start.toStdString(), tk, "start");
    o.tau = s.tau;
    o.max_prefix = s.max_prefix;
    o.loss.bits = s.bits;
    if (!s.candidates.trimmed().isEmpty())
        o.candidates = cushion::parse_token_ranges(s.candidates.toStdString(), m.config.vocab_size, "candidates");
    o.memory_budget = s.memory_mb > 0 ? int64_t(s.memory_mb) << 20 : 0;  // 0: default_memory_budget (free memory)
    o.pruned = s.pruned;
    o.prune_window = s.prune_window;
    o.prune_keep = s.prune_keep;
    return o;
}

cushion::QuantConfig validated(const cushion::QuantConfig& cfg) {
    cfg.validate();
    return cfg;
}

// The documents of a text file fitted after a prefix of prefix_len tokens (core/model/documents.h).
std::vector<std::vector<int32_t>> documents(const cushion::Model& m, const QString& path, int64_t prefix_len, int limit = 0) {
    return cushion::read_tokenized_documents(m, path.toStdString(), prefix_len, limit);
}

std::vector<double> toVector(const at::Tensor& t) {
    if (!t.defined()) return {};
    at::Tensor c = t.to(at::kCPU, at::kDouble).contiguous();
    return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

}  // namespace

bool SearchSettings::operator==(const SearchSettings& o) const {
    return start == o.start && tau == o.tau && max_prefix == o.max_prefix && sample_tokens == o.sample_tokens &&
           bits == o.bits && pruned == o.pruned && prune_window == o.prune_window && prune_keep == o.prune_keep &&
           candidates.trimmed() == o.candidates.trimmed() && memory_mb == o.memory_mb;
}

QString SearchSnapshot::prefixText() const {
    QStringList parts;
    for (const QString& p : prefix_pieces) parts << "'" + p + "'";
    return parts.join(' ');
}

QString cushionText(const CushionPtr& c) { return c ? q(c->prefix_text) : QString(); }
qint64 cushionLength(const CushionPtr& c) { return c ? c->length() : 0; }

// ---------------------------------------------------------------------------------------- SearchWorker

struct SearchWorker::State {
    ModelInfoPtr info;
    std::shared_ptr<const cushion::Model> model;
    SearchSettings settings;
    QString calib_path;
    std::unique_ptr<cushion::GreedySearch> search;
    SearchScoresPtr scores;
    std::unique_ptr<cushion::GreedyStepResult> scored;  // the last score(), for acceptScored() (commit)
    std::shared_ptr<const QStringList> vocab;
    quint64 serial = 0;
};

SearchWorker::SearchWorker(QObject* parent) : Worker(parent), s_(std::make_unique<State>()) {}
SearchWorker::~SearchWorker() = default;

void SearchWorker::requireSearch() const {
    if (!s_->search) throw cushion::Error("no search yet: start one");
}

void SearchWorker::start(const SearchRequest& req) {
    runJob("Starting the search", [&] {
        const cushion::Model& m = *req.model->model;
        cushion::GreedySearchOptions o = searchOptions(req.settings, m);
        report(0.05, "tokenizing the calibration text");
        // Whole documents: the sample is cut from their concatenation (documents() would fit each after a prefix
        // of this many tokens, i.e. empty them).
        const auto docs = cushion::tokenize_documents(m, cushion::read_documents(req.calib_path.toStdString()), int64_t(1) << 40);
        const int64_t n = req.settings.sample_tokens > 0 ? req.settings.sample_tokens
                                                          : cushion::default_sample_tokens(m.config, o.max_prefix);
        std::vector<int32_t> sample = cushion::make_search_sample(docs, m.tokenizer->bos_id(), n);
        if (!report(0.3, "L_q of the start prefix")) throw cushion::Cancelled();
        auto search = std::make_unique<cushion::GreedySearch>(req.model->model, std::move(sample), o);
        if (!req.restore_state.isEmpty()) {
            report(0.6, "restoring the search");
            search->restore(req.restore_state.toStdString());
        }
        auto vocab = std::make_shared<QStringList>();
        for (int32_t t = 0; t < m.config.vocab_size; ++t) *vocab << printablePiece(m, t);
        // Commit only now: a failure above leaves the previous search in place.
        s_->info = req.model;
        s_->model = req.model->model;
        s_->settings = req.settings;
        s_->calib_path = req.calib_path;
        s_->search = std::move(search);
        s_->scores.reset();
        s_->scored.reset();
        s_->vocab = vocab;
        report(1.0, "ready");
        publish(req.restore_state.isEmpty()
                    ? tr("New search: %1 candidates, sample of %2 tokens, L_q %3")
                          .arg(s_->search->candidates().size())
                          .arg(s_->search->sample().size())
                          .arg(s_->search->loss(), 0, 'g', 6)
                    : tr("Search restored: prefix of %1 tokens, L_q %2")
                          .arg(s_->search->prefix().size())
                          .arg(s_->search->loss(), 0, 'g', 6));
    });
}

namespace {
SearchScoresPtr scoresOf(const cushion::GreedyStepResult& r, const std::vector<int32_t>& scored_prefix, bool committed,
                         int64_t window) {
    auto s = std::make_shared<SearchScores>();
    s->step = r.step;
    s->pruned = r.kind == cushion::StepKind::Pruned;
    s->fast = r.kind == cushion::StepKind::Fast;
    s->committed = committed;
    s->scored_prefix.assign(scored_prefix.begin(), scored_prefix.end());
    s->loss = toVector(r.candidate_loss);
    s->window_loss = toVector(r.window_loss);
    s->shortlist.assign(r.shortlist.begin(), r.shortlist.end());
    s->best_token = r.best_token;
    s->best_loss = r.best_loss;
    s->loss_before = r.loss_before;
    // score() reports the decision step() would take; a committed step may have stopped instead.
    s->accepted = r.accepted;
    s->stop = r.stop == cushion::StopReason::None ? QString() : q(cushion::stop_reason_name(r.stop));
    s->reason = q(r.reason);
    s->evaluated = r.evaluated;
    s->batch = r.batch_size;
    s->window_tokens = s->pruned ? window : 0;
    s->seconds = r.seconds;
    return s;
}
}  // namespace

void SearchWorker::step(bool pruned) {
    runJob("Search step", [&] {
        requireSearch();
        auto& S = *s_->search;
        if (S.done()) {
            publish(tr("The search has stopped (%1); undo or use a candidate to go on")
                        .arg(cushion::stop_reason_name(S.stop_reason())));
            return;
        }
        const std::vector<int32_t> before = S.prefix();
        const auto kind = pruned ? cushion::StepKind::Pruned : S.default_kind();  // automatic: exhaustive or fast (core)
        cushion::GreedyStepResult r = S.step(kind, [this](double f, const std::string& w) { return report(f, w); });
        const int64_t window = std::min<int64_t>(S.options().prune_window, S.sample().size());
        if (r.candidate_loss.defined()) s_->scores = scoresOf(r, before, true, window);
        publish(tr("Step %1: %2 (%3 s)").arg(r.step).arg(q(r.reason)).arg(r.seconds, 0, 'f', 2));
    });
}

void SearchWorker::score(bool pruned) {
    runJob("Scoring candidates", [&] {
        requireSearch();
        auto& S = *s_->search;
        const auto kind = pruned ? cushion::StepKind::Pruned : S.default_kind();  // automatic: exhaustive or fast (core)
        cushion::GreedyStepResult r = S.score(kind, [this](double f, const std::string& w) { return report(f, w); });
        const int64_t window = std::min<int64_t>(S.options().prune_window, S.sample().size());
        s_->scores = scoresOf(r, S.prefix(), false, window);
        // The message before the move: r.reason was read after std::move(r) and came out empty.
        const QString message = tr("Scored %1 candidates (%2 s): tau would say: %3")
                                    .arg(r.evaluated).arg(r.seconds, 0, 'f', 2).arg(q(r.reason));
        s_->scored = std::make_unique<cushion::GreedyStepResult>(std::move(r));
        publish(message);
    });
}

// Accept commits the last scoring (GreedySearch::commit: what step() would have done with it).
void SearchWorker::acceptScored() {
    runJob("Accepting the best candidate", [&] {
        requireSearch();
        auto& S = *s_->search;
        const SearchScoresPtr sc = s_->scores;
        if (!sc || sc->best_token < 0 || !s_->scored) throw cushion::Error("score the candidates first");
        if (s_->scored->prefix != S.prefix()) throw cushion::Error("the scores are for another prefix: score again");
        if (!sc->accepted) {
            // tau says stop: appending the best anyway is the user's choice, an override.
            cushion::GreedyStepResult r = S.override_step(sc->best_token, [this](double f, const std::string& w) { return report(f, w); });
            publish(tr("Step %1: %2 (against tau)").arg(r.step).arg(q(r.reason)));
            return;
        }
        const cushion::GreedyStepResult r = S.commit(*s_->scored);
        auto committed = std::make_shared<SearchScores>(*sc);
        committed->committed = true;
        s_->scores = committed;
        publish(tr("Step %1: %2").arg(r.step).arg(q(r.reason)));
    });
}

namespace {
// The studio's Undo: the stop when the last step stopped (the prefix stays), else the last appended token
// (GreedySearch::undo, one history entry at a time). Throws when there is nothing to undo.
void undoLastStep(cushion::GreedySearch& S) {
    const auto& h = S.history();
    if (h.empty()) throw cushion::Error("nothing to undo: the prefix is the start prefix");
    if (h.back().token >= 0) {
        S.undo();
        return;
    }
    while (!h.empty() && h.back().token < 0) S.undo();
}
}  // namespace

void SearchWorker::useToken(int token, bool replace_last) {
    runJob("Appending the chosen candidate", [&] {
        requireSearch();
        auto& S = *s_->search;
        if (token < 0 || token >= s_->model->config.vocab_size) throw cushion::Error("no candidate selected");
        const std::string saved = S.state_json();
        if (replace_last) undoLastStep(S);
        try {
            cushion::GreedyStepResult r = S.override_step(token, [this](double f, const std::string& w) { return report(f, w); });
            publish(tr("Step %1: %2%3").arg(r.step).arg(q(r.reason)).arg(replace_last ? tr(" (instead of the best)") : QString()));
        } catch (...) {
            if (replace_last) S.restore(saved);  // cancelled or failed: as before the job
            throw;
        }
    });
}

void SearchWorker::undo() {
    runJob("Undoing the last step", [&] {
        requireSearch();
        auto& S = *s_->search;
        const std::vector<int32_t> before = S.prefix();
        undoLastStep(S);
        publish(before.size() > S.prefix().size()
                    ? tr("Undone: removed '%1' (%2); L_q %3").arg(s_->vocab->at(before.back())).arg(before.back()).arg(S.loss(), 0, 'g', 6)
                    : tr("Undone: the stop; the search can go on"));
    });
}

void SearchWorker::reset() {
    s_ = std::make_unique<State>();
}

void SearchWorker::publish(const QString& action) {
    const auto& S = *s_->search;
    auto snap = std::make_shared<SearchSnapshot>();
    snap->serial = ++s_->serial;
    snap->model_key = s_->model.get();
    snap->settings = s_->settings;
    snap->calib_path = s_->calib_path;
    snap->start.assign(S.options().start_tokens.begin(), S.options().start_tokens.end());
    snap->prefix.assign(S.prefix().begin(), S.prefix().end());
    for (int t : snap->prefix) snap->prefix_pieces << s_->vocab->at(t);
    snap->loss = S.loss();
    snap->initial_loss = S.initial_loss();
    snap->done = S.done();
    snap->stop = S.done() ? q(cushion::stop_reason_name(S.stop_reason())) : QString();
    snap->candidates = static_cast<qint64>(S.candidates().size());
    snap->sample_tokens = static_cast<qint64>(S.sample().size());
    for (const auto& e : S.history()) {
        SearchHistoryRow row;
        row.step = e.step;
        row.token = e.token;
        row.piece = e.token >= 0 ? s_->vocab->at(e.token) : QString();
        row.before = e.loss_before;
        row.after = e.loss_after;
        row.best = e.best_loss;
        row.accepted = e.accepted;
        row.overridden = e.overridden;
        row.pruned = e.pruned;
        row.stop = e.stop == cushion::StopReason::None ? QString() : q(cushion::stop_reason_name(e.stop));
        row.seconds = e.seconds;
        snap->history.push_back(row);
    }
    snap->scores = s_->scores;
    snap->last_action = action;
    snap->vocab = s_->vocab;
    snap->cushion = std::make_shared<const cushion::Cushion>(S.cushion());
    snap->state_json = q(S.state_json());
    emit updated(snap);
}

// ------------------------------------------------------------------------------------------ TuneWorker

struct TuneWorker::State {
    ModelInfoPtr info;
    std::unique_ptr<cushion::PrefixTuner> tuner;
    TuneSettings settings;
    CushionPtr init;
    quint64 serial = 0;
};

TuneWorker::TuneWorker(QObject* parent) : Worker(parent), s_(std::make_unique<State>()) {}
TuneWorker::~TuneWorker() = default;

void TuneWorker::start(const TuneRequest& req) {
    runJob("Starting prefix tuning", [&] {
        if (!req.init) throw cushion::Error("no cushion to tune: run the search first");
        const cushion::Model& m = *req.model->model;
        report(0.1, "tokenizing the calibration text");
        auto docs = documents(m, req.calib_path, 0);
        if (req.settings.doc_tokens > 0)
            for (auto& d : docs)
                if (static_cast<int64_t>(d.size()) > req.settings.doc_tokens + 1) d.resize(req.settings.doc_tokens + 1);
        cushion::PrefixTuneOptions o;
        o.epochs = req.settings.epochs;
        o.batch_size = req.settings.batch;
        o.lr = req.settings.lr;
        o.lambda = req.settings.lambda;
        o.seed = static_cast<uint64_t>(req.settings.seed);
        // L_q's bits and sites: those the search used (its settings travel in the cushion).
        o.loss = cushion::search_loss_options(*req.init, "the search's cushion");
        auto tuner = std::make_unique<cushion::PrefixTuner>(req.model->model, *req.init, docs, o);
        if (!req.state_path.isEmpty()) {
            report(0.8, "loading the tuner state");
            tuner->load_state(req.state_path.toStdString());
        }
        s_->info = req.model;
        s_->tuner = std::move(tuner);
        s_->settings = req.settings;
        s_->init = req.init;
        report(1.0, "ready");
        publish();
    });
}

void TuneWorker::step() {
    runJob("Tuning", [&] {
        if (!s_->tuner) throw cushion::Error("no tuning started");
        if (s_->tuner->done()) {
            publish();
            return;
        }
        const int64_t k = s_->tuner->steps_done(), total = s_->tuner->total_steps();
        s_->tuner->step([this, k, total](double f, const std::string&) {
            return report((k + f) / std::max<int64_t>(total, 1),
                          tr("batch %1 of %2").arg(k + 1).arg(total).toStdString());
        });
        publish();
    });
}

void TuneWorker::takeState() {
    runJob("Saving the tuner state", [&] {
        if (!s_->tuner) throw cushion::Error("no tuning to save");
        emit stateTaken(takeTunerState(*s_->tuner));
    });
}

void TuneWorker::measure(const PplRequest& req) {
    runJob("Measuring perplexity", [&] {
        QElapsedTimer timer;
        timer.start();
        const cushion::Model& m = *req.model->model;
        std::shared_ptr<const cushion::Cushion> c = req.cushion;
        if (!c && req.which == PplWhich::After) {
            if (!s_->tuner) throw cushion::Error("no tuning to measure");
            c = std::make_shared<const cushion::Cushion>(s_->tuner->cushion());
        }
        std::unique_ptr<cushion::Cushion> cd;
        if (c) {
            cushion::check_cushion_fits(*c, m, "the cushion");
            cd = std::make_unique<cushion::Cushion>(cushion::cushion_to(*c, m.device(), m.dtype()));
        }
        // As `cushion eval`: with a cushion the documents must fit after it (they lose their <bos>).
        const int64_t fit = std::max<int64_t>(cd ? cd->length() : 0, req.fit_after);
        const auto eval = documents(m, req.eval_path, fit, req.eval_docs);
        const cushion::QuantConfig cfg = validated(req.quant);
        std::vector<std::vector<int32_t>> calib;
        if (cfg.needs_activation_ranges()) calib = documents(m, req.calib_path, fit);
        auto out = std::make_shared<PplResult>();
        out->model_key = req.model->model.get();
        out->which = req.which;
        out->scheme = q(cfg.describe());
        cushion::PerplexityOptions po;
        if (cd) {
            po.prefix = &cd->kv;
            po.prefix_last_logits = cd->last_logits;
        }
        po.progress = [this](double f, const std::string&) { return report(f, "perplexity (full precision)", 0, 0.3); };
        const auto fp = cushion::perplexity(m, eval, po);
        cushion::QuantizeOptions qo;
        qo.prefix = cd ? &cd->kv : nullptr;
        qo.progress = [this](double f, const std::string&) { return report(f, "activation ranges", 0.3, 0.6); };
        cushion::QuantizedModel qm(m, cfg, calib, qo);
        po.progress = [this](double f, const std::string&) { return report(f, "perplexity (quantized)", 0.6, 1.0); };
        const auto qp = qm.perplexity(eval, po);
        out->fp = fp.ppl;
        out->quant = qp.ppl;
        out->tokens = qp.tokens;
        out->docs = qp.docs;
        out->seconds = timer.elapsed() / 1000.0;
        emit measured(out);
    });
}

void TuneWorker::reset() {
    s_ = std::make_unique<State>();
}

void TuneWorker::publish() {
    const auto& T = *s_->tuner;
    auto snap = std::make_shared<TuneSnapshot>();
    snap->serial = ++s_->serial;
    snap->model_key = s_->info->model.get();
    snap->settings = s_->settings;
    snap->prefix.assign(s_->init->prefix_ids.begin(), s_->init->prefix_ids.end());
    snap->prefix_text = q(s_->init->prefix_text);
    for (const auto& h : T.history()) {
        TunePoint p;
        p.step = h.step;
        p.epoch = h.epoch;
        p.batch = h.batch;
        p.batches_per_epoch = h.batches_per_epoch;
        p.ce = h.ce;
        p.lq = h.lq;
        p.total = h.total;
        p.grad_norm = h.grad_norm;
        p.epoch_end = h.epoch_end;
        p.done = h.done;
        p.seconds = h.seconds;
        snap->points.push_back(p);
    }
    snap->total_steps = T.total_steps();
    snap->steps_done = T.steps_done();
    snap->batches_per_epoch = T.batches_per_epoch();
    snap->documents = static_cast<qint64>(T.documents());
    snap->done = T.done();
    snap->cushion = T.steps_done() > 0 ? std::make_shared<const cushion::Cushion>(T.cushion()) : s_->init;
    emit updated(snap);
}

// ---------------------------------------------------------------------------------------- ExportWorker

void ExportWorker::exportPackage(const ExportRequest& req) {
    runJob("Exporting " + req.dir, [&] {
        QElapsedTimer timer;
        timer.start();
        if (!req.cushion) throw cushion::Error("no cushion to export: run the search first");
        const cushion::Model& m = *req.model->model;
        cushion::ExportOptions eo;
        eo.config = validated(req.quant);
        eo.calib_file = req.calib_path.toStdString();
        eo.eval_file = req.eval_path.toStdString();
        eo.overwrite = req.overwrite;
        // As `cushion export`: documents must fit after the cushion.
        report(0, "tokenizing");
        eo.calib_docs = documents(m, req.calib_path, req.cushion->length());
        if (!req.eval_path.isEmpty()) eo.eval_docs = documents(m, req.eval_path, req.cushion->length(), req.eval_docs);
        if (req.eval_docs > 0) eo.eval_file.clear();  // a subset: not the file `verify` would re-measure
        eo.progress = [this](double f, const std::string& w) { return report(f, w); };
        cushion::ExportReport r = cushion::write_package(m, *req.cushion, req.dir.toStdString(), eo);
        auto out = std::make_shared<ExportResult>();
        out->dir = q(r.dir);
        out->describe = q(eo.config.describe());
        out->ppl_fp = r.ppl_fp;
        out->ppl_fp_cushion = r.ppl_fp_cushion;
        out->ppl_quant = r.ppl_quant;
        out->ppl_quant_cushion = r.ppl_quant_cushion;
        out->eval_tokens = r.eval_tokens;
        out->bytes = static_cast<qint64>(r.bytes);
        out->fp32_weight_bytes = static_cast<qint64>(r.fp32_weight_bytes);
        out->package_weight_bytes = static_cast<qint64>(r.package_weight_bytes);
        for (const auto& n : r.notes) out->notes << q(n);
        out->seconds = timer.elapsed() / 1000.0;
        report(1.0, "done");
        emit exported(out);
    });
}

void ExportWorker::saveSession(const QString& path, const SessionData& d, const CushionPtr& c, const TunerStatePtr& t) {
    runJob("Saving the session", [&] {
        // One set: refused over a device, pipe or symlink; on a full disk or a read-only folder an error naming the
        // file and the cause, no temporary left, the previous session, cushion and tuner files all intact.
        writeSessionFiles(path, d, c, t, [this] { return jobCancelled(); });
        emit sessionSaved(path);
    });
}

void ExportWorker::loadCushion(const QString& path, const ModelInfoPtr& model) {
    runJob("Loading the cushion", [&] {
        auto c = std::make_shared<const cushion::Cushion>(cushion::load_cushion(path.toStdString()));
        if (model) cushion::check_cushion_fits(*c, *model->model, path.toStdString());
        emit cushionLoaded(c, path);
    });
}

}  // namespace studio
