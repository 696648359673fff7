#include "session_files.h"

#include "base/atomic_file.h"
#include "base/error.h"
#include "base/sha256.h"
#include "cushion/cushion.h"
#include "cushion/prefix_tuner.h"

namespace studio {

TunerStatePtr takeTunerState(const cushion::PrefixTuner& tuner) {
    auto s = std::make_shared<TunerState>();
    tuner.save_state(&s->tensors, &s->state_json);
    for (auto& [name, t] : s->tensors) t = t.detach().to(at::kCPU).clone();  // .cpu() of a CPU tensor is the tensor
    return s;
}

void writeSessionFiles(const QString& path, SessionData d, const CushionPtr& cushion, const TunerStatePtr& tuner,
                       const std::function<bool()>& cancelled) {
    const auto check = [&] {
        if (cancelled && cancelled()) throw cushion::Cancelled();
    };
    std::vector<cushion::FileToWrite> files;
    d.tuner_file.clear();
    d.tuner_sha256.clear();
    if (tuner) {
        d.tuner_file = sessionTunerPath(path);
        files.push_back({d.tuner_file.toStdString(), [&](const std::string& tmp) {
                             check();
                             cushion::PrefixTuner::write_state_file(tmp, tuner->tensors, tuner->state_json);
                             d.tuner_sha256 = QString::fromStdString(cushion::sha256_file(tmp));
                         }});
    }
    d.cushion_file.clear();
    d.cushion_sha256.clear();
    if (cushion) {
        d.cushion_file = sessionCushionPath(path);
        files.push_back({d.cushion_file.toStdString(), [&](const std::string& tmp) {
                             check();
                             cushion::save_cushion(*cushion, tmp);
                             d.cushion_sha256 = QString::fromStdString(cushion::sha256_file(tmp));
                         }});
    }
    const std::string session = path.toStdString();
    files.push_back({session, [&](const std::string& tmp) {
                         check();
                         const QByteArray json = sessionToJson(d, path);
                         cushion::OutputFile out(tmp, session);
                         out.write(json.constData(), static_cast<size_t>(json.size()));
                         out.finish();
                     }});
    cushion::write_files_together(files);
}

}  // namespace studio
