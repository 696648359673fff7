// `cushion export --format compressed-tensors`: a package (written first, or given as MODEL) converted into the
// compressed-tensors layout with the cushion beside it (core/package/compressed_tensors_export.h).
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli_args.h"
#include "cli_common.h"
#include "cli_progress.h"
#include "base/device_memory.h"
#include "package/compressed_tensors_export.h"

namespace cushion::cli {

int export_compressed_tensors(const Args& a, const std::string& package_dir, bool package_is_temporary) {
    CompressedTensorsOptions o;
    o.overwrite = a.has("force");
    ProgressBar bar("compressed-tensors", a.has("quiet"));
    o.progress = bar.fn();
    const std::string out = a.require("out");
    CompressedTensorsReport r = write_compressed_tensors(package_dir, out, o);
    bar.finish();
    if (a.has("json")) {
        nlohmann::json j = {{"out", r.dir}, {"format", r.format}, {"scheme", r.scheme}, {"linears", r.linears},
                            {"prefix_ids", r.prefix_ids}, {"bytes", r.bytes},
                            {"package", package_is_temporary ? nlohmann::json(nullptr) : nlohmann::json(package_dir)}};
        print_json(j, 2);
        return 0;
    }
    std::printf("exported %s: compressed-tensors %s, %s; %lld block linears; %s in all\n", r.dir.c_str(),
                r.format.c_str(), r.scheme.c_str(), (long long)r.linears, format_bytes((int64_t)r.bytes).c_str());
    std::string ids;
    for (size_t i = 0; i < r.prefix_ids.size(); ++i) ids += (i ? "," : "") + std::to_string(r.prefix_ids[i]);
    std::printf("cushion: prefix ids [%s] in cushion_prefix.json, tuned K/V in cushion_kv.safetensors; see %s/CUSHION.md\n",
                ids.c_str(), r.dir.c_str());
    return 0;
}

}  // namespace cushion::cli
