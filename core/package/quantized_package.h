// An exported package: the quantized model with its cushion, self-contained, loadable and verifiable.
//
// Directory layout (written atomically: into a temporary directory beside the target, renamed at the end):
//   model.safetensors    quantized block linears (q, k, v, o, gate, up, down; OPT fc1/fc2), SmoothQuant folded in:
//                          "<name>"         int8 (out, in) codes            when wbits = 8
//                          "<name>_packed"  uint8 (out, ceil(in/2))         when wbits = 4 (int4_pack.h layout)
//                          "<name>_scale"   float32 (out, in / group_size)  symmetric: w = scale * code
//                        where <name> is the Hugging Face weight name ("model.layers.0.self_attn.q_proj.weight");
//                        full-precision tensors under their Hugging Face names (embeddings, norms with SmoothQuant
//                        folded, biases, LM head), float32;
//                        per quantized activation site (per-tensor-static only), "model.layers.<l>.act.<site>.":
//                          "input_scale" F32 (), "input_zero_point" I32 (), "input_min" / "input_max" F64 ()
//                        (asymmetric: a = scale * (code - zero), code in [0, 2^abits - 1]);
//                        SmoothQuant factors for reference (already folded): "model.layers.<l>.smoothquant.<site>"
//                        metadata: format "cushioncache-quantized-model", model_fingerprint, tool_version
//   cushion.safetensors  the cushion (cushion.h format): prefix ids, per-layer K/V (after RoPE), last logits
//   config.json + tokenizer files of the source model
//   quantization.json    scheme, bits, granularities, sites, calibration text sha256, perplexities measured at
//                        export, tool version, model fingerprint, and a sha256 for every other file
//
// Loading dequantizes the integer codes: scale * code in float32 is bit-for-bit the fake-quantized weight of
// QuantizedModel, and the static activation ranges are the collected ones, so the package's perplexity equals
// the simulated-quantization perplexity of `cushion eval` with the same settings and cushion. On the CPU the
// matrix products are float32 (simulated quantization on exact integer-grid values) unless int8 kernels are
// switched on (int8_kernels.h, `--kernels int8`).
#pragma once
#include <ATen/core/Tensor.h>

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "cushion/cushion.h"
#include "model/model.h"
#include "model/perplexity.h"
#include "base/progress.h"
#include "quant/quant_config.h"
#include "quant/quantized_model.h"
#include "quant/quantizer.h"

namespace cushion {

constexpr const char* kPackageFormat = "cushioncache-quantized-package";
constexpr int kPackageFormatVersion = 1;

struct ExportOptions {
    QuantConfig config;                            // validated; bits, granularity, sites, SmoothQuant, group, KV
    std::vector<std::vector<int32_t>> calib_docs;  // tokenize_documents output; required when config.needs_activation_ranges()
    std::string calib_file;                        // recorded with its sha256 (may be empty: then only token counts)
    // Perplexity measured at export time (FP, quantized without and with the cushion); empty = not measured.
    std::vector<std::vector<int32_t>> eval_docs;
    std::string eval_file;                         // recorded with its sha256 so `verify` can re-measure
    int64_t max_batch_tokens = 8192;
    std::string tokenizer_path;                    // copy this tokenizer file (else the one beside the source)
    bool overwrite = false;                        // replace an existing target (--force)
    ProgressFn progress;                           // false cancels: Cancelled is thrown, nothing is left behind
};

struct ExportReport {
    std::string dir;
    std::string info_json;   // the quantization.json written
    double ppl_fp = 0, ppl_fp_cushion = 0, ppl_quant = 0, ppl_quant_cushion = 0;  // 0 when not measured
    int64_t eval_tokens = 0;
    uint64_t bytes = 0;      // total size of the package
    uint64_t fp32_weight_bytes = 0, package_weight_bytes = 0;  // model.safetensors vs the float32 weights
    std::vector<std::string> notes;
};

// Quantizes `fp` (CPU or any device; float32 weights expected) as opts.config says, with static activation ranges
// collected with `cush` in place, and writes the package to `dir`. Throws Error when dir exists without opts.overwrite,
// when the cushion does not fit the model, when no tokenizer file can be found, or on any write failure
// (a full disk included); Cancelled when the progress callback asks to stop. Neither leaves anything behind.
ExportReport write_package(const Model& fp, const Cushion& cush, const std::string& dir, const ExportOptions& opts);

// True when `path` is a directory holding quantization.json.
bool is_package_directory(const std::string& path);

struct LoadPackageOptions {
    bool check_hashes = true;          // sha256 of every file against quantization.json before loading
    bool allow_other_tool_version = false;
    std::string tokenizer_path;        // overrides the package's tokenizer
    ProgressFn progress;
};

// A loaded package: the model (weights dequantized from the codes, on the CPU in float32, fingerprint = the
// source model's), the activation quantizer with the stored static ranges, and the cushion.
class QuantizedPackage {
public:
    std::string dir;
    std::shared_ptr<Model> model;
    QuantConfig config;
    std::shared_ptr<const ActivationRanges> ranges;  // per-tensor-static only
    std::shared_ptr<ActQuantHook> hook;       // null when activations and KV are full precision
    // The int8 weight codes and float32 scales of every block linear (wbits = 8 only; empty for 4-bit weights),
    // indexed [layer][LinearId]; an entry is undefined for a linear the architecture lacks (OPT's gate).
    std::vector<std::array<QuantizedWeight, kLinearCount>> weight_codes;
    // How forward() and perplexity() compute the block linears: null = float32 products on the dequantized
    // weights (simulated integer arithmetic, the default); set by use_int8_kernels (int8_kernels.h).
    std::shared_ptr<const LinearKernels> kernels;
    Cushion cushion;
    std::string info_json;                    // quantization.json

    // Moves the model and the cushion's KV (not last_logits) to a device / dtype.
    void to(c10::Device dev, at::ScalarType dt);
    // Perplexity as `cushion eval` measures it: documents (tokenize_documents output, each starting with <bos>)
    // run after the package's cushion, with its quantizer chained after opts.hook. opts.prefix is ignored.
    PerplexityResult perplexity(const std::vector<std::vector<int32_t>>& docs, const PerplexityOptions& opts = {}) const;
    // The token budget documents are truncated to, as `cushion eval` does with a cushion.
    int64_t max_doc_tokens() const;
    // Logits of `tokens` (B, T) (no <bos>: the cushion provides it) after the cushion, with the quantizer.
    at::Tensor forward(const at::Tensor& tokens, const ForwardArgs& args = {}) const;
};

// Throws Error with a clear message: not a package, unknown format version, another tool version (unless
// allowed), a file whose sha256 differs (naming it), parts made for different models, bad tensors.
std::shared_ptr<QuantizedPackage> load_package(const std::string& dir, const LoadPackageOptions& opts = {});

struct VerifyOptions {
    std::string text_file;        // re-measure on this text (default: the export's text when present and unchanged)
    const Model* source = nullptr;  // when given, the package must come from this model (fingerprint)
    bool remeasure = true;
    double rel_tol = 1e-4;
    int64_t max_batch_tokens = 8192;
    ProgressFn progress;
};

struct VerifyReport {
    bool ok = true;
    std::vector<std::string> problems;  // each names the file or figure at fault
    std::vector<std::pair<std::string, bool>> files;  // file -> hash matched
    bool remeasured = false;
    std::string text_file;
    double ppl_recorded = 0, ppl_measured = 0;
};

// Checks every hash and the package's consistency; re-measures the quantized-with-cushion perplexity when the
// text is available. Problems are reported, not thrown (except a directory that is not a package at all).
VerifyReport verify_package(const std::string& dir, const VerifyOptions& opts = {});

}  // namespace cushion
