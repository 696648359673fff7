#include "model/activation_hook.h"

#include <cstring>

namespace cushion {

namespace {
const char* const kNames[kSiteCount] = {"attn_in", "o_in", "mlp_in", "down_in", "residual"};
}

const char* site_name(Site s) {
    int i = static_cast<int>(s);
    return i >= 0 && i < kSiteCount ? kNames[i] : "?";
}

bool parse_site(const char* name, Site* out) {
    for (int i = 0; i < kSiteCount; ++i)
        if (std::strcmp(name, kNames[i]) == 0) {
            *out = static_cast<Site>(i);
            return true;
        }
    return false;
}

}  // namespace cushion
