// `cushion export --format compressed-tensors`: a package (quantized_package.h) rewritten in the layout of the
// `compressed-tensors` library (what llm-compressor writes, what transformers loads through compressed-tensors and
// vLLM serves with int8 GEMMs), with the cushion beside it. The package's integer codes, scales and static ranges
// are reused as they are; nothing is recomputed.
//
// Directory (written atomically: a temporary directory beside the target, renamed at the end):
//   config.json              the package's config.json + "quantization_config": quant_method "compressed-tensors",
//                            quantization_status "compressed", format "int-quantized" (W8A8) or "pack-quantized"
//                            (W8A16, W4A16: weight-only), ignore ["lm_head"], and one config group per weight layout
//                            (strategy "channel", or "group" with group_size), targets as "re:" regexes of the block
//                            linears' module names:
//                              weights            {num_bits 8|4, type int, symmetric true, strategy, dynamic false}
//                              input_activations  W8A8: {num_bits 8, type int, symmetric false, strategy "tensor",
//                                                 dynamic false}; weight-only: null
//   model.safetensors        per block linear <m> (e.g. model.layers.0.self_attn.q_proj):
//                              W8A8:        <m>.weight int8 (out, in) codes, <m>.weight_scale float32 (out, in/group),
//                                           <m>.input_scale float32 (1), <m>.input_zero_point int8 (1)
//                              weight-only: <m>.weight_packed int32 (out, ceil(in*b/32)): code + 2^(b-1) as b-bit
//                                           fields, element i at bit (i*b) mod 32 of word (i*b)/32, low bits first;
//                                           <m>.weight_shape int64 (2) = (out, in); <m>.weight_scale float32
//                            and the package's full-precision tensors (embeddings, norms with SmoothQuant folded,
//                            biases, LM head) under their Hugging Face names.
//   cushion_prefix.json      {"prefix_ids": [...], "prefix_text", "bos_id", ...}: the token ids a server prepends
//   cushion_kv.safetensors   the package's cushion file (cushion.h): k.<l> / v.<l> (1, n_kv_heads, P, head_dim)
//                            float32 after RoPE (rotate-half), prefix_ids, last_logits
//   CUSHION.md               what a server must do with each, and the perplexities recorded at export
//   tokenizer files          copied from the package (tokenizer.model / tokenizer.json, and tokenizer_config.json,
//                            special_tokens_map.json, generation_config.json where the package has them)
//   tokenizer_config.json    where the package has none: for transformers' AutoTokenizer, the class for the tokenizer
//                            file (LlamaTokenizer for a SentencePiece tokenizer.model, needs the protobuf package;
//                            PreTrainedTokenizerFast for tokenizer.json), bos_token / eos_token from the package's
//                            tokenizer, add_bos_token false (the cushion starts with <bos>)
//   quantization.json        the package's, copied (provenance: settings, calibration sha256, perplexities)
//
// Arithmetic. Weights: the package's symmetric codes (restricted range, -2^(b-1) unused) with w = scale * code,
// which compressed-tensors dequantizes as (code - 0) * scale: bit for bit the package's weights. Activations: the
// package's asymmetric a = s * (c - z), c in [0, 255], becomes compressed-tensors' signed form a = s * (q - zp) with
// q = c - 128, zp = z - 128 (int8); compressed-tensors quantizes as round(clamp(x / s + zp, -128, 127)), which is the
// engine's quantizer operation for operation (quantizer.h), so transformers + compressed-tensors computes the package's
// numbers bit for bit (the engine's RoPE and attention are transformers' too: tests/perf/RESULTS.md, issue 16).
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "base/progress.h"

namespace cushion {

constexpr const char* kCompressedTensorsFormat = "compressed-tensors";

struct CompressedTensorsOptions {
    bool overwrite = false;  // replace an existing target (--force)
    ProgressFn progress;     // false cancels: Cancelled is thrown, nothing is left behind
};

struct CompressedTensorsReport {
    std::string dir;
    std::string format;          // "int-quantized" or "pack-quantized"
    std::string scheme;          // e.g. "W8A8 static per-tensor asymmetric activations, weights per-channel"
    int64_t linears = 0;         // block linears converted
    std::vector<int32_t> prefix_ids;
    uint64_t bytes = 0;          // total size of the directory
};

// Converts the package in `package_dir` (load_package checks it first: hashes, version, tensors) into the
// compressed-tensors layout in `out_dir`. Throws Error, naming the setting, for what compressed-tensors cannot
// express as the package computes it: dynamic activations (per-tensor-dynamic, per-token: its dynamic quantizers
// are symmetric or widen the range to 0), activation bits other than 8, 4-bit weights with quantized activations,
// KV-cache quantization, a subset of activation sites, a zero point outside int8 after the shift; and when
// out_dir exists without opts.overwrite. Cancelled when the progress callback asks to stop.
CompressedTensorsReport write_compressed_tensors(const std::string& package_dir, const std::string& out_dir,
                                                 const CompressedTensorsOptions& opts = {});

// The int32 words of compressed-tensors' pack_to_int32 for b-bit signed codes (b = 4 or 8) along the last dimension
// of `codes` (an integer (rows, n) tensor with values in [-2^(b-1), 2^(b-1)-1]): (rows, ceil(n*b/32)) int32.
at::Tensor pack_int32_fields(const at::Tensor& codes, int bits);

}  // namespace cushion
