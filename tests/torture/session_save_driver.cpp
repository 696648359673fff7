// Session save under the cancel torture (session_save_torture.sh): saves a big studio session through the studio's own
// code without widgets (views/session_files.h: writeSessionFiles, the session JSON, the cushion and the tuner state as
// one set), or checks what is on disk.
//   session_save_driver save PATH SEED   a session whose prompt is "seed SEED", cushion and tuner tensors filled from
//                                        SEED; SIGINT cancels the save as the studio's Cancel does (asked before each
//                                        file): exit 130; done: 0; an error: 2
//   session_save_driver check PATH       reads the session as File > Open does (readSessionFile, checkSessionFiles:
//                                        the cushion's and tuner's SHA-256), loads the cushion and the tuner file and
//                                        compares their contents with the seed; prints "seed N"; exit 0 when the set
//                                        is whole and consistent, 3 when a file does not match the session, 2 else
// Sizes (MiB of float32): SESSION_TORTURE_CUSHION_MB (default 8), SESSION_TORTURE_TUNER_MB (12), plus a search state
// string of SESSION_TORTURE_STATE_KB (1024) and 5,000 tuning points in the JSON.
#include "base/error.h"
#include "cushion/cushion.h"
#include "formats/safetensors.h"
#include "session_files.h"

#include <QString>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

std::atomic<bool> g_interrupted{false};
void on_sigint(int) { g_interrupted = true; }

int64_t env_int(const char* name, int64_t def) {
    const char* v = std::getenv(name);
    return v && *v ? std::atoll(v) : def;
}

float value_of(int seed) { return static_cast<float>(seed) + 0.25f; }

studio::SessionData session_of(int seed) {
    studio::SessionData d;
    d.model_path = "/models/stories260K.bin";
    d.prompt = QString("seed %1").arg(seed);
    d.prefix = {1, 42, seed % 500};
    d.cushion_prefix = d.prefix;
    d.tuned = true;
    d.search_state = QString(static_cast<int>(env_int("SESSION_TORTURE_STATE_KB", 1024) * 1024), QChar('a' + seed % 26));
    for (int i = 0; i < 5000; ++i) {
        studio::TunePoint p;
        p.step = i;
        p.ce = seed + i * 1e-3;
        d.tune_points.push_back(p);
    }
    return d;
}

studio::CushionPtr cushion_of(int seed) {
    const int64_t n = env_int("SESSION_TORTURE_CUSHION_MB", 8) * (1 << 20) / 4 / 4;  // 2 layers x (k, v)
    auto c = std::make_shared<cushion::Cushion>();
    c->prefix_ids = {1, 42, seed % 500};
    c->prefix_text = "torture";
    c->model_fingerprint = "session-torture";
    for (int l = 0; l < 2; ++l) {
        c->kv.k.push_back(at::full({1, 1, 3, n / 3}, value_of(seed)));  // (batch, heads, prefix length, dim)
        c->kv.v.push_back(at::full({1, 1, 3, n / 3}, value_of(seed)));
    }
    c->last_logits = at::full({32}, value_of(seed));
    return c;
}

studio::TunerStatePtr tuner_of(int seed) {
    const int64_t n = env_int("SESSION_TORTURE_TUNER_MB", 12) * (1 << 20) / 4 / 6;
    auto t = std::make_shared<studio::TunerState>();
    for (const char* name : {"tune.k.0", "tune.v.0", "tune.mk.0", "tune.vk.0", "tune.mv.0", "tune.vv.0"})
        t->tensors.push_back({name, at::full({n}, value_of(seed))});
    t->state_json = "{\"seed\": " + std::to_string(seed) + "}";
    return t;
}

int check(const QString& path) {
    studio::SessionData d = studio::readSessionFile(path);
    const QStringList problems = studio::checkSessionFiles(&d);
    if (!d.prompt.startsWith("seed ")) throw cushion::Error("the session's prompt is not 'seed N'");
    const int seed = d.prompt.mid(5).toInt();
    std::printf("seed %d\n", seed);
    if (!problems.isEmpty()) {
        for (const QString& p : problems) std::printf("mismatch: %s\n", qPrintable(p));
        return 3;
    }
    if (d.cushion_file.isEmpty() || d.tuner_file.isEmpty()) throw cushion::Error("the session names no cushion or tuner");
    const cushion::Cushion c = cushion::load_cushion(d.cushion_file.toStdString());
    if (c.prefix_ids != std::vector<int32_t>{1, 42, seed % 500} || !c.kv.k[1].eq(value_of(seed)).all().item<bool>())
        throw cushion::Error("the cushion is not the one of seed " + std::to_string(seed));
    cushion::SafetensorsFile t(d.tuner_file.toStdString());
    t.require_format("cushioncache-tuner-state", "tuner state file");
    if (!t.get("tune.vv.0").eq(value_of(seed)).all().item<bool>())
        throw cushion::Error("the tuner state is not the one of seed " + std::to_string(seed));
    if (d.search_state.size() != env_int("SESSION_TORTURE_STATE_KB", 1024) * 1024 || d.tune_points.size() != 5000)
        throw cushion::Error("the session JSON is not whole");
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    std::signal(SIGINT, on_sigint);
    const std::string mode = argc > 1 ? argv[1] : "";
    if (argc < 3 || (mode != "save" && mode != "check") || (mode == "save" && argc < 4)) {
        std::fprintf(stderr, "usage: session_save_driver save PATH SEED | check PATH\n");
        return 2;
    }
    const QString path = QString::fromLocal8Bit(argv[2]);
    try {
        if (mode == "check") return check(path);
        const int seed = std::atoi(argv[3]);
        const studio::SessionData d = session_of(seed);
        const studio::CushionPtr c = cushion_of(seed);
        const studio::TunerStatePtr t = tuner_of(seed);
        studio::writeSessionFiles(path, d, c, t, [] { return g_interrupted.load(); });
        return 0;
    } catch (const cushion::Cancelled&) {
        std::fprintf(stderr, "cancelled\n");
        return 130;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 2;
    }
}
