#include "session.h"

#include <QDir>
#include <QFileInfo>
#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>

#include <climits>
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

[[noreturn]] void badField(const std::string& field, const char* what) {
    throw std::runtime_error("session file: field '" + field + "' must be " + what);
}

// Fields read with their type checked: absent (or null) gives the default; present with the wrong type is an error
// naming the field (a string where a number belongs was silently the default). `prefix` is the section ("search.").
int intOf(const QJsonObject& o, const char* key, int def, const std::string& prefix) {
    const std::string field = prefix + key;
    const qint64 v = int64Of(o[key], def, field.c_str());
    if (v < INT32_MIN || v > INT32_MAX) badField(field, "a whole number within 32 bits");
    return static_cast<int>(v);
}
double numberOf(const QJsonObject& o, const char* key, double def, const std::string& prefix) {
    const QJsonValue v = o[key];
    if (v.isUndefined() || v.isNull()) return def;
    if (!v.isDouble()) badField(prefix + key, "a number");
    return v.toDouble();
}
bool boolOf(const QJsonObject& o, const char* key, bool def, const std::string& prefix) {
    const QJsonValue v = o[key];
    if (v.isUndefined() || v.isNull()) return def;
    if (!v.isBool()) badField(prefix + key, "true or false");
    return v.toBool();
}
QString stringOf(const QJsonObject& o, const char* key, const QString& def, const std::string& prefix) {
    const QJsonValue v = o[key];
    if (v.isUndefined() || v.isNull()) return def;
    if (!v.isString()) badField(prefix + key, "a string");
    return v.toString();
}
QJsonObject objectOf(const QJsonObject& o, const char* key, const std::string& prefix = "") {
    const QJsonValue v = o[key];
    if (v.isUndefined() || v.isNull()) return QJsonObject();
    if (!v.isObject()) badField(prefix + key, "an object");
    return v.toObject();
}

std::vector<int> idsOf(const QJsonObject& o, const char* key, const std::string& prefix) {
    const QJsonValue v = o[key];
    std::vector<int> out;
    if (v.isUndefined() || v.isNull()) return out;
    if (!v.isArray()) badField(prefix + key, "an array of token ids");
    const QJsonArray a = v.toArray();
    for (int i = 0; i < a.size(); ++i) {
        const std::string field = prefix + key + "[" + std::to_string(i) + "]";
        const qint64 id = int64Of(a[i], -1, field.c_str());
        if (a[i].isNull() || id < 0 || id > INT32_MAX) badField(field, "a token id (a whole number >= 0)");
        out.push_back(static_cast<int>(id));
    }
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
    if (!doc.isObject()) throw std::runtime_error("not a session file (the JSON is not an object)");
    const QJsonObject root = doc.object();
    if (root["format"].toString() != kSessionFormat)
        throw std::runtime_error("not a cushion-studio session file (format '" + root["format"].toString().toStdString() + "')");
    if (root["version"].toInt() != 1)
        throw std::runtime_error("session file version " + std::to_string(root["version"].toInt()) + " is not supported");
    // Every field's type checked (absent: the default; wrong type: an error naming it, e.g. "search.tau").
    SessionData s;
    const QJsonObject model = objectOf(root, "model");
    s.model_path = resolve(stringOf(model, "path", "", "model."), session_path);
    s.device = stringOf(model, "device", "cpu", "model.");
    s.dtype = stringOf(model, "dtype", "fp32", "model.");
    s.prompt = stringOf(root, "prompt", "", "");
    const QJsonObject texts = objectOf(root, "texts");
    s.calib_path = resolve(stringOf(texts, "calibration", "", "texts."), session_path);
    s.eval_path = resolve(stringOf(texts, "evaluation", "", "texts."), session_path);
    const QJsonObject q = objectOf(root, "quantization");
    const std::string qs = "quantization.";
    s.quant.wbits = intOf(q, "wbits", s.quant.wbits, qs);
    s.quant.group = int64Of(q["group"], s.quant.group, "quantization.group");
    s.quant.abits = intOf(q, "abits", s.quant.abits, qs);
    try {
        s.quant.act = cushion::parse_granularity(
            stringOf(q, "granularity", cushion::granularity_name(s.quant.act), qs).toStdString());
    } catch (const std::exception& e) {
        throw std::runtime_error("quantization.granularity: " + std::string(e.what()));
    }
    s.quant.smoothquant_alpha =
        boolOf(q, "smoothquant", false, qs) ? numberOf(q, "alpha", kDefaultSmoothQuantAlpha, qs) : -1;
    s.quant.kv_bits = intOf(q, "kv_bits", s.quant.kv_bits, qs);
    const QJsonObject g = objectOf(root, "search");
    const std::string gs = "search.";
    SearchSettings& ss = s.search;
    ss.start = stringOf(g, "start", ss.start, gs);
    ss.tau = numberOf(g, "tau", ss.tau, gs);
    ss.max_prefix = intOf(g, "max_prefix", ss.max_prefix, gs);
    ss.sample_tokens = intOf(g, "sample_tokens", ss.sample_tokens, gs);
    ss.bits = intOf(g, "bits", ss.bits, gs);
    ss.pruned = boolOf(g, "pruned", ss.pruned, gs);
    ss.prune_window = intOf(g, "prune_window", ss.prune_window, gs);
    ss.prune_keep = intOf(g, "prune_keep", ss.prune_keep, gs);
    ss.candidates = stringOf(g, "candidates", ss.candidates, gs);
    ss.memory_mb = intOf(g, "memory_mb", ss.memory_mb, gs);
    s.prefix = idsOf(g, "prefix", gs);
    s.search_state = stringOf(g, "state", "", gs);
    const QJsonObject t = objectOf(root, "tuning");
    const std::string tsn = "tuning.";
    TuneSettings& ts = s.tune;
    ts.epochs = intOf(t, "epochs", ts.epochs, tsn);
    ts.batch = intOf(t, "batch", ts.batch, tsn);
    ts.lr = numberOf(t, "lr", ts.lr, tsn);
    ts.lambda = numberOf(t, "lambda", ts.lambda, tsn);
    ts.seed = intOf(t, "seed", ts.seed, tsn);
    ts.doc_tokens = intOf(t, "doc_tokens", ts.doc_tokens, tsn);
    ts.eval_docs = intOf(t, "eval_docs", ts.eval_docs, tsn);
    s.tuner_file = resolve(stringOf(t, "state", "", tsn), session_path);
    const QJsonValue points = t["points"];
    if (!points.isUndefined() && !points.isNull() && !points.isArray()) badField("tuning.points", "an array");
    const QJsonArray pa = points.toArray();
    for (int i = 0; i < pa.size(); ++i) {
        const std::string ps = "tuning.points[" + std::to_string(i) + "].";
        if (!pa[i].isObject()) badField("tuning.points[" + std::to_string(i) + "]", "an object");
        const QJsonObject o = pa[i].toObject();
        TunePoint p;
        p.step = int64Of(o["step"], 0, (ps + "step").c_str());
        p.epoch = intOf(o, "epoch", 0, ps);
        p.batch = int64Of(o["batch"], 0, (ps + "batch").c_str());
        p.batches_per_epoch = int64Of(o["batches_per_epoch"], 0, (ps + "batches_per_epoch").c_str());
        p.ce = numberOf(o, "ce", 0, ps);
        p.lq = numberOf(o, "lq", 0, ps);
        p.total = numberOf(o, "total", 0, ps);
        p.grad_norm = numberOf(o, "grad_norm", 0, ps);
        s.tune_points.push_back(p);
    }
    if (root.contains("cushion")) {
        const QJsonObject c = objectOf(root, "cushion");
        s.cushion_file = resolve(stringOf(c, "file", "", "cushion."), session_path);
        s.tuned = stringOf(c, "kind", "", "cushion.") == "tuned";
        s.cushion_prefix = idsOf(c, "prefix", "cushion.");
    }
    s.site = intOf(objectOf(root, "view"), "site", 3, "view.");
    return s;
}

}  // namespace studio
