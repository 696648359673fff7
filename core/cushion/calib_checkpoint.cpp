#include "cushion/calib_checkpoint.h"

#include <ATen/ATen.h>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "cushion/greedy_search.h"
#include "cushion/prefix_tuner.h"
#include "formats/safetensors.h"

namespace cushion {

void save_calib_checkpoint(const std::string& path, const GreedySearch& search, const PrefixTuner* tuner,
                           const std::string& settings_json) {
    std::vector<std::pair<std::string, at::Tensor>> ts;
    const auto& p = search.prefix();
    ts.push_back({"search.prefix_ids", at::tensor(std::vector<int64_t>(p.begin(), p.end()), at::kLong)});
    std::string tune;
    if (tuner) tuner->save_state(&ts, &tune);
    std::map<std::string, std::string> meta{{"format", "cushioncache-checkpoint"},
                                            {"version", "1"},
                                            {"search", search.state_json()},
                                            {"tune", tune},
                                            {"settings", settings_json},
                                            {"tool_version", CUSHION_VERSION}};
    save_safetensors(path, ts, meta);
}

CalibCheckpoint load_calib_checkpoint(const std::string& path) {
    SafetensorsFile f(path);
    f.require_format("cushioncache-checkpoint", "calibration checkpoint");
    auto get = [&](const std::string& k) { return f.meta(k); };
    CalibCheckpoint c;
    c.search_state = get("search");
    c.tune_state = get("tune");
    c.settings_json = get("settings").empty() ? "{}" : get("settings");
    if (c.search_state.empty()) throw Error(path + ": the checkpoint holds no search state");
    for (const auto& n : f.names())
        if (n.rfind("tune.", 0) == 0) c.tensors[n] = f.get(n);
    return c;
}

}  // namespace cushion
