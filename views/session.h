// A studio session as a project file: JSON with what it takes to get the work back — the model (path,
// device, dtype), the prompt, the calibration and evaluation texts, the quantization, search and tuning
// settings, the search's prefix and state (GreedySearch::state_json, restored with the same sample), the
// tuning curves — plus the current cushion (the tuned one when there is one, else the search's) saved
// beside it with save_cushion as "<name>.cushion", and the tuner's state (tuned K/V, Adam's moments, step,
// epoch and batch: PrefixTuner::save_state) as "<name>.tuner" when a tuning was started, so that tuning
// resumes where it stopped.
//
//   {"format": "cushion-studio-session", "version": 1,
//    "model": {"path", "device", "dtype"}, "prompt", "texts": {"calibration", "evaluation"},
//    "quantization": {...}, "search": {settings..., "prefix": [ids], "state": "<json>"},
//    "tuning": {settings..., "points": [{step, epoch, batch, ce, lq, total, grad_norm}], "tuned": bool,
//               "state": "<name>.tuner" (relative to the session file; absent without a tuner),
//               "state_sha256": hex},
//    "cushion": {"file": "<name>.cushion" (relative to the session file), "kind": "tuned" | "search",
//                "prefix": [ids], "sha256": hex},
//    "view": {"site": n}}
#pragma once
#include <QByteArray>
#include <QString>
#include <QStringList>

#include <vector>

#include "studio_types.h"

namespace studio {

struct SessionData {
    QString model_path, device = "cpu", dtype = "fp32";
    QString prompt;
    QString calib_path, eval_path;
    cushion::QuantConfig quant = defaultQuantScheme();
    SearchSettings search;
    TuneSettings tune;
    std::vector<int> prefix;        // the search's prefix (empty: no search yet)
    QString search_state;           // GreedySearch::state_json()
    std::vector<TunePoint> tune_points;
    bool tuned = false;             // the cushion file holds the tuned cushion
    QString cushion_file;           // absolute path once read; empty: none
    std::vector<int> cushion_prefix;
    QString tuner_file;             // absolute path once read; empty: no tuner to resume
    // SHA-256 of the cushion and tuner files as saved with the session (empty: not recorded, sessions before
    // 2026-12): opening checks them, so that a file replaced without the session is not taken for its own.
    QString cushion_sha256, tuner_sha256;
    int site = 3;
};

constexpr const char* kSessionFormat = "cushion-studio-session";

// The cushion file beside a session file: "/dir/name.cushionstudio" -> "/dir/name.cushion".
QString sessionCushionPath(const QString& session_path);
// The tuner state file beside a session file: "/dir/name.cushionstudio" -> "/dir/name.tuner".
QString sessionTunerPath(const QString& session_path);
QByteArray sessionToJson(const SessionData& s, const QString& session_path);
// Throws cushion::Error (a std::runtime_error) with a clear message on a file that is not a session, naming the file
// and the field (core's JsonFields). Relative paths are resolved against the session file's directory.
SessionData sessionFromJson(const QByteArray& json, const QString& session_path);
// Reads and parses a session file; refuses what is not a regular file (a named pipe, a device, a directory, a symlink
// loop) up front with core's rule (base/file_checks.h), as the CLI refuses its inputs.
SessionData readSessionFile(const QString& path);
// The cushion and tuner files beside a session checked against the SHA-256 the session recorded: one message per
// file that is missing or differs, and that file is dropped from `d` (not restored).
QStringList checkSessionFiles(SessionData* d);

}  // namespace studio
