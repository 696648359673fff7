#include "session.h"

#include <QDir>
#include <QFileInfo>
#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>
#include <QObject>

#include <nlohmann/json.hpp>

#include <climits>
#include <cstdint>
#include <stdexcept>

#include "base/atomic_file.h"
#include "base/error.h"
#include "base/file_checks.h"
#include "base/json_file.h"
#include "base/sha256.h"

namespace studio {

namespace {

using cushion::JsonFields;
const nlohmann::json kEmpty = nlohmann::json::object();  // an absent section: every field takes its default

QJsonArray ids(const std::vector<int>& v) {
    QJsonArray a;
    for (int t : v) a.append(t);
    return a;
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
    if (!s.tuner_file.isEmpty() && !s.tuner_sha256.isEmpty()) tuning["state_sha256"] = s.tuner_sha256;
    root["tuning"] = tuning;
    if (!s.cushion_file.isEmpty()) {
        QJsonObject c{{"file", relative(s.cushion_file, session_path)},
                      {"kind", s.tuned ? "tuned" : "search"},
                      {"prefix", ids(s.cushion_prefix)}};
        if (!s.cushion_sha256.isEmpty()) c["sha256"] = s.cushion_sha256;
        root["cushion"] = c;
    }
    root["view"] = QJsonObject{{"site", s.site}};
    return QJsonDocument(root).toJson(QJsonDocument::Indented);
}

SessionData sessionFromJson(const QByteArray& json, const QString& session_path) {
    // Read with core's JSON rules (base/json_file.h): depth-checked parsing, then every field's type checked by
    // JsonFields (absent or null: the default; a wrong type: an error naming the file and the field, e.g.
    // "/dir/x.cushionstudio: field 'search.tau' must be a number, it is \"0.5\"").
    const std::string where = session_path.toStdString();
    const nlohmann::json doc = cushion::parse_json_text(json.toStdString(), where);
    if (!doc.is_object()) throw cushion::Error(where + ": not a session file (the JSON is not an object)");
    const JsonFields root(doc, where);
    const auto format = doc.find("format");
    if (format == doc.end() || !format->is_string() || format->get<std::string>() != kSessionFormat)
        throw cushion::Error(where + ": not a cushion-studio session file (format " +
                             (format == doc.end() ? std::string("missing") : format->dump()) + ")");
    const int64_t version = root.integer_or("version", 0);
    if (version != 1) throw cushion::Error(where + ": session file version " + std::to_string(version) + " is not supported");
    const auto section = [&](const char* key) { return root.has(key) ? root.object(key) : JsonFields(kEmpty, where, key); };
    const auto str = [](const JsonFields& o, const char* key, const QString& def) {
        return QString::fromStdString(o.string_or(key, def.toStdString()));
    };
    const auto int32 = [](const JsonFields& o, const char* key, int def) {
        return static_cast<int>(o.integer_or(key, def, INT32_MIN, INT32_MAX));
    };
    const auto ids = [](const JsonFields& o, const char* key) {
        std::vector<int> out;
        if (o.has(key))
            for (int64_t id : o.integers(key, 0, INT32_MAX)) out.push_back(static_cast<int>(id));
        return out;
    };
    SessionData s;
    const JsonFields model = section("model");
    s.model_path = resolve(str(model, "path", ""), session_path);
    s.device = str(model, "device", "cpu");
    s.dtype = str(model, "dtype", "fp32");
    s.prompt = str(root, "prompt", "");
    const JsonFields texts = section("texts");
    s.calib_path = resolve(str(texts, "calibration", ""), session_path);
    s.eval_path = resolve(str(texts, "evaluation", ""), session_path);
    const JsonFields q = section("quantization");
    s.quant.wbits = int32(q, "wbits", s.quant.wbits);
    s.quant.group = q.integer_or("group", s.quant.group, 0, int64_t(1) << 53);
    s.quant.abits = int32(q, "abits", s.quant.abits);
    const std::string granularity = q.string_or("granularity", cushion::granularity_name(s.quant.act));
    try {
        s.quant.act = cushion::parse_granularity(granularity);
    } catch (const std::exception& e) {
        throw cushion::Error(where + ": field 'quantization.granularity': " + e.what());
    }
    s.quant.smoothquant_alpha = q.boolean_or("smoothquant", false) ? q.number_or("alpha", kDefaultSmoothQuantAlpha) : -1;
    s.quant.kv_bits = int32(q, "kv_bits", s.quant.kv_bits);
    const JsonFields g = section("search");
    SearchSettings& ss = s.search;
    ss.start = str(g, "start", ss.start);
    ss.tau = g.number_or("tau", ss.tau);
    ss.max_prefix = int32(g, "max_prefix", ss.max_prefix);
    ss.sample_tokens = int32(g, "sample_tokens", ss.sample_tokens);
    ss.bits = int32(g, "bits", ss.bits);
    ss.pruned = g.boolean_or("pruned", ss.pruned);
    ss.prune_window = int32(g, "prune_window", ss.prune_window);
    ss.prune_keep = int32(g, "prune_keep", ss.prune_keep);
    ss.candidates = str(g, "candidates", ss.candidates);
    ss.memory_mb = int32(g, "memory_mb", ss.memory_mb);
    s.prefix = ids(g, "prefix");
    s.search_state = str(g, "state", "");
    const JsonFields t = section("tuning");
    TuneSettings& ts = s.tune;
    ts.epochs = int32(t, "epochs", ts.epochs);
    ts.batch = int32(t, "batch", ts.batch);
    ts.lr = t.number_or("lr", ts.lr);
    ts.lambda = t.number_or("lambda", ts.lambda);
    ts.seed = int32(t, "seed", ts.seed);
    ts.doc_tokens = int32(t, "doc_tokens", ts.doc_tokens);
    ts.eval_docs = int32(t, "eval_docs", ts.eval_docs);
    s.tuner_file = resolve(str(t, "state", ""), session_path);
    s.tuner_sha256 = str(t, "state_sha256", "");
    if (t.has("points")) {
        const JsonFields pa = t.array("points");
        for (size_t i = 0; i < pa.size(); ++i) {
            const JsonFields o = pa.at(i);
            if (!o.json().is_object()) o.fail("", "must be an object, it is an array");
            TunePoint p;
            p.step = o.integer_or("step", 0, -(int64_t(1) << 53), int64_t(1) << 53);
            p.epoch = int32(o, "epoch", 0);
            p.batch = o.integer_or("batch", 0, -(int64_t(1) << 53), int64_t(1) << 53);
            p.batches_per_epoch = o.integer_or("batches_per_epoch", 0, -(int64_t(1) << 53), int64_t(1) << 53);
            p.ce = o.number_or("ce", 0);
            p.lq = o.number_or("lq", 0);
            p.total = o.number_or("total", 0);
            p.grad_norm = o.number_or("grad_norm", 0);
            s.tune_points.push_back(p);
        }
    }
    if (root.has("cushion")) {
        const JsonFields c = root.object("cushion");
        s.cushion_file = resolve(str(c, "file", ""), session_path);
        s.tuned = c.string_or("kind", "") == "tuned";
        s.cushion_prefix = ids(c, "prefix");
        s.cushion_sha256 = str(c, "sha256", "");
    }
    s.site = int32(section("view"), "site", 3);
    return s;
}

SessionData readSessionFile(const QString& path) {
    // The same rule as every input of the engine and the CLI: a regular file (a named pipe with no writer would
    // block the open for ever; a device may never end; a directory or a symlink loop is refused, naming it).
    const std::string p = path.toStdString();
    cushion::require_regular_file(p, "session file");
    return sessionFromJson(QByteArray::fromStdString(cushion::read_text_file(p)), path);
}

QStringList checkSessionFiles(SessionData* d) {
    QStringList problems;
    const auto check = [&](QString* file, const QString& sha, const QString& what) {
        if (file->isEmpty() || sha.isEmpty()) return;
        QString problem;
        try {
            cushion::require_regular_file(file->toStdString(), what.toStdString());
            if (QString::fromStdString(cushion::sha256_file(file->toStdString())) != sha)
                problem = QObject::tr("%1 %2 is not the one this session was saved with (its SHA-256 differs: "
                                      "it was changed or replaced since, e.g. by a save that did not finish)")
                              .arg(what, *file);
        } catch (const std::exception& e) {
            problem = QString::fromUtf8(e.what());
        }
        if (problem.isEmpty()) return;
        problems << problem;
        file->clear();
    };
    check(&d->cushion_file, d->cushion_sha256, "the cushion file");
    check(&d->tuner_file, d->tuner_sha256, "the tuner state file");
    return problems;
}

}  // namespace studio
