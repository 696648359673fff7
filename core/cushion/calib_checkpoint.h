// The checkpoint of a `calibrate` run (greedy search, then prefix tuning), so that a cancelled run can
// resume: one safetensors file, written atomically after every completed step.
//   metadata "format": "cushioncache-checkpoint", "version": "1", "search" (GreedySearch::state_json()),
//            "tune" (PrefixTuner state JSON; empty before tuning starts), "settings" (the run's settings)
//   tensors  "search.prefix_ids" (P) int64, and the tuner's "tune.*" tensors once tuning has started.
#pragma once
#include <ATen/core/Tensor.h>

#include <map>
#include <string>

namespace cushion {

class GreedySearch;
class PrefixTuner;

struct CalibCheckpoint {
    std::string search_state;                   // GreedySearch::state_json()
    std::string tune_state;                     // empty until tuning has started
    std::map<std::string, at::Tensor> tensors;  // "tune.*" (CPU)
    std::string settings_json = "{}";           // the run's own settings (free-form, for the caller)
};

// Writes the search state and, when tuner is given, its state (atomic).
void save_calib_checkpoint(const std::string& path, const GreedySearch& search, const PrefixTuner* tuner,
                           const std::string& settings_json = "{}");
// Throws Error if the file is missing, unreadable or not a checkpoint.
CalibCheckpoint load_calib_checkpoint(const std::string& path);

}  // namespace cushion
