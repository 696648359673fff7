#include "model/non_finite.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <regex>

namespace cushion {

namespace {

const char* site_story(Site s, bool opt) {
    switch (s) {
        case Site::AttnIn: return "the input of the q/k/v projections: the layer's input after the attention norm";
        case Site::OIn: return "the attention's output: after the q/k/v projections and the softmax";
        case Site::MlpIn:
            return opt ? "the input of fc1: after out_proj and the FFN norm"
                       : "the input of the gate/up projections: after o_proj and the FFN norm";
        case Site::DownIn:
            return opt ? "the input of fc2: after fc1 and the activation function"
                       : "the input of down_proj: after the gate/up projections and the activation function";
        case Site::Residual: return opt ? "the layer's output: after fc2" : "the layer's output: after down_proj";
        default: return "?";
    }
}

// The first (row, position) of a tensor whose trailing dimensions are reduced away (dims: which to keep, the row
// and the position), among valid positions; false when every value is finite.
bool first_bad(const at::Tensor& x, int row_dim, int pos_dim, const at::Tensor& valid, int64_t* row, int64_t* pos) {
    at::Tensor bad = at::logical_not(at::isfinite(x.detach()));
    // Reduce every dimension but row_dim and pos_dim, from the last one down.
    for (int64_t d = bad.dim() - 1; d >= 0; --d)
        if (d != row_dim && d != pos_dim) bad = bad.any(d);
    // Now (rows, positions) in their original order.
    if (valid.defined() && valid.sizes() == bad.sizes()) bad = at::logical_and(bad, valid.to(bad.device(), at::kBool));
    if (!bad.any().item<bool>()) return false;
    at::Tensor nz = bad.nonzero().cpu();
    *row = nz[0][0].item<int64_t>();
    *pos = nz[0][1].item<int64_t>();
    return true;
}

class NonFiniteFinder : public ActivationHook {
public:
    explicit NonFiniteFinder(ActivationHook* inner) : inner_(inner) {}
    NonFiniteSpot spot;

    void on_activation(int layer, Site site, at::Tensor& x, const at::Tensor& valid) override {
        check(NonFiniteSpot::Activation, layer, site, x, valid);
        if (inner_) {
            inner_->on_activation(layer, site, x, valid);
            check(NonFiniteSpot::Hook, layer, site, x, valid);
        }
    }
    void on_kv(int layer, at::Tensor& k, at::Tensor& v, const at::Tensor& valid) override {
        if (!inner_) return;
        inner_->on_kv(layer, k, v, valid);
        for (const at::Tensor* t : {&k, &v}) {  // (B, KVH, T, D)
            if (spot.kind != NonFiniteSpot::None) return;
            int64_t r = 0, p = 0;
            if (first_bad(*t, 0, 2, valid, &r, &p)) spot = {NonFiniteSpot::KvHook, layer, Site::AttnIn, r, p};
        }
    }
    void on_attention(int layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale) override {
        if (inner_) inner_->on_attention(layer, q, k, v, scale);
    }

private:
    void check(NonFiniteSpot::Kind kind, int layer, Site site, const at::Tensor& x, const at::Tensor& valid) {
        if (spot.kind != NonFiniteSpot::None) return;
        int64_t r = 0, p = 0;
        if (first_bad(x, 0, 1, valid, &r, &p)) spot = {kind, layer, site, r, p};
    }
    ActivationHook* inner_;
};

}  // namespace

NonFiniteSpot locate_non_finite(const Model& m, const at::Tensor& tokens, const ForwardArgs& args) {
    at::NoGradGuard no_grad;
    if (args.prefix)
        for (size_t l = 0; l < args.prefix->k.size(); ++l)
            for (const at::Tensor* t : {&args.prefix->k[l], &args.prefix->v[l]})
                if (t->defined() && !at::isfinite(t->detach()).all().item<bool>())
                    return {NonFiniteSpot::Prefix, static_cast<int>(l), Site::AttnIn, 0, 0};
    NonFiniteFinder finder(args.hook);
    ForwardArgs a = args;
    a.present = nullptr;
    a.hook = &finder;
    const at::Tensor out = m.forward(tokens, a);
    if (finder.spot.kind != NonFiniteSpot::None || !out.defined() || out.dim() != 3) return finder.spot;
    const at::Tensor valid = args.last_logits_only || !args.valid.defined() ? at::Tensor() : args.valid;
    int64_t r = 0, p = 0;
    if (first_bad(out, 0, 1, valid, &r, &p)) {
        if (args.last_logits_only) p = tokens.size(1) - 1;
        return {NonFiniteSpot::Output, -1, Site::AttnIn, r, p};
    }
    return {};
}

std::string describe_non_finite_weight(const std::string& hf_name, const std::string& file_name, const at::Tensor& t) {
    static const std::regex layer_re(R"(layers\.(\d+)\.)");
    std::smatch mt;
    const std::string layer = std::regex_search(hf_name, mt, layer_re) ? "layer " + mt[1].str() : std::string();
    const int64_t bad = at::logical_not(at::isfinite(t)).sum().item<int64_t>();
    const std::string count = std::to_string(bad) + " of " + std::to_string(t.numel()) + " values";
    std::string inside = layer;
    if (file_name != hf_name) inside += (inside.empty() ? "" : ", ") + hf_name;
    return file_name + " (" + inside + (inside.empty() ? "" : "; ") + count + ")";
}

std::vector<std::string> describe_non_finite_weights(const Model& m) {
    std::vector<std::string> out;
    m.weights.for_each(m.config, [&](const std::string& name, const at::Tensor& t) {
        if (!t.is_floating_point() || at::isfinite(t).all().item<bool>()) return;
        for (const auto& d : m.non_finite_weights)
            if (d.find(name + ";") != std::string::npos || d.find(name + " (") == 0 || d.find(name + ",") != std::string::npos) {
                out.push_back(d);
                return;
            }
        std::string d = describe_non_finite_weight(name, name, t);
        if (m.dtype() != at::kFloat) d += " after the cast to " + dtype_name(m.dtype());
        out.push_back(d);
    });
    return out;
}

Error non_finite_error(const Model& m, const std::string& what, const at::Tensor& tokens, const ForwardArgs& args,
                       const std::function<std::string(int64_t row)>& row_name) {
    const NonFiniteSpot s = locate_non_finite(m, tokens, args);
    const bool opt = m.config.arch == Arch::OPT;
    auto at_token = [&] {
        return (row_name ? row_name(s.row) : "sequence " + std::to_string(s.row)) + ", token " + std::to_string(s.position);
    };
    std::string msg = what + ": ";
    switch (s.kind) {
        case NonFiniteSpot::None:
            msg += "the result is NaN or Inf, though the activations and the output are finite when the batch runs "
                   "again (the loss itself overflowed)";
            break;
        case NonFiniteSpot::Prefix:
            msg += "the prefix (cushion) keys/values of layer " + std::to_string(s.layer) + " hold NaN or Inf";
            break;
        case NonFiniteSpot::Activation:
            msg += "the activations are NaN or Inf from layer " + std::to_string(s.layer) + " on: first at " +
                   site_name(s.site) + " (" + site_story(s.site, opt) + "), " + at_token();
            break;
        case NonFiniteSpot::Hook:
            msg += "the activation hook (the quantizer) at layer " + std::to_string(s.layer) + ", " + site_name(s.site) +
                   ", made NaN or Inf out of finite values (" + at_token() + "): its scales are not finite";
            break;
        case NonFiniteSpot::KvHook:
            msg += "the keys/values of layer " + std::to_string(s.layer) +
                   " are NaN or Inf after the KV-cache hook (the quantizer), " + at_token();
            break;
        case NonFiniteSpot::Output:
            msg += "the output (final norm and LM head) is NaN or Inf at " + at_token() +
                   ", though every layer's activations are finite";
            break;
    }
    if (s.kind == NonFiniteSpot::Activation || s.kind == NonFiniteSpot::Output || s.kind == NonFiniteSpot::None) {
        const auto bad = describe_non_finite_weights(m);
        if (!bad.empty()) {
            msg += "; weights holding NaN or Inf: ";
            for (size_t i = 0; i < bad.size() && i < 4; ++i) msg += (i ? ", " : "") + bad[i];
            if (bad.size() > 4) msg += " and " + std::to_string(bad.size() - 4) + " more";
        } else if (s.kind != NonFiniteSpot::None) {
            msg += "; every weight is finite: the values overflowed " + dtype_name(m.dtype()) +
                   (m.dtype() != at::kFloat ? " (fp32 has a wider range)" : "");
        }
    }
    return Error(msg);
}

}  // namespace cushion
