#include "session.h"

#include <QDir>
#include <QFileInfo>
#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>

#include <cmath>
#include <stdexcept>

namespace studio {

namespace {

QJsonArray ids(const std::vector<int>& v) {
    QJsonArray a;
    for (int t : v) a.append(t);
    return a;
}

// An integer field stored as a JSON number: `def` when absent; an error naming the field when it is not a whole
// number in +-2^53 (a cast of 1e300 or NaN to an integer is undefined behaviour: found by the session fuzz target).
qint64 int64Of(const QJsonValue& v, qint64 def, const char* field) {
    if (v.isUndefined() || v.isNull()) return def;
    const double d = v.toDouble(std::nan(""));
    if (!v.isDouble() || !std::isfinite(d) || std::fabs(d) > 9007199254740992.0 || d != std::floor(d))
        throw std::runtime_error(std::string("session file: field '") + field + "' is not an integer");
    return static_cast<qint64>(d);
}

std::vector<int> idsOf(const QJsonValue& v) {
    std::vector<int> out;
    for (const QJsonValue& x : v.toArray()) out.push_back(x.toInt());
    return out;
}

QString resolve(const QString& path, const QString& session_path) {
    if (path.isEmpty() || QFileInfo(path).isAbsolute()) return path;
    return QFileInfo(session_path).absoluteDir().filePath(path);
}

// Relative to the session file when beside it (or below), so the files can be moved together.
QString relative(const QString& path, const QString& session_path) {
    const QString rel = QFileInfo(session_path).absoluteDir().relativeFilePath(path);
    return rel.startsWith("..") ? path : rel;
}

}  // namespace

QString sessionCushionPath(const QString& session_path) {
    const QFileInfo fi(session_path);
    return fi.absoluteDir().filePath(fi.completeBaseName() + ".cushion");
}

QString sessionTunerPath(const QString& session_path) {
    const QFileInfo fi(session_path);
    return fi.absoluteDir().filePath(fi.completeBaseName() + ".tuner");
}

QByteArray sessionToJson(const SessionData& s, const QString& session_path) {
    QJsonObject root;
    root["format"] = kSessionFormat;
    root["version"] = 1;
    root["model"] = QJsonObject{{"path", s.model_path}, {"device", s.device}, {"dtype", s.dtype}};
    root["prompt"] = s.prompt;
    root["texts"] = QJsonObject{{"calibration", s.calib_path}, {"evaluation", s.eval_path}};
    const cushion::QuantConfig& q = s.quant;
    root["quantization"] = QJsonObject{{"wbits", q.wbits},
                                       {"group", static_cast<double>(q.group)},
                                       {"abits", q.abits},
                                       {"granularity", cushion::granularity_name(q.act)},
                                       {"smoothquant", q.smoothquant_on()},
                                       {"alpha", q.smoothquant_on() ? q.smoothquant_alpha : kDefaultSmoothQuantAlpha},
                                       {"kv_bits", q.kv_bits}};
    const SearchSettings& g = s.search;
    QJsonObject search{{"start", g.start},
                       {"tau", g.tau},
                       {"max_prefix", g.max_prefix},
                       {"sample_tokens", g.sample_tokens},
                       {"bits", g.bits},
                       {"pruned", g.pruned},
                       {"prune_window", g.prune_window},
                       {"prune_keep", g.prune_keep},
                       {"candidates", g.candidates},
                       {"memory_mb", g.memory_mb},
                       {"prefix", ids(s.prefix)}};
    if (!s.search_state.isEmpty()) search["state"] = s.search_state;
    root["search"] = search;
    const TuneSettings& t = s.tune;
    QJsonArray points;
    for (const TunePoint& p : s.tune_points)
        points.append(QJsonObject{{"step", static_cast<double>(p.step)},
                                  {"epoch", p.epoch},
                                  {"batch", static_cast<double>(p.batch)},
                                  {"batches_per_epoch", static_cast<double>(p.batches_per_epoch)},
                                  {"ce", p.ce},
                                  {"lq", p.lq},
                                  {"total", p.total},
                                  {"grad_norm", p.grad_norm}});
    QJsonObject tuning{{"epochs", t.epochs},       {"batch", t.batch},   {"lr", t.lr},
                       {"lambda", t.lambda},       {"seed", t.seed},     {"doc_tokens", t.doc_tokens},
                       {"eval_docs", t.eval_docs}, {"points", points},   {"tuned", s.tuned}};
    if (!s.tuner_file.isEmpty()) tuning["state"] = relative(s.tuner_file, session_path);
    root["tuning"] = tuning;
    if (!s.cushion_file.isEmpty())
        root["cushion"] = QJsonObject{{"file", relative(s.cushion_file, session_path)},
                                      {"kind", s.tuned ? "tuned" : "search"},
                                      {"prefix", ids(s.cushion_prefix)}};
    root["view"] = QJsonObject{{"site", s.site}};
    return QJsonDocument(root).toJson(QJsonDocument::Indented);
}

SessionData sessionFromJson(const QByteArray& json, const QString& session_path) {
    QJsonParseError err;
    const QJsonDocument doc = QJsonDocument::fromJson(json, &err);
    if (doc.isNull()) throw std::runtime_error("not a session file (JSON error: " + err.errorString().toStdString() + ")");
    const QJsonObject root = doc.object();
    if (root["format"].toString() != kSessionFormat)
        throw std::runtime_error("not a cushion-studio session file (format '" + root["format"].toString().toStdString() + "')");
    if (root["version"].toInt() != 1)
        throw std::runtime_error("session file version " + std::to_string(root["version"].toInt()) + " is not supported");
    SessionData s;
    const QJsonObject model = root["model"].toObject();
    s.model_path = resolve(model["path"].toString(), session_path);
    s.device = model["device"].toString("cpu");
    s.dtype = model["dtype"].toString("fp32");
    s.prompt = root["prompt"].toString();
    const QJsonObject texts = root["texts"].toObject();
    s.calib_path = resolve(texts["calibration"].toString(), session_path);
    s.eval_path = resolve(texts["evaluation"].toString(), session_path);
    const QJsonObject q = root["quantization"].toObject();
    s.quant.wbits = q["wbits"].toInt(s.quant.wbits);
    s.quant.group = int64Of(q["group"], s.quant.group, "quantization.group");
    s.quant.abits = q["abits"].toInt(s.quant.abits);
    try {
        s.quant.act = cushion::parse_granularity(
            q["granularity"].toString(cushion::granularity_name(s.quant.act)).toStdString());
    } catch (const std::exception& e) {
        throw std::runtime_error("quantization.granularity: " + std::string(e.what()));
    }
    s.quant.smoothquant_alpha = q["smoothquant"].toBool(false) ? q["alpha"].toDouble(kDefaultSmoothQuantAlpha) : -1;
    s.quant.kv_bits = q["kv_bits"].toInt(s.quant.kv_bits);
    const QJsonObject g = root["search"].toObject();
    SearchSettings& ss = s.search;
    ss.start = g["start"].toString(ss.start);
    ss.tau = g["tau"].toDouble(ss.tau);
    ss.max_prefix = g["max_prefix"].toInt(ss.max_prefix);
    ss.sample_tokens = g["sample_tokens"].toInt(ss.sample_tokens);
    ss.bits = g["bits"].toInt(ss.bits);
    ss.pruned = g["pruned"].toBool(ss.pruned);
    ss.prune_window = g["prune_window"].toInt(ss.prune_window);
    ss.prune_keep = g["prune_keep"].toInt(ss.prune_keep);
    ss.candidates = g["candidates"].toString(ss.candidates);
    ss.memory_mb = g["memory_mb"].toInt(ss.memory_mb);
    s.prefix = idsOf(g["prefix"]);
    s.search_state = g["state"].toString();
    const QJsonObject t = root["tuning"].toObject();
    TuneSettings& ts = s.tune;
    ts.epochs = t["epochs"].toInt(ts.epochs);
    ts.batch = t["batch"].toInt(ts.batch);
    ts.lr = t["lr"].toDouble(ts.lr);
    ts.lambda = t["lambda"].toDouble(ts.lambda);
    ts.seed = t["seed"].toInt(ts.seed);
    ts.doc_tokens = t["doc_tokens"].toInt(ts.doc_tokens);
    ts.eval_docs = t["eval_docs"].toInt(ts.eval_docs);
    s.tuner_file = resolve(t["state"].toString(), session_path);
    for (const QJsonValue& v : t["points"].toArray()) {
        const QJsonObject o = v.toObject();
        TunePoint p;
        p.step = int64Of(o["step"], 0, "tuning.points[].step");
        p.epoch = o["epoch"].toInt();
        p.batch = int64Of(o["batch"], 0, "tuning.points[].batch");
        p.batches_per_epoch = int64Of(o["batches_per_epoch"], 0, "tuning.points[].batches_per_epoch");
        p.ce = o["ce"].toDouble();
        p.lq = o["lq"].toDouble();
        p.total = o["total"].toDouble();
        p.grad_norm = o["grad_norm"].toDouble();
        s.tune_points.push_back(p);
    }
    if (root.contains("cushion")) {
        const QJsonObject c = root["cushion"].toObject();
        s.cushion_file = resolve(c["file"].toString(), session_path);
        s.tuned = c["kind"].toString() == "tuned";
        s.cushion_prefix = idsOf(c["prefix"]);
    }
    s.site = root["view"].toObject()["site"].toInt(3);
    return s;
}

}  // namespace studio
