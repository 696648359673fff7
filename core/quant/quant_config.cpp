#include "quant/quant_config.h"

#include <cmath>
#include <sstream>

#include "base/error.h"
#include "quant/quantizer.h"

namespace cushion {

const char* granularity_name(ActGranularity g) {
    switch (g) {
        case ActGranularity::PerTensorStatic: return "per-tensor-static";
        case ActGranularity::PerTensorDynamic: return "per-tensor-dynamic";
        case ActGranularity::PerToken: return "per-token";
    }
    return "?";
}

ActGranularity parse_granularity(const std::string& name) {
    for (auto g : {ActGranularity::PerTensorStatic, ActGranularity::PerTensorDynamic, ActGranularity::PerToken})
        if (name == granularity_name(g)) return g;
    throw Error("unknown activation granularity '" + name +
                "': use per-tensor-static, per-tensor-dynamic or per-token");
}

void QuantConfig::validate() const {
    if (wbits != 0 && !weight_bits_supported(wbits))
        throw Error("weight bits " + std::to_string(wbits) + " not supported: use 0 (off), 4 or 8");
    if (group < 0)
        throw Error("weight group size " + std::to_string(group) +
                    " is negative: use 0 for per-channel or a positive size such as 128");
    if (abits != 0 && !act_bits_supported(abits))
        throw Error("activation bits " + std::to_string(abits) + " not supported: use 0 (off), 4, 6, 8 or 16");
    if (kv_bits != 0 && kv_bits != 4 && kv_bits != 8)
        throw Error("KV-cache bits " + std::to_string(kv_bits) + " not supported: use 0 (off), 4 or 8");
    if (std::isnan(smoothquant_alpha) || smoothquant_alpha > 1)
        throw Error("SmoothQuant alpha " + std::to_string(smoothquant_alpha) +
                    " is outside [0, 1] (0 or negative turns SmoothQuant off; 0.8 is usual)");
    if (sites[static_cast<int>(Site::Residual)])
        throw Error("activation site 'residual' is not the input of a linear layer and cannot be quantized; "
                    "choose among attn_in, o_in, mlp_in, down_in");
    if (acts_on()) {
        bool any = false;
        for (int i = 0; i < kSiteCount; ++i) any = any || sites[i];
        if (!any) throw Error("activation quantization is on (" + std::to_string(abits) +
                              " bits) but no activation site is chosen");
    }
}

std::string QuantConfig::describe() const {
    if (!weights_on() && !acts_on() && !kv_on() && !smoothquant_on()) return "FP";
    std::ostringstream o;
    o << "W" << (weights_on() ? std::to_string(wbits) : std::string("fp"));
    o << "A" << (acts_on() ? std::to_string(abits) : std::string("fp"));
    if (acts_on()) o << " " << granularity_name(act);
    if (weights_on()) o << (group > 0 ? " g" + std::to_string(group) : std::string(" per-channel"));
    if (smoothquant_on()) {
        std::ostringstream a;
        a << smoothquant_alpha;
        o << " SQ" << a.str();
    }
    if (kv_on()) o << " KV" << kv_bits;
    if (acts_on()) o << " [" << sites_string(sites) << "]";
    return o.str();
}

std::array<bool, kSiteCount> parse_sites(const std::string& list) {
    std::array<bool, kSiteCount> out{};
    if (list == "all") {
        for (int i = 0; i < kSiteCount; ++i) out[i] = site_is_linear_input(static_cast<Site>(i));
        return out;
    }
    std::stringstream ss(list);
    std::string item;
    while (std::getline(ss, item, ',')) {
        if (item.empty()) continue;
        Site s;
        if (!parse_site(item.c_str(), &s))
            throw Error("unknown activation site '" + item + "': use attn_in, o_in, mlp_in, down_in (or all)");
        out[static_cast<int>(s)] = true;
    }
    return out;
}

std::string sites_string(const std::array<bool, kSiteCount>& sites) {
    std::string s;
    for (int i = 0; i < kSiteCount; ++i)
        if (sites[i]) s += (s.empty() ? "" : ",") + std::string(site_name(static_cast<Site>(i)));
    return s;
}

}  // namespace cushion
