// Where the shipped resources (default model, sample texts) are: $CUSHION_RESOURCES, the install
// prefix's share/cushion-studio, or the source tree's resources/ for a build.
#pragma once
#include <string>

namespace cushion {

std::string resource_dir();          // throws Error if none is found
std::string default_model_path();    // resources/models/stories260K/stories260K.bin
std::string sample_text_path(const std::string& name);  // resources/text/<name>

}  // namespace cushion
