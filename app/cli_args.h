// A small command-line parser: positional arguments and --name value / --flag options, with the
// unknown-option and missing-value errors a user expects.
#pragma once
#include <map>
#include <set>
#include <string>
#include <vector>

#include "base/error.h"

namespace cushion::cli {

class Args {
public:
    // flags: options without a value; values: options that take one.
    Args(int argc, char** argv, int first, const std::set<std::string>& flags, const std::set<std::string>& values);
    bool has(const std::string& name) const { return opts_.count(name) > 0; }
    std::string get(const std::string& name, const std::string& def = "") const;
    std::string require(const std::string& name) const;
    long long get_int(const std::string& name, long long def, long long lo, long long hi) const;
    double get_double(const std::string& name, double def, double lo, double hi) const;
    const std::vector<std::string>& positional() const { return pos_; }

private:
    std::map<std::string, std::string> opts_;
    std::vector<std::string> pos_;
};

}  // namespace cushion::cli
