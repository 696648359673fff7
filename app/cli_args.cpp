#include "cli_args.h"

#include <cmath>

namespace cushion::cli {

Args::Args(int argc, char** argv, int first, const std::set<std::string>& flags, const std::set<std::string>& values) {
    for (int i = first; i < argc; ++i) {
        std::string a = argv[i];
        if (a.size() > 2 && a.rfind("--", 0) == 0) {
            std::string name = a.substr(2), val;
            const auto eq = name.find('=');
            if (eq != std::string::npos) {
                val = name.substr(eq + 1);
                name = name.substr(0, eq);
            }
            if (flags.count(name)) {
                if (eq != std::string::npos) throw Error("option --" + name + " takes no value");
                opts_[name] = "1";
            } else if (values.count(name)) {
                if (eq == std::string::npos) {
                    if (i + 1 >= argc) throw Error("option --" + name + " needs a value");
                    val = argv[++i];
                }
                opts_[name] = val;
            } else {
                throw Error("unknown option --" + name + " (see --help)");
            }
        } else if (a == "-h") {
            opts_["help"] = "1";
        } else {
            pos_.push_back(a);
        }
    }
}

std::string Args::get(const std::string& name, const std::string& def) const {
    auto it = opts_.find(name);
    return it == opts_.end() ? def : it->second;
}

std::string Args::require(const std::string& name) const {
    if (!has(name)) throw Error("missing required option --" + name + " (see --help)");
    return get(name);
}

long long Args::get_int(const std::string& name, long long def, long long lo, long long hi) const {
    if (!has(name)) return def;
    const std::string s = get(name);
    size_t used = 0;
    long long v = 0;
    try {
        v = std::stoll(s, &used);
    } catch (...) {
        used = 0;
    }
    if (used != s.size() || s.empty()) throw Error("--" + name + " expects an integer, got '" + s + "'");
    if (v < lo || v > hi)
        throw Error("--" + name + " = " + s + " is out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return v;
}

double Args::get_double(const std::string& name, double def, double lo, double hi) const {
    if (!has(name)) return def;
    const std::string s = get(name);
    size_t used = 0;
    double v = 0;
    try {
        v = std::stod(s, &used);
    } catch (...) {
        used = 0;
    }
    if (used != s.size() || s.empty() || !std::isfinite(v)) throw Error("--" + name + " expects a number, got '" + s + "'");
    if (v < lo || v > hi)
        throw Error("--" + name + " = " + s + " is out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return v;
}

}  // namespace cushion::cli
