// What every `cushion` subcommand shares: the model argument, --device/--dtype/--tokenizer, --json.
#pragma once
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <set>
#include <string>

#include "cli_args.h"
#include "cushion/cushion.h"
#include "model/model.h"
#include "quant/quant_config.h"
#include "package/open_target.h"
#include "package/quantized_package.h"

namespace cushion::cli {

// Options every model-taking command accepts.
const std::set<std::string>& common_flags();   // json, quiet, help
const std::set<std::string>& common_values();  // device, dtype, tokenizer
std::set<std::string> with(std::set<std::string> a, const std::set<std::string>& b);
// A subcommand's arguments (argv[2...]) with the common options added to `flags` and `values`.
Args parse_command(int argc, char** argv, const std::set<std::string>& flags, const std::set<std::string>& values);
// Prints `help` and the common options when --help was given; returns whether it did.
bool print_help_if_asked(const Args& a, const char* help);
// s followed by spaces up to `width` terminal columns, counting UTF-8 code points (token text such as
// "▁little" is one column per character, not per byte); s unchanged when it is wider.
std::string pad_columns(const std::string& s, size_t width);
extern const char* kCommonHelp;  // help text for the common options

// Loads MODEL (first positional; the embedded default when absent) onto --device in --dtype,
// with a progress bar, and prints its warnings to stderr.
std::shared_ptr<Model> load_model_from_args(const Args& a);
std::string model_arg(const Args& a);  // the path that load_model_from_args uses
// --cushion FILE: loaded, checked against the model, moved to its device/dtype; nullptr without the option.
std::unique_ptr<Cushion> cushion_from_args(const Args& a, const Model& m);
// MODEL is an exported package (a directory with quantization.json): loads it (hashes checked) onto --device in
// --dtype with a progress bar; nullptr when MODEL is not a package.
// --kernels int8 switches the package to the integer kernels (int8_kernels.h); an Error when it cannot, or when
// MODEL is not a package.
std::shared_ptr<QuantizedPackage> package_from_args(const Args& a);
// What generate and ppl run (package/open_target.h): MODEL as an exported package (its model, activation
// quantizer, kernels and cushion) or as a plain model, with --cushion FILE taking the place of a package's own.
RunTarget run_target_from_args(const Args& a);
// --wbits --abits --group --act --smoothquant --kv-bits (eval's defaults: W8A8 per-tensor-static g128, SQ off).
QuantConfig quant_config_from_args(const Args& a);

struct Command {
    const char* name;
    const char* summary;
    const char* help;  // full --help text
    int (*run)(int argc, char** argv);
};

// Engine commands (info, generate, ppl, probe).
int cmd_info(int argc, char** argv);
int cmd_generate(int argc, char** argv);
int cmd_ppl(int argc, char** argv);
int cmd_probe(int argc, char** argv);
extern const char* kInfoHelp;
extern const char* kGenerateHelp;
extern const char* kPplHelp;
extern const char* kProbeHelp;

// Quantization commands (eval, outliers, plant-outliers).
int cmd_eval(int argc, char** argv);
int cmd_outliers(int argc, char** argv);
int cmd_plant_outliers(int argc, char** argv);
extern const char* kEvalHelp;
extern const char* kOutliersHelp;
extern const char* kPlantHelp;
// `cushion eval DIR` on an exported package: its own quantization and cushion (cmd_export.cpp).
int eval_package(const Args& a);

// CushionCache calibration: greedy prefix search + prefix tuning (cmd_calibrate.cpp).
int cmd_calibrate(int argc, char** argv);
extern const char* kCalibrateHelp;

// Package commands (export, verify).
int cmd_export(int argc, char** argv);
int cmd_verify(int argc, char** argv);
extern const char* kExportHelp;
extern const char* kVerifyHelp;

// Prints `--json` output on stdout (indent < 0: one line). Strings that are not UTF-8 (a byte-level token's text
// cut mid-character) are written with U+FFFD, as Hugging Face tokenizers decode them, instead of failing.
void print_json(const nlohmann::json& j, int indent = -1);

}  // namespace cushion::cli
