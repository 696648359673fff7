// The studio's session file (views/session.cpp, Qt Core's JSON only; built when Qt 6 is found). Its contract:
// std::runtime_error with a message for a file that is not a session. A session that reads must write back and
// read again (sessionToJson / sessionFromJson).
#ifdef CUSHION_FUZZ_SESSION
#include <QByteArray>
#include <QString>

#include <stdexcept>

#include "fuzz_common.h"
#include "session.h"

namespace {

void run_session(const uint8_t* d, size_t n) {
    static const QString path = QString::fromStdString(fuzz::tmp_dir() + "/work.cushionstudio");
    const QByteArray bytes(reinterpret_cast<const char*>(d), static_cast<int>(n));
    fuzz::expect_only_errors("session", [&] {
        studio::SessionData s;
        try {
            s = studio::sessionFromJson(bytes, path);
        } catch (const std::runtime_error&) {
            return;  // the reader's contract
        }
        const QByteArray again = studio::sessionToJson(s, path);
        (void)studio::sessionFromJson(again, path);  // must not throw
    });
}

void seeds_session(const std::string& dir) {
    const QString path = QString::fromStdString(dir + "/x.cushionstudio");
    studio::SessionData s;
    s.model_path = "/models/stories260K.bin";
    s.prompt = "Once upon a time";
    s.calib_path = "/texts/calib.txt";
    s.prefix = {1, 42, 7};
    s.search_state = "{\"prefix\":[1,42,7]}";
    studio::TunePoint p;
    p.step = 3;
    p.ce = 2.5;
    s.tune_points = {p, p};
    s.tuned = true;
    s.cushion_file = QString::fromStdString(dir + "/x.cushion");
    s.cushion_prefix = {1, 42};
    s.tuner_file = QString::fromStdString(dir + "/x.tuner");
    const QByteArray j = studio::sessionToJson(s, path);
    fuzz::seed(dir, "session.json", j.toStdString());
    fuzz::seed(dir, "empty.json", "{\"format\":\"cushion-studio-session\",\"version\":1}", false);
    fuzz::seed(dir, "types.json",
               "{\"format\":\"cushion-studio-session\",\"version\":1,\"quantization\":{\"group\":1e300,\"wbits\":\"8\"},"
               "\"search\":{\"prefix\":[1e20,-1,null]},\"tuning\":{\"points\":[{\"step\":1e300}]}}",
               false);
    // Fields of the wrong type (each an error naming the field since issue 15; they were silently the default).
    fuzz::seed(dir, "types2.json",
               "{\"format\":\"cushion-studio-session\",\"version\":1,\"model\":\"m.bin\",\"search\":{\"tau\":\"0.5\","
               "\"pruned\":1},\"tuning\":{\"points\":{\"ce\":\"low\"}},\"view\":{\"site\":1e12},\"cushion\":[1]}",
               false);
}

}  // namespace

CUSHION_FUZZ_TARGET(session, nullptr, run_session, seeds_session);
#endif
