#include "base/resources.h"

#include <cstdlib>
#include <filesystem>

#include "base/error.h"

namespace cushion {
namespace fs = std::filesystem;

namespace {
bool has_model(const fs::path& d) { return fs::exists(d / "models" / "stories260K" / "stories260K.bin"); }
}  // namespace

std::string resource_dir() {
    if (const char* env = std::getenv("CUSHION_RESOURCES"); env && *env) {
        if (!has_model(env)) throw Error(std::string("CUSHION_RESOURCES=") + env + " holds no models/stories260K");
        return env;
    }
    std::error_code ec;
    const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
    if (!ec) {
        const fs::path bin = exe.parent_path();
        // <prefix>/bin, <prefix>/lib/cushion-studio (the package's programs behind their launchers), a build tree.
        for (const fs::path& d : {bin / ".." / "share" / "cushion-studio", bin / ".." / ".." / "share" / "cushion-studio",
                                  bin / ".." / ".." / "resources"})
            if (has_model(d)) return fs::weakly_canonical(d).string();
    }
    if (has_model(CUSHION_BUILD_RESOURCE_DIR)) return CUSHION_BUILD_RESOURCE_DIR;
    throw Error("cannot find the shipped resources (default model); set CUSHION_RESOURCES");
}

std::string default_model_path() { return resource_dir() + "/models/stories260K/stories260K.bin"; }
std::string sample_text_path(const std::string& name) { return resource_dir() + "/text/" + name; }

}  // namespace cushion
