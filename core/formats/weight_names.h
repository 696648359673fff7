// How each file format names a model's tensors, for messages: the loaders describe a weight that holds NaN or Inf
// by the name the user finds in the file (GGUF "blk.1.ffn_up.weight", llama2c "w3[1]") with our layer index and
// the Hugging Face name (ModelWeights::for_each).
#pragma once
#include <functional>
#include <string>

namespace cushion {

class Model;

// "model.layers.1.mlp.up_proj.weight" -> "blk.1.ffn_up.weight"; a name it does not know is returned as it is.
std::string gguf_tensor_name(const std::string& hf_name);
// "model.layers.1.mlp.up_proj.weight" -> "w3[1]" (llama2c's arrays, the layer in brackets).
std::string llama2c_tensor_name(const std::string& hf_name);

// Fills m.non_finite_weights with the weights that hold NaN or Inf (described by file_name(hf_name) and layer),
// and adds a warning "<path>: tensor <description> contains NaN or Inf" for each.
void note_non_finite_weights(Model& m, const std::string& path,
                             const std::function<std::string(const std::string& hf_name)>& file_name);

}  // namespace cushion
