// NaN and Inf reported where they start (issue "hardening"): which weights hold them, named as the model's file
// names them, with our layer index; and in which layer, at which site, a forward pass's activations first stop
// being finite. Nothing is checked per layer in the normal run: the commands test their final number (a batch's
// NLL sum, a loss, a probe's maxima: one value each) and only when it is not finite run the failing batch again
// with a checking hook, to say where, instead of printing "perplexity nan".
#pragma once
#include <ATen/core/Tensor.h>

#include <functional>
#include <string>
#include <vector>

#include "base/error.h"
#include "model/model.h"

namespace cushion {

// Where a forward pass first holds NaN or Inf.
struct NonFiniteSpot {
    enum Kind {
        None,        // nothing: the run again was finite everywhere
        Prefix,      // the prefix (cushion) keys/values of `layer`
        Activation,  // the activation at (`layer`, `site`) as the forward pass computed it
        Hook,        // finite into the activation hook (a quantizer) at (`layer`, `site`), not out of it
        KvHook,      // the keys/values of `layer` out of the hook (KV-cache quantization)
        Output       // the logits (or final hidden states): every block's activations are finite
    };
    Kind kind = None;
    int layer = -1;
    Site site = Site::AttnIn;
    int64_t row = 0, position = 0;  // the first (batch row, position) holding one
};

// Runs m.forward(tokens, args) again (no grad; args.present is not filled) with a hook that checks the prefix,
// every activation site (before and after args.hook) and the output; returns the first spot.
NonFiniteSpot locate_non_finite(const Model& m, const at::Tensor& tokens, const ForwardArgs& args);

// The model's weights that hold NaN or Inf now (after any cast to fp16/bf16), each described as the loader named
// it (Model::non_finite_weights: the file's tensor name and our layer) or, for a model built in memory or made
// non-finite by a cast, by its Hugging Face name and layer.
std::vector<std::string> describe_non_finite_weights(const Model& m);

// "blk.1.ffn_up.weight (layer 1, model.layers.1.mlp.up_proj.weight; 3 of 384 values)": how loaders describe a
// weight `hf_name` (ModelWeights::for_each's name) that is stored in the file as `file_name` and holds NaN/Inf.
std::string describe_non_finite_weight(const std::string& hf_name, const std::string& file_name, const at::Tensor& t);

// The Error for a result of `what` that is not finite: locates the spot (locate_non_finite) and says
// "<what>: NaN or Inf from layer 1 on, first at down_in (the input of down_proj: ...), <row_name(row)> position 5;
// every weight is finite: the values overflowed float32" (or names the weights holding NaN/Inf, or the quantizer).
// row_name names a batch row ("document 3"); default "sequence <row>".
Error non_finite_error(const Model& m, const std::string& what, const at::Tensor& tokens, const ForwardArgs& args,
                       const std::function<std::string(int64_t row)>& row_name = {});

}  // namespace cushion
