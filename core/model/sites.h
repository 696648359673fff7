// Where a forward pass can be observed (the activation sites) and which block linear layers exist: plain
// enums and their names, no tensor header, so that code without libtorch (the studio's widgets, quant/
// quant_config.h) can name them. activation_hook.h and model.h include it.
#pragma once

namespace cushion {

enum class Site : int {
    AttnIn = 0,  // input of q/k/v projections (after the attention norm)
    OIn,         // input of the output projection (attention result)
    MlpIn,       // input of gate/up (Llama) or fc1 (OPT), after the FFN norm
    DownIn,      // input of down (Llama) or fc2 (OPT)
    Residual,    // residual stream at the block's output
    Count
};
constexpr int kSiteCount = static_cast<int>(Site::Count);
const char* site_name(Site s);         // "attn_in", "o_in", "mlp_in", "down_in", "residual"
bool parse_site(const char* name, Site* out);
inline bool site_is_linear_input(Site s) { return s != Site::Residual; }

// The block linear layers, for LinearKernels (OPT: fc1 = Up, fc2 = Down; it has no Gate).
enum class LinearId : int { Q = 0, K, V, O, Gate, Up, Down, Count };
constexpr int kLinearCount = static_cast<int>(LinearId::Count);
const char* linear_name(LinearId id);  // "q", "k", "v", "o", "gate", "up", "down"

}  // namespace cushion
