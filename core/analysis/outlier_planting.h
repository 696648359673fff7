// A model that shows the disease: derive from a Llama-architecture model one with planted massive
// activations, the way real 7B models have them, while keeping its full-precision function.
//
// The construction (exact up to ~1/magnitude at the first token):
//  - one residual channel c* is added (dim C -> C+1); every norm weight is scaled by sqrt(C/(C+1)) so
//    ordinary tokens (whose c* is always 0) are normalised as before;
//  - <bos>'s embedding gets a small marker in c*; block 0's MLP gets one extra hidden unit that reads
//    only c* and writes `magnitude` x the median |residual| into c*: from then on the first token
//    carries a massive activation in c*, as LLaMA2-7B does in dims 1415 and 2533;
//  - from block 1 on, the norm weight of c* makes the first token's q/k/v and gate/up inputs carry
//    `magnitude` x their median |x| in c*, and the extra unit reading c* spikes to `magnitude` x the median |x|
//    at the down-projection input of the first token (with a zero output column);
//  - the new column c* of every linear layer that reads a norm output (q, k, v, gate, up, LM head) is
//    solved so the first token's projections equal the original's: ordinary tokens see exactly the
//    original model, the first token nearly so.
// Without a cushion, per-tensor static/dynamic quantization calibrates on the spike and flattens every
// other token; with a cushion that contains <bos>, the spike lives in the prefix KV and the real
// tokens are clean.
#pragma once
#include <memory>

#include "model/model.h"

namespace cushion {

struct PlantOptions {
    double magnitude = 2000.0;  // planted value / median |x| at that token
    bool spikes_in_all_blocks = true;
};

struct PlantReport {
    int64_t channel = 0;        // the residual channel c*
    double residual_value = 0;  // value written into c* at the first token
    double residual_ratio = 0;  // that value / median |residual| of the first token
    std::vector<double> down_in_ratio;  // per block: spike / median |down_in| of the first token
};

// m must be a Llama-architecture model in float32 on the CPU with a <bos> token.
std::shared_ptr<Model> plant_outliers(const Model& m, const PlantOptions& opts, PlantReport* report = nullptr);

}  // namespace cushion
