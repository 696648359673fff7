// A session's files on disk, apart from any widget: the session JSON, the cushion beside it ("<name>.cushion") and the
// tuner's state ("<name>.tuner") written as one set with core's write_files_together: all three into temporaries
// first, then renamed into place, the session (which names the other two and their SHA-256) last. A full disk, a
// read-only folder, a refused target or a cancel leaves every previous file as it was and no temporary; a process
// killed during the save leaves temporaries that the next save of the same session removes. The export worker and
// the torture driver (tests/torture/session_save_driver.cpp) both save through writeSessionFiles.
#pragma once
#include <ATen/ATen.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "session.h"

namespace cushion {
class PrefixTuner;
}

namespace studio {

// The tuner's state taken on the tuning thread (tensors copied: the tuner goes on), written later with the session.
struct TunerState {
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    std::string state_json;
};
TunerStatePtr takeTunerState(const cushion::PrefixTuner& tuner);

// Writes the set: the tuner state when `tuner`, the cushion when `cushion`, then the session JSON of `d` naming them
// (d.cushion_file, d.tuner_file and their SHA-256 are set here). `cancelled` is asked before each file (Cancelled:
// nothing changed). Throws cushion::Error naming the file that failed and the cause.
void writeSessionFiles(const QString& path, SessionData d, const CushionPtr& cushion, const TunerStatePtr& tuner,
                       const std::function<bool()>& cancelled = {});

}  // namespace studio
