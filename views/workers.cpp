// The engine's headers come before any Qt header: Qt's `slots`/`signals` macros break libtorch's.
#include <ATen/ATen.h>
#include <nlohmann/json.hpp>
#include <torch/cuda.h>

#include "model/activation_probe.h"
#include "cushion/cushion.h"
#include "base/error.h"
#include "model/model.h"
#include "package/open_target.h"
#include "model/perplexity.h"
#include "quant/quant_config.h"
#include "quant/quantized_model.h"
#include "package/quantized_package.h"

#include "search_workers.h"
#include "workers.h"

#include <QDateTime>
#include <QElapsedTimer>
#include <QFile>
#include <QMetaObject>

#include <algorithm>
#include <chrono>
#include <cmath>

namespace studio {

namespace {

struct MetaTypes {
    MetaTypes() {
        qRegisterMetaType<ModelInfoPtr>("studio::ModelInfoPtr");
        qRegisterMetaType<HeatmapDataPtr>("studio::HeatmapDataPtr");
        qRegisterMetaType<QuantResultPtr>("studio::QuantResultPtr");
        qRegisterMetaType<CompareDataPtr>("studio::CompareDataPtr");
        qRegisterMetaType<SearchSnapshotPtr>("studio::SearchSnapshotPtr");
        qRegisterMetaType<TuneSnapshotPtr>("studio::TuneSnapshotPtr");
        qRegisterMetaType<PplResultPtr>("studio::PplResultPtr");
        qRegisterMetaType<ExportResultPtr>("studio::ExportResultPtr");
        qRegisterMetaType<CushionPtr>("studio::CushionPtr");
        qRegisterMetaType<TunerStatePtr>("studio::TunerStatePtr");
    }
};

qint64 nowMs() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

QString q(const std::string& s) { return QString::fromStdString(s); }


// Captures |x| of chosen (layer, site) pairs as channel-major maps for batch row 0: every pair, every layer of
// one site, or one pair.
class ChannelCapture : public cushion::ActivationHook {
public:
    enum class Keep { All, SiteLayers, One };
    ChannelCapture(int layers, Keep keep, int layer, int site) : layers_(layers), keep_(keep), layer_(layer), site_(site) {}
    void on_activation(int layer, cushion::Site site, at::Tensor& x, const at::Tensor&) override {
        const int s = static_cast<int>(site);
        if (keep_ == Keep::SiteLayers && s != site_) return;
        if (keep_ == Keep::One && (layer != layer_ || s != site_)) return;
        at::Tensor a = x[0].detach().abs().to(at::kFloat).t().contiguous().cpu();  // (C, T)
        ChannelMap m;
        m.layer = layer;
        m.site = s;
        m.channels = static_cast<int>(a.size(0));
        m.tokens = static_cast<int>(a.size(1));
        m.values.assign(a.data_ptr<float>(), a.data_ptr<float>() + a.numel());
        maps.push_back(std::move(m));
    }
    std::vector<ChannelMap> maps;

private:
    int layers_;
    Keep keep_;
    int layer_, site_;
};

// Before the quantizer: remembers the activation it is about to see.
class PreQuant : public cushion::ActivationHook {
public:
    void on_activation(int, cushion::Site site, at::Tensor& x, const at::Tensor&) override {
        saved = cushion::site_is_linear_input(site) ? x.detach().to(at::kFloat).clone() : at::Tensor();
    }
    at::Tensor saved;
};

at::Tensor maskOf(const at::Tensor& valid, const at::Tensor& like) {
    if (!valid.defined()) return at::ones({like.size(0), like.size(1), 1}, like.options());
    return valid.to(like.device()).to(at::kFloat).unsqueeze(-1);
}

// After the quantizer: accumulates ||Q(x) - x||^2 and ||x||^2 per (layer, site) over real tokens, and the
// residual stream's squared distance from a full-precision reference.
class PostQuant : public cushion::ActivationHook {
public:
    PostQuant(const PreQuant* pre, int layers) : pre_(pre), num(layers, std::array<double, 4>{}), den(layers, std::array<double, 4>{}), rnum(layers), rden(layers) {}
    void on_activation(int layer, cushion::Site site, at::Tensor& x, const at::Tensor& valid) override {
        const int s = static_cast<int>(site);
        if (site == cushion::Site::Residual) {
            if (layer < static_cast<int>(fp_residual.size()) && fp_residual[layer].defined()) {
                const at::Tensor& ref = fp_residual[layer];
                at::Tensor m = maskOf(valid, ref);
                at::Tensor d = (x.detach().to(at::kFloat) - ref) * m;
                rnum[layer] += d.pow(2).sum().item<double>();
                rden[layer] += (ref * m).pow(2).sum().item<double>();
            }
            return;
        }
        if (!pre_->saved.defined()) return;
        at::Tensor m = maskOf(valid, pre_->saved);
        at::Tensor d = (x.detach().to(at::kFloat) - pre_->saved) * m;
        num[layer][s] += d.pow(2).sum().item<double>();
        den[layer][s] += (pre_->saved * m).pow(2).sum().item<double>();
    }
    const PreQuant* pre_;
    std::vector<std::array<double, 4>> num, den;
    std::vector<double> rnum, rden;
    std::vector<at::Tensor> fp_residual;  // per layer (B, T, C) float32, from the full-precision pass
};

class ResidualCapture : public cushion::ActivationHook {
public:
    explicit ResidualCapture(int layers) : out(layers) {}
    void on_activation(int layer, cushion::Site site, at::Tensor& x, const at::Tensor&) override {
        if (site == cushion::Site::Residual) out[layer] = x.detach().to(at::kFloat).clone();
    }
    std::vector<at::Tensor> out;
};

}  // namespace

QString printableToken(const std::string& s) {
    QString out;
    for (QChar c : QString::fromUtf8(s.data(), static_cast<int>(s.size()))) {
        if (c == '\n') out += "\\n";
        else if (c == '\t') out += "\\t";
        else if (c == '\r') out += "\\r";
        else if (c.unicode() < 32) out += QString("\\x%1").arg(c.unicode(), 2, 16, QChar('0'));
        else out += c;
    }
    return out;
}

QString siteName(int site) { return cushion::site_name(static_cast<cushion::Site>(site)); }

QString siteLabel(int site) {
    static const char* labels[kSites] = {"q/k/v in", "o in", "gate/up in", "down in", "residual"};
    return site >= 0 && site < kSites ? labels[site] : QString("?");
}

QStringList availableDevices() {
    QStringList out{"cpu"};
    try {
        const auto n = torch::cuda::device_count();
        for (size_t i = 0; i < n; ++i) out << QString("cuda:%1").arg(i);
    } catch (...) {
    }
    return out;
}

const ChannelMap* HeatmapData::channelMap(int layer, int site) const {
    for (const auto& m : channel_maps)
        if (m.layer == layer && m.site == site) return &m;
    return nullptr;
}

// ---------------------------------------------------------------------------------------------- Worker

void Worker::runJob(const QString& what, const std::function<void()>& job) {
    busy_.store(true);
    last_report_ms_ = -1000;
    emit started(what);
    try {
        job();
    } catch (const cushion::Cancelled&) {
        emit cancelled();
    } catch (const std::exception& e) {
        emit failed(QString::fromUtf8(e.what()));
    } catch (...) {
        emit failed("unknown error");
    }
    busy_.store(false);
    emit finished();
}

void Worker::requestCancel() {
    std::lock_guard<std::mutex> lock(tokens_mutex_);
    for (const cushion::CancelToken& t : live_) t.cancel();
}

cushion::CancelToken Worker::issue() {
    cushion::CancelToken t;
    std::lock_guard<std::mutex> lock(tokens_mutex_);
    live_.push_back(t);
    return t;
}

void Worker::run(const cushion::CancelToken& token, const std::function<void()>& fn) {
    current_ = token;
    fn();
    current_ = cushion::CancelToken();
    std::lock_guard<std::mutex> lock(tokens_mutex_);
    live_.erase(std::remove_if(live_.begin(), live_.end(),
                               [&](const cushion::CancelToken& t) { return t.same(token); }),
                live_.end());
}

bool Worker::report(double fraction, const std::string& what, double lo, double hi) {
    if (current_.cancelled()) return false;
    const qint64 t = nowMs();
    if (t - last_report_ms_ >= 100 || fraction >= 1.0) {
        last_report_ms_ = t;
        emit progress(lo + (hi - lo) * std::clamp(fraction, 0.0, 1.0), q(what));
    }
    return !current_.cancelled();
}

// ----------------------------------------------------------------------------------------- ModelWorker

namespace {
std::shared_ptr<const PackageInfo> packageInfo(const cushion::QuantizedPackage& pkg) {
    auto p = std::make_shared<PackageInfo>();
    const cushion::QuantConfig& c = pkg.config;
    p->dir = q(pkg.dir);
    p->describe = q(c.describe());
    p->quant = c;
    p->sites = q(cushion::sites_string(c.sites));
    const nlohmann::json info = nlohmann::json::parse(pkg.info_json);
    p->tool_version = q(info.value("tool_version", std::string("?")));
    if (info.contains("perplexity") && info["perplexity"].is_object()) {
        const nlohmann::json& pp = info["perplexity"];
        p->measured = true;
        p->ppl_fp = pp.value("fp", 0.0);
        p->ppl_fp_cushion = pp.value("fp_cushion", 0.0);
        p->ppl_quant = pp.value("quantized", 0.0);
        p->ppl_quant_cushion = pp.value("quantized_cushion", 0.0);
        p->eval_tokens = pp.value("tokens", int64_t(0));
        if (pp.contains("text_file") && pp["text_file"].is_string()) p->eval_file = q(pp["text_file"].get<std::string>());
    }
    p->cushion = std::make_shared<const cushion::Cushion>(pkg.cushion);
    p->cushion_text = q(pkg.cushion.prefix_text);
    return p;
}
}  // namespace

void ModelWorker::load(const QString& path, const QString& device, const QString& dtype) {
    runJob("Loading " + path, [&] {
        QElapsedTimer timer;
        timer.start();
        const c10::Device dev = cushion::parse_device(device.toStdString());
        const at::ScalarType dt = cushion::parse_dtype(dtype.toStdString());
        auto info = std::make_shared<ModelInfo>();
        // A package (hashes and tool version checked, weights dequantized from the codes) or a model: the rule
        // the CLI uses (package/open_target.h).
        cushion::OpenOptions oo;
        oo.device = dev;
        oo.dtype = dt;
        oo.progress = [this](double f, const std::string& w) { return report(f, w, 0, 0.95); };
        cushion::RunTarget t = cushion::open_target(path.toStdString(), oo);
        if (jobCancelled()) throw cushion::Cancelled();
        std::shared_ptr<cushion::Model> m = t.model;
        if (t.pkg) info->package = packageInfo(*t.pkg);
        const auto& c = m->config;
        info->path = path;
        info->format = info->package ? QString("package") : q(m->format);
        info->arch = q(c.arch_name);
        info->tokenizer = m->tokenizer ? q(m->tokenizer->kind()) : QString("none");
        info->device = q(m->device().str());
        info->dtype = q(cushion::dtype_name(m->dtype()));
        info->describe = q(c.describe());
        info->dim = c.dim;
        info->hidden = c.hidden_dim;
        info->layers = c.n_layers;
        info->heads = c.n_heads;
        info->kv_heads = c.n_kv_heads;
        info->head_dim = c.head_dim;
        info->vocab = c.vocab_size;
        info->context = c.max_seq_len;
        info->rope_theta = c.rope_theta;
        info->params = c.parameter_count();
        qint64 bytes = 0;
        m->weights.for_each(c, [&](const std::string&, const at::Tensor& t) { bytes += t.numel() * t.element_size(); });
        info->weight_bytes = bytes;
        for (const auto& w : m->warnings) info->warnings << q(w);
        if (!m->tokenizer) throw cushion::Error("the model has no tokenizer: " + path.toStdString());
        info->model = m;
        info->load_seconds = timer.elapsed() / 1000.0;
        report(1.0, "loaded");
        emit loaded(info);
    });
}

// ----------------------------------------------------------------------------------------- ProbeWorker

namespace {

// Probes `ids` (after `prefix` when given) and fills the layer x token maps of every site, and the channel
// maps (none when layer < 0): every (layer, site) when they fit in 128 MiB; else, with `site_layers`, every layer
// of `site` when those fit (switching the channel map's layer then needs no new forward pass: SmolLM2-135M with
// 512 tokens, 30 x 512 x 1536 floats at the down-projection inputs, 94 MB); else only (layer, site).
std::shared_ptr<HeatmapData> probeTokens(const cushion::Model& m, std::vector<int32_t> ids, const cushion::KVCache* prefix,
                                         int layer, int site, bool site_layers = false) {
    const auto& tk = *m.tokenizer;
    auto data = std::make_shared<HeatmapData>();
    const int64_t room = m.config.max_seq_len - (prefix ? prefix->length() : 0);
    if (static_cast<int64_t>(ids.size()) > room) {
        ids.resize(std::max<int64_t>(room, 0));
        data->truncated = true;
    }
    const int T = static_cast<int>(ids.size());
    const int L = static_cast<int>(m.config.n_layers);
    if (T == 0) throw cushion::Error("the prompt has no tokens");
    std::vector<int64_t> ids64(ids.begin(), ids.end());
    at::Tensor tokens = at::tensor(ids64, at::kLong).reshape({1, T}).to(m.device());

    cushion::ProbeOptions po;
    po.top_k = 8;
    cushion::ActivationProbe probe(L, po);
    // Full maps for every (layer, site) when they fit in 128 MiB, else every layer of the shown site, else the one shown.
    constexpr int64_t budget = int64_t(128) << 20;
    const int64_t widest = std::max(m.config.dim, m.config.hidden_dim);
    const int64_t site_width = site == static_cast<int>(cushion::Site::DownIn) ? m.config.hidden_dim : m.config.dim;
    using Keep = ChannelCapture::Keep;
    const Keep keep = int64_t(L) * kSites * T * widest * 4 <= budget                 ? Keep::All
                      : site_layers && int64_t(L) * T * site_width * 4 <= budget ? Keep::SiteLayers
                                                                                  : Keep::One;
    ChannelCapture capture(L, keep, layer, site);
    cushion::HookChain chain;
    chain.hooks = {&probe, &capture};
    cushion::ForwardArgs fa;
    fa.hook = &chain;
    fa.prefix = prefix;
    fa.skip_logits = true;
    m.forward(tokens, fa);
    auto res = probe.take();

    data->model_key = &m;
    data->layers = L;
    data->tokens = T;
    data->token_ids.assign(ids.begin(), ids.end());
    for (int t = 0; t < T; ++t) {
        data->token_text << printableToken(tk.decode_token(t ? ids[t - 1] : -1, ids[t]));
        data->token_piece << printableToken(tk.piece(ids[t]));
    }
    for (int s = 0; s < kSites; ++s) {
        auto& mx = data->token_max[s];
        auto& rt = data->token_ratio[s];
        mx.resize(size_t(L) * T);
        rt.resize(size_t(L) * T);
        for (int l = 0; l < L; ++l) {
            const cushion::SiteSummary& S = res->at(l, static_cast<cushion::Site>(s));
            if (!S.defined()) continue;
            at::Tensor a = S.token_max[0].to(at::kFloat).contiguous();
            at::Tensor r = S.ratio()[0].to(at::kFloat).contiguous();
            std::copy(a.data_ptr<float>(), a.data_ptr<float>() + T, mx.begin() + size_t(l) * T);
            std::copy(r.data_ptr<float>(), r.data_ptr<float>() + T, rt.begin() + size_t(l) * T);
        }
    }
    if (layer >= 0) data->channel_maps = std::move(capture.maps);
    return data;
}

}  // namespace

void ProbeWorker::probe(const ProbeRequest& req) {
    if (req.id < latest_.load()) return;  // a newer prompt is queued: skip this one
    runJob("Probing", [&] {
        QElapsedTimer timer;
        timer.start();
        const cushion::Model& m = *req.model->model;
        std::vector<int32_t> ids = m.tokenizer->encode(req.text.toStdString(), true);
        if (!report(0.1, "forward pass")) throw cushion::Cancelled();
        auto data = probeTokens(m, std::move(ids), nullptr, req.layer, req.site, keep_site_layers_.load());
        data->request_id = req.id;
        data->model_key = req.model->model.get();
        data->seconds = timer.elapsed() / 1000.0;
        emit probed(data);
    });
}

void ProbeWorker::compare(const CompareRequest& req) {
    if (req.id < latest_compare_.load()) return;  // a newer one is queued
    runJob("Probing before / after the cushion", [&] {
        QElapsedTimer timer;
        timer.start();
        const cushion::Model& m = *req.model->model;
        if (!req.cushion) throw cushion::Error("no cushion to compare with");
        cushion::check_cushion_fits(*req.cushion, m, "the cushion");
        const cushion::Cushion c = cushion::cushion_to(*req.cushion, m.device(), m.dtype());
        std::vector<int32_t> ids = m.tokenizer->encode(req.text.toStdString(), true);
        // Without the cushion the text runs with its <bos>; with it, without (the cushion starts with <bos>).
        std::vector<int32_t> text = ids;
        const int32_t bos = m.tokenizer->bos_id();
        if (!text.empty() && text.front() == bos) text.erase(text.begin());
        if (text.empty()) throw cushion::Error("the prompt has no tokens");
        if (!report(0.1, "forward pass without the cushion")) throw cushion::Cancelled();
        auto before = probeTokens(m, ids, nullptr, -1, 0);
        if (!report(0.5, "forward pass after the cushion")) throw cushion::Cancelled();
        auto after = probeTokens(m, text, &c.kv, -1, 0);
        auto out = std::make_shared<CompareData>();
        out->request_id = req.id;
        out->model_key = req.model->model.get();
        before->model_key = after->model_key = out->model_key;
        before->seconds = after->seconds = timer.elapsed() / 1000.0;
        out->before = before;
        out->after = after;
        QStringList pieces;
        for (int32_t t : c.prefix_ids) pieces << "'" + printableToken(m.tokenizer->piece(t)) + "'";
        out->prefix_text = pieces.join(' ');
        out->prefix_len = static_cast<int>(c.prefix_ids.size());
        emit compared(out);
    });
}

// ----------------------------------------------------------------------------------------- QuantWorker

void QuantWorker::quantize(const QuantRequest& req) {
    runJob("Quantizing", [&] {
        QElapsedTimer timer;
        timer.start();
        const cushion::Model& m = *req.model->model;
        const int L = static_cast<int>(m.config.n_layers);
        const cushion::QuantConfig cfg = req.settings;
        cfg.validate();

        auto docs_of = [&](const QString& path, int limit) {
            return cushion::read_tokenized_documents(m, path.toStdString(), 0, limit);
        };
        const auto eval = docs_of(req.eval_path, req.max_eval_docs);
        std::vector<std::vector<int32_t>> calib;
        if (cfg.needs_activation_ranges()) calib = docs_of(req.calib_path, 0);

        auto result = std::make_shared<QuantResult>();
        result->model_key = req.model->model.get();
        result->describe = q(cfg.describe());
        result->calib_docs = static_cast<qint64>(calib.size());

        cushion::QuantizeOptions qo;
        qo.progress = [this](double f, const std::string& w) { return report(f, "activation ranges: " + w, 0, 0.35); };
        report(0, "activation ranges");
        auto qm = cushion::make_quantized_model(m, cfg, calib, qo);
        for (const auto& n : qm->notes()) result->notes << q(n);

        cushion::PerplexityOptions po;
        po.progress = [this](double f, const std::string&) { return report(f, "perplexity (full precision)", 0.35, 0.6); };
        const auto fp = cushion::perplexity(m, eval, po);
        po.progress = [this](double f, const std::string&) { return report(f, "perplexity (quantized)", 0.6, 0.85); };
        const auto qp = qm->perplexity(eval, po);
        result->fp_ppl = fp.ppl;
        result->q_ppl = qp.ppl;
        result->eval_tokens = qp.tokens;
        result->eval_docs = qp.docs;

        // Per-layer error: batches small enough that one batch's residual streams fit in ~256 MiB.
        const int64_t budget =
            std::clamp<int64_t>((int64_t(256) << 20) / std::max<int64_t>(1, int64_t(L) * m.config.dim * 4), 64, 4096);
        PreQuant pre;
        PostQuant post(&pre, L);
        size_t done = 0;
        cushion::for_each_batch(eval, budget, cushion::BatchOrder::AsGiven, [&](const std::vector<size_t>& idx) {
            const auto batch = cushion::gather(eval, idx);
            at::Tensor tokens, valid;
            cushion::pad_batch(batch, &tokens, &valid);
            tokens = tokens.to(m.device());
            valid = valid.to(m.device());
            ResidualCapture ref(L);
            cushion::ForwardArgs fa;
            fa.valid = valid;
            fa.skip_logits = true;
            fa.hook = &ref;
            m.forward(tokens, fa);
            post.fp_residual = std::move(ref.out);
            cushion::HookChain chain;
            chain.hooks = {&pre, qm->hook(), &post};
            fa.hook = &chain;
            qm->model().forward(tokens, fa);
            post.fp_residual.clear();
            done += idx.size();
            if (!report(double(done) / eval.size(), "per-layer error", 0.85, 1.0)) throw cushion::Cancelled();
        });
        for (int s = 0; s < 4; ++s) {
            result->act_error[s].resize(L);
            for (int l = 0; l < L; ++l)
                result->act_error[s][l] = post.den[l][s] > 0 ? std::sqrt(post.num[l][s] / post.den[l][s]) : 0.0;
        }
        result->residual_drift.resize(L);
        for (int l = 0; l < L; ++l)
            result->residual_drift[l] = post.rden[l] > 0 ? std::sqrt(post.rnum[l] / post.rden[l]) : 0.0;
        result->seconds = timer.elapsed() / 1000.0;
        report(1.0, "done");
        emit quantized(result);
    });
}

// --------------------------------------------------------------------------------------- WorkerThreads

WorkerThreads::WorkerThreads(QObject* parent) : QObject(parent) {
    static MetaTypes register_once;
    model_ = new ModelWorker;
    probe_ = new ProbeWorker;
    quant_ = new QuantWorker;
    search_ = new SearchWorker;
    tune_ = new TuneWorker;
    export_ = new ExportWorker;
    model_thread_.setObjectName("studio-model");
    probe_thread_.setObjectName("studio-probe");
    quant_thread_.setObjectName("studio-quant");
    search_thread_.setObjectName("studio-search");
    tune_thread_.setObjectName("studio-tune");
    export_thread_.setObjectName("studio-export");
    model_->moveToThread(&model_thread_);
    probe_->moveToThread(&probe_thread_);
    quant_->moveToThread(&quant_thread_);
    search_->moveToThread(&search_thread_);
    tune_->moveToThread(&tune_thread_);
    export_->moveToThread(&export_thread_);
    for (auto* t : {&model_thread_, &probe_thread_, &quant_thread_, &search_thread_, &tune_thread_, &export_thread_})
        t->start();
}

WorkerThreads::~WorkerThreads() {
    cancelAll();
    // Workers are deleted on their own threads, then the threads end.
    QMetaObject::invokeMethod(model_, [w = model_] { delete w; }, Qt::QueuedConnection);
    QMetaObject::invokeMethod(probe_, [w = probe_] { delete w; }, Qt::QueuedConnection);
    QMetaObject::invokeMethod(quant_, [w = quant_] { delete w; }, Qt::QueuedConnection);
    QMetaObject::invokeMethod(search_, [w = search_] { delete w; }, Qt::QueuedConnection);
    QMetaObject::invokeMethod(tune_, [w = tune_] { delete w; }, Qt::QueuedConnection);
    QMetaObject::invokeMethod(export_, [w = export_] { delete w; }, Qt::QueuedConnection);
    for (auto* t : {&model_thread_, &probe_thread_, &quant_thread_, &search_thread_, &tune_thread_, &export_thread_}) {
        t->quit();
        t->wait();
    }
}

cushion::CancelToken WorkerThreads::post(Worker* w, std::function<void()> fn) {
    const cushion::CancelToken token = w->issue();
    QMetaObject::invokeMethod(w, [w, token, fn = std::move(fn)] { w->run(token, fn); }, Qt::QueuedConnection);
    return token;
}

void connectWorker(Worker* w, QObject* receiver, WorkerHandlers h) {
    if (h.progress) QObject::connect(w, &Worker::progress, receiver, h.progress);
    if (h.failed) QObject::connect(w, &Worker::failed, receiver, h.failed);
    if (h.cancelled) QObject::connect(w, &Worker::cancelled, receiver, h.cancelled);
    if (h.finished) QObject::connect(w, &Worker::finished, receiver, h.finished);
}

void WorkerThreads::cancelAll() {
    model_->requestCancel();
    probe_->requestCancel();
    quant_->requestCancel();
    search_->requestCancel();
    tune_->requestCancel();
    export_->requestCancel();
}

qint64 processRss() {
    QFile f("/proc/self/statm");
    if (!f.open(QIODevice::ReadOnly)) return 0;
    const QList<QByteArray> parts = f.readAll().split(' ');
    if (parts.size() < 2) return 0;
    return parts[1].toLongLong() * 4096;
}

QString formatBytes(qint64 b) {
    const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = static_cast<double>(b);
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        ++u;
    }
    return u == 0 ? QString("%1 B").arg(b) : QString("%1 %2").arg(v, 0, 'f', v < 10 ? 2 : 1).arg(units[u]);
}

}  // namespace studio
