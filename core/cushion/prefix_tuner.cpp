#include "cushion/prefix_tuner.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "model/non_finite.h"
#include "base/json_file.h"
#include "cushion/distributed.h"
#include "model/documents.h"
#include "quant/quant_config.h"
#include "formats/safetensors.h"

namespace cushion {

using json = nlohmann::json;

namespace {

using Clock = std::chrono::steady_clock;

at::Tensor ids_tensor(const std::vector<int32_t>& v, c10::Device dev) {
    return at::tensor(std::vector<int64_t>(v.begin(), v.end()), at::kLong).to(dev);
}

json parse_or_empty(const std::string& s) {
    try {
        json j = json::parse(s.empty() ? "{}" : s);
        return j.is_object() ? j : json::object();
    } catch (const std::exception&) {
        return json::object();
    }
}

}  // namespace

TuneLoss prefix_tune_loss(const Model& m, const KVCache& kv, const std::vector<std::vector<int32_t>>& seqs,
                          double lambda, const QuantLossOptions& loss, bool with_grad, int64_t ce_chunk_bytes,
                          int64_t ce_tokens, int64_t lq_docs) {
    if (seqs.empty()) throw Error("prefix tuning: no documents in the batch");
    const auto dev = m.device();
    at::Tensor tokens, valid;
    pad_batch(seqs, &tokens, &valid);
    tokens = tokens.to(dev);
    valid = valid.to(dev);
    at::AutoGradMode grad_mode(with_grad);
    KVCache p;
    for (size_t l = 0; l < kv.k.size(); ++l) {
        // float32 parameters (float64 ones stay float64: the finite-difference test).
        const at::ScalarType pt = kv.k[l].scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
        at::Tensor k = kv.k[l].detach().to(dev, pt), v = kv.v[l].detach().to(dev, pt);
        if (with_grad) {
            k = k.clone().requires_grad_(true);
            v = v.clone().requires_grad_(true);
        }
        p.k.push_back(k);
        p.v.push_back(v);
    }
    QuantLossHook hook(loss);
    ForwardArgs fa;
    fa.prefix = &p;
    fa.hook = &hook;
    fa.valid = valid;
    // CE a slice of positions at a time: the (B, n, V) logits of a large vocabulary need not exist all at
    // once. The LM head runs on detached hidden states; each slice's CE is backpropagated to them at once
    // (freeing its logits), and the hidden states' accumulated gradient then flows into the model below
    // together with L_q's. Same losses and gradients as one slice, up to summation order.
    fa.final_hidden = true;
    at::Tensor hidden = m.forward(tokens, fa);  // (B, T, C) final-norm hidden states
    const int64_t B = tokens.size(0), T = tokens.size(1), V = m.config.vocab_size;
    TuneLoss r;
    r.docs = seqs.size();
    at::Tensor ce = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(dev));
    at::Tensor h_in, h_det;  // the hidden states that predict a next token, and their detached copy
    if (T > 1) {
        at::Tensor mask_all = valid.narrow(1, 1, T - 1);  // the target is a real token
        r.tokens = mask_all.sum().item<int64_t>();
        h_in = hidden.narrow(1, 0, T - 1);
        h_det = h_in.detach().requires_grad_(with_grad && h_in.requires_grad());
        // logits, log-softmax and their gradient: about 3 float32 (B, n, V) tensors per slice
        const int64_t per_position = 3 * B * V * int64_t(sizeof(float));
        const int64_t n = std::max<int64_t>(1, std::min<int64_t>(T - 1, ce_chunk_bytes / std::max<int64_t>(per_position, 1)));
        for (int64_t s = 0; s < T - 1 && r.tokens > 0; s += n) {
            const int64_t len = std::min(n, T - 1 - s);
            at::Tensor lp = at::log_softmax(m.lm_logits(h_det.narrow(1, s, len)), -1);  // (B, len, V)
            at::Tensor tgt = tokens.narrow(1, s + 1, len).unsqueeze(-1);                  // (B, len, 1)
            at::Tensor mask = mask_all.narrow(1, s, len);
            at::Tensor nll = -lp.gather(-1, tgt).squeeze(-1).to(at::kDouble);             // (B, len)
            at::Tensor part = nll.masked_fill(at::logical_not(mask), 0.0).sum() / double(ce_tokens > 0 ? ce_tokens : r.tokens);
            if (h_det.requires_grad()) part.backward();
            ce = ce + part.detach();
        }
    }
    at::Tensor lq = hook.loss();
    if (!lq.defined()) lq = at::zeros({(int64_t)seqs.size()}, at::TensorOptions().dtype(at::kDouble).device(dev));
    lq = lq_docs > 0 ? lq.sum() / double(lq_docs) : lq.mean();
    at::Tensor total = ce + lambda * lq;
    r.ce = ce.item<double>();
    r.lq = lq.item<double>();
    r.total = total.item<double>();
    if (with_grad) {
        if (!std::isfinite(r.total)) {
            // Say where: the tuned keys/values, or the layer and site where the activations stopped being finite.
            ForwardArgs plain;
            plain.prefix = &p;
            plain.valid = valid;
            plain.final_hidden = true;
            throw non_finite_error(m, "prefix tuning: the loss is not finite", tokens, plain,
                                   [](int64_t row) { return "batch document " + std::to_string(row + 1); });
        }
        // d total / d KV: L_q's graph plus the hidden states' graph weighted by CE's gradient at them.
        at::Tensor surrogate = lambda * lq;
        if (h_det.defined() && h_det.grad().defined()) surrogate = surrogate + (h_in * h_det.grad()).sum().to(at::kDouble);
        if (surrogate.requires_grad()) surrogate.backward();
        double sq = 0;
        for (size_t l = 0; l < p.k.size(); ++l) {
            at::Tensor gk = p.k[l].grad(), gv = p.v[l].grad();
            if (!gk.defined()) gk = at::zeros_like(p.k[l]);
            if (!gv.defined()) gv = at::zeros_like(p.v[l]);
            r.grad_k.push_back(gk.detach());
            r.grad_v.push_back(gv.detach());
            sq += gk.to(at::kDouble).pow(2).sum().item<double>() + gv.to(at::kDouble).pow(2).sum().item<double>();
        }
        r.grad_norm = std::sqrt(sq);
    }
    return r;
}

at::Tensor prefix_last_logits(const Model& m, const std::vector<int32_t>& ids, const KVCache& kv) {
    if (ids.empty()) throw Error("prefix_last_logits: empty prefix");
    at::NoGradGuard ng;
    const int64_t P = ids.size();
    ForwardArgs fa;
    fa.last_logits_only = true;
    KVCache sub;
    if (P > 1) {
        for (size_t l = 0; l < kv.k.size(); ++l) {
            sub.k.push_back(kv.k[l].narrow(2, 0, P - 1));
            sub.v.push_back(kv.v[l].narrow(2, 0, P - 1));
        }
        fa.prefix = &sub;
    }
    at::Tensor t = ids_tensor({ids.back()}, m.device()).unsqueeze(0);
    return m.forward(t, fa)[0][0].to(at::kCPU, at::kFloat).contiguous();
}

// ------------------------------------------------------------------------------------ PrefixTuner

PrefixTuner::PrefixTuner(std::shared_ptr<const Model> model, const Cushion& init,
                         const std::vector<std::vector<int32_t>>& docs, PrefixTuneOptions opts)
    : model_(std::move(model)), init_(init), opts_(opts) {
    if (!model_) throw Error("prefix tuning: no model");
    check_cushion_fits(init_, *model_, "the cushion to tune");
    if (!(opts_.lr > 0) || !std::isfinite(opts_.lr)) throw Error("prefix tuning: the learning rate must be positive");
    if (!(opts_.lambda >= 0) || !std::isfinite(opts_.lambda)) throw Error("prefix tuning: lambda must be >= 0");
    if (opts_.epochs < 0) throw Error("prefix tuning: epochs must be >= 0");
    if (opts_.batch_size < 1) throw Error("prefix tuning: the batch size must be at least 1");
    if (!(opts_.beta1 >= 0 && opts_.beta1 < 1 && opts_.beta2 >= 0 && opts_.beta2 < 1 && opts_.eps > 0))
        throw Error("prefix tuning: Adam needs 0 <= beta < 1 and eps > 0");
    QuantLossHook validate(opts_.loss);
    (void)validate;
    if ((int64_t)init_.prefix_ids.size() != init_.length())
        throw Error("prefix tuning: the cushion's prefix ids and KV length disagree");
    const int64_t P = init_.length();
    const int64_t room = model_->config.max_seq_len - P;
    const int32_t bos = model_->tokenizer ? model_->tokenizer->bos_id() : -1;
    for (const auto& d : docs) {
        size_t b = (!d.empty() && d[0] == bos) ? 1 : 0;
        std::vector<int32_t> s(d.begin() + b, d.end());
        if ((int64_t)s.size() > room) s.resize(room);
        for (auto t : s)
            if (t < 0 || t >= model_->config.vocab_size) throw Error("prefix tuning: token id out of range");
        if (!s.empty()) docs_.push_back(std::move(s));
    }
    if (docs_.empty()) throw Error("prefix tuning: no calibration document has a token besides <bos>");
    const auto dev = model_->device();
    for (size_t l = 0; l < init_.kv.k.size(); ++l) {
        k_.push_back(init_.kv.k[l].detach().to(dev, at::kFloat).clone().contiguous());
        v_.push_back(init_.kv.v[l].detach().to(dev, at::kFloat).clone().contiguous());
        mk_.push_back(at::zeros_like(k_.back()));
        vk_.push_back(at::zeros_like(k_.back()));
        mv_.push_back(at::zeros_like(v_.back()));
        vv_.push_back(at::zeros_like(v_.back()));
    }
    order_ = epoch_order(0);
}

int64_t PrefixTuner::batches_per_epoch() const {
    return (static_cast<int64_t>(docs_.size()) + opts_.batch_size - 1) / opts_.batch_size;
}

std::vector<size_t> PrefixTuner::epoch_order(int epoch) const {
    std::vector<size_t> o(docs_.size());
    for (size_t i = 0; i < o.size(); ++i) o[i] = i;
    if (!opts_.shuffle) return o;
    uint64_t x = opts_.seed * 0x9E3779B97F4A7C15ULL + uint64_t(epoch + 1) * 0xD1B54A32D192ED03ULL;
    for (size_t i = o.size(); i > 1; --i) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        const size_t j = static_cast<size_t>((x >> 33) % i);
        std::swap(o[i - 1], o[j]);
    }
    return o;
}

TuneLoss PrefixTuner::loss_on(const std::vector<size_t>& idx, bool with_grad) const {
    std::vector<std::vector<int32_t>> seqs;
    for (size_t i : idx) {
        if (i >= docs_.size()) throw Error("prefix tuning: document index out of range");
        seqs.push_back(docs_[i]);
    }
    KVCache kv{k_, v_};
    return prefix_tune_loss(*model_, kv, seqs, opts_.lambda, opts_.loss, with_grad, opts_.ce_chunk_bytes);
}

TuneLoss PrefixTuner::shared_loss(const std::vector<size_t>& idx) const {
    Communicator& comm = *opts_.comm;
    // The whole batch's normalisers: CE over every predicted position (each document predicts all its tokens
    // but the first), L_q averaged over the documents.
    int64_t tokens = 0;
    for (size_t i : idx) {
        if (i >= docs_.size()) throw Error("prefix tuning: document index out of range");
        tokens += static_cast<int64_t>(docs_[i].size()) - 1;
    }
    const auto share = shard_range(idx.size(), comm.rank(), comm.world_size());
    TuneLoss L;
    if (share.second > share.first) {
        std::vector<std::vector<int32_t>> seqs;
        for (int64_t j = share.first; j < share.second; ++j) seqs.push_back(docs_[idx[j]]);
        KVCache kv{k_, v_};
        L = prefix_tune_loss(*model_, kv, seqs, opts_.lambda, opts_.loss, true, opts_.ce_chunk_bytes,
                             std::max<int64_t>(tokens, 1), idx.size());
    } else {  // fewer documents than ranks: this rank adds nothing
        for (size_t l = 0; l < k_.size(); ++l) {
            L.grad_k.push_back(at::zeros_like(k_[l]));
            L.grad_v.push_back(at::zeros_like(v_[l]));
        }
    }
    // One exchange: every gradient and the three losses, summed in float64.
    std::vector<at::Tensor> sum;
    for (size_t l = 0; l < k_.size(); ++l) {
        sum.push_back(L.grad_k[l]);
        sum.push_back(L.grad_v[l]);
    }
    sum.push_back(at::tensor({L.ce, L.lq, L.total}, at::kDouble));
    comm.all_reduce_sum(sum);
    double sq = 0;
    for (size_t l = 0; l < k_.size(); ++l) {
        L.grad_k[l] = sum[2 * l];
        L.grad_v[l] = sum[2 * l + 1];
        sq += sum[2 * l].to(at::kDouble).pow(2).sum().item<double>() + sum[2 * l + 1].to(at::kDouble).pow(2).sum().item<double>();
    }
    const at::Tensor losses = sum.back();
    L.ce = losses[0].item<double>();
    L.lq = losses[1].item<double>();
    L.total = losses[2].item<double>();
    L.grad_norm = std::sqrt(sq);
    L.tokens = tokens;
    L.docs = idx.size();
    return L;
}

TuneStepResult PrefixTuner::step(const ProgressFn& progress) {
    if (done()) throw Error("prefix tuning: all epochs are done");
    const auto t0 = Clock::now();
    const int64_t nb = batches_per_epoch();
    const int64_t bs = opts_.batch_size;
    std::vector<size_t> idx;
    for (int64_t i = batch_ * bs; i < std::min<int64_t>((batch_ + 1) * bs, docs_.size()); ++i) idx.push_back(order_[i]);
    const double total_steps_d = double(std::max<int64_t>(total_steps(), 1));
    const std::string what = "epoch " + std::to_string(epoch_ + 1) + "/" + std::to_string(opts_.epochs) + " batch " +
                             std::to_string(batch_ + 1) + "/" + std::to_string(nb);
    report_progress(progress, double(t_) / total_steps_d, what);
    TuneLoss L = opts_.comm && opts_.comm->world_size() > 1 ? shared_loss(idx) : loss_on(idx, true);
    report_progress(progress, double(t_ + 1) / total_steps_d, what);
    // Adam (bias-corrected), in place, only now that nothing can cancel.
    {
        at::NoGradGuard ng;
        const int64_t t = t_ + 1;
        const double bc1 = 1 - std::pow(opts_.beta1, double(t)), bc2 = 1 - std::pow(opts_.beta2, double(t));
        auto update = [&](at::Tensor& p, at::Tensor& m, at::Tensor& v, const at::Tensor& g) {
            m.mul_(opts_.beta1).add_(g, 1 - opts_.beta1);
            v.mul_(opts_.beta2).addcmul_(g, g, 1 - opts_.beta2);
            at::Tensor denom = (v / bc2).sqrt_().add_(opts_.eps);
            p.addcdiv_(m, denom, -opts_.lr / bc1);
        };
        for (size_t l = 0; l < k_.size(); ++l) {
            update(k_[l], mk_[l], vk_[l], L.grad_k[l]);
            update(v_[l], mv_[l], vv_[l], L.grad_v[l]);
        }
    }
    TuneStepResult r;
    r.step = ++t_;
    r.epoch = epoch_;
    r.batch = batch_;
    r.batches_per_epoch = nb;
    r.ce = L.ce;
    r.lq = L.lq;
    r.total = L.total;
    r.grad_norm = L.grad_norm;
    r.tokens = L.tokens;
    r.docs = L.docs;
    if (++batch_ >= nb) {
        r.epoch_end = true;
        batch_ = 0;
        ++epoch_;
        order_ = epoch_order(epoch_);
    }
    r.done = done();
    r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    history_.push_back(r);
    return r;
}

std::string PrefixTuner::settings_json() const {
    return json{{"lambda", opts_.lambda}, {"lr", opts_.lr}, {"beta1", opts_.beta1}, {"beta2", opts_.beta2},
                {"eps", opts_.eps}, {"epochs", opts_.epochs}, {"batch_size", opts_.batch_size},
                {"bits", opts_.loss.bits}, {"sites", sites_string(opts_.loss.sites)}, {"shuffle", opts_.shuffle},
                {"seed", opts_.seed}, {"optimizer", "adam"}, {"documents", docs_.size()},
                {"last_logits", "recomputed: last prefix token after the tuned KV of the earlier positions"}}
        .dump();
}

Cushion PrefixTuner::cushion() const {
    Cushion c = init_;
    c.kv.k.clear();
    c.kv.v.clear();
    for (size_t l = 0; l < k_.size(); ++l) {
        c.kv.k.push_back(k_[l].detach().clone());
        c.kv.v.push_back(v_[l].detach().clone());
    }
    c.last_logits = prefix_last_logits(*model_, c.prefix_ids, c.kv);
    c.model_fingerprint = model_->fingerprint();
    json s = parse_or_empty(init_.settings_json);
    s["tuning"] = json::parse(settings_json());
    c.settings_json = s.dump();
    json steps = json::array();
    for (const auto& h : history_)
        steps.push_back({{"step", h.step}, {"epoch", h.epoch}, {"batch", h.batch}, {"ce", h.ce}, {"lq", h.lq},
                         {"total", h.total}, {"grad_norm", h.grad_norm}});
    json hist = parse_or_empty(init_.history_json);
    hist["tuning"] = {{"steps", steps}, {"epochs_done", epoch_}};
    c.history_json = hist.dump();
    return c;
}

void PrefixTuner::save_state(std::vector<std::pair<std::string, at::Tensor>>* tensors, std::string* state_json) const {
    for (size_t l = 0; l < k_.size(); ++l) {
        const std::string s = std::to_string(l);
        tensors->push_back({"tune.k." + s, k_[l].cpu()});
        tensors->push_back({"tune.v." + s, v_[l].cpu()});
        tensors->push_back({"tune.mk." + s, mk_[l].cpu()});
        tensors->push_back({"tune.vk." + s, vk_[l].cpu()});
        tensors->push_back({"tune.mv." + s, mv_[l].cpu()});
        tensors->push_back({"tune.vv." + s, vv_[l].cpu()});
    }
    json steps = json::array();
    for (const auto& h : history_)
        steps.push_back({{"step", h.step}, {"epoch", h.epoch}, {"batch", h.batch}, {"nb", h.batches_per_epoch},
                         {"ce", h.ce}, {"lq", h.lq}, {"total", h.total}, {"grad_norm", h.grad_norm},
                         {"tokens", h.tokens}, {"docs", h.docs}, {"epoch_end", h.epoch_end}, {"done", h.done},
                         {"seconds", h.seconds}});
    *state_json = json{{"format", "cushioncache-tune-state"},
                       {"model_fingerprint", model_->fingerprint()},
                       {"prefix_ids", init_.prefix_ids},
                       {"settings", json::parse(settings_json())},
                       {"epoch", epoch_},
                       {"batch", batch_},
                       {"t", t_},
                       {"history", steps}}
                      .dump();
}

void PrefixTuner::save_state(const std::string& path) const {
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    std::string state;
    save_state(&tensors, &state);
    write_state_file(path, tensors, state);
}

void PrefixTuner::write_state_file(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                                   const std::string& state_json) {
    save_safetensors(path, tensors,
                     {{"format", "cushioncache-tuner-state"}, {"version", "1"}, {"tune", state_json}, {"tool_version", CUSHION_VERSION}});
}

void PrefixTuner::load_state(const std::string& path) {
    SafetensorsFile f(path);
    f.require_format("cushioncache-tuner-state", "tuner state file");
    auto get = [&](const std::string& k) { return f.meta(k); };
    std::map<std::string, at::Tensor> tensors;
    for (const auto& n : f.names()) tensors[n] = f.get(n);
    try {
        restore(tensors, get("tune"));
    } catch (const Error& e) {
        throw Error(path + ": " + e.what());
    } catch (const json::exception& e) {  // a field missing or of the wrong type in the "tune" metadata
        throw Error(path + ": tuning state (metadata 'tune'): " + e.what());
    }
}

void PrefixTuner::restore(const std::map<std::string, at::Tensor>& tensors, const std::string& state) {
    json j;
    try {
        j = json::parse(state);
    } catch (const std::exception& e) {
        throw Error(std::string("tuning state: not valid JSON: ") + e.what());
    }
    // Every field through JsonFields: a missing one or one of the wrong type is named ("tuning state: field
    // 'history[3].grad_norm' is missing"), never the JSON library's text.
    const JsonFields root(j, "tuning state");
    if (!j.is_object() || root.string_or("format", "") != "cushioncache-tune-state")
        throw Error("tuning state: not a tuning state");
    if (root.string_or("model_fingerprint", "") != model_->fingerprint()) throw Error("tuning state: made for another model");
    std::vector<int32_t> prefix_ids;
    for (int64_t t : root.integers("prefix_ids", 0, INT32_MAX)) prefix_ids.push_back(static_cast<int32_t>(t));
    if (prefix_ids != init_.prefix_ids) throw Error("tuning state: made for another prefix");
    const json mine = json::parse(settings_json());
    const json& theirs = root.object("settings").json();
    for (const char* key : {"lambda", "lr", "epochs", "batch_size", "bits", "sites", "shuffle", "seed", "documents"})
        if (theirs.value(key, json()) != mine.at(key))
            throw Error(std::string("tuning state: its setting '") + key + "' differs from this run's");
    std::vector<at::Tensor> k, v, mk, vk, mv, vv;
    for (size_t l = 0; l < k_.size(); ++l) {
        const std::string s = std::to_string(l);
        auto get = [&](const std::string& name, const at::Tensor& like) {
            auto it = tensors.find(name);
            if (it == tensors.end()) throw Error("tuning state: tensor " + name + " missing");
            if (it->second.sizes() != like.sizes()) throw Error("tuning state: tensor " + name + " has the wrong shape");
            if (!at::isFloatingType(it->second.scalar_type()))
                throw Error("tuning state: tensor " + name + " is not floating-point");
            at::Tensor t = it->second.to(at::kFloat);
            // A NaN/Inf K/V (or Adam moment) would be tuned on and written into a cushion every command rejects.
            if (!at::isfinite(t).all().item<bool>()) throw Error("tuning state: tensor " + name + " contains NaN or Inf");
            return t.to(like.device()).contiguous();
        };
        k.push_back(get("tune.k." + s, k_[l]));
        v.push_back(get("tune.v." + s, v_[l]));
        mk.push_back(get("tune.mk." + s, k_[l]));
        vk.push_back(get("tune.vk." + s, k_[l]));
        mv.push_back(get("tune.mv." + s, v_[l]));
        vv.push_back(get("tune.vv." + s, v_[l]));
    }
    std::vector<TuneStepResult> hist;
    const JsonFields history = root.array("history");
    for (size_t i = 0; i < history.size(); ++i) {
        const JsonFields h = history.at(i);
        TuneStepResult r;
        r.step = h.integer("step", 0, INT32_MAX);
        r.epoch = static_cast<int>(h.integer("epoch", 0, INT32_MAX));
        r.batch = h.integer("batch", 0, INT32_MAX);
        r.batches_per_epoch = h.integer_or("nb", 0, 0, INT32_MAX);
        r.ce = h.number("ce");
        r.lq = h.number("lq");
        r.total = h.number("total");
        r.grad_norm = h.number("grad_norm");
        r.tokens = h.integer_or("tokens", 0, 0, INT64_MAX);
        r.docs = h.integer_or("docs", 0, 0, INT64_MAX);
        r.epoch_end = h.boolean_or("epoch_end", false);
        r.done = h.boolean_or("done", false);
        r.seconds = h.number_or("seconds", 0.0);
        hist.push_back(r);
    }
    // Every field read before anything changes: a bad one leaves the tuner as it was.
    const auto epoch = static_cast<decltype(epoch_)>(root.integer("epoch", 0, INT32_MAX));
    const auto batch = static_cast<decltype(batch_)>(root.integer("batch", 0, INT32_MAX));
    const auto t = static_cast<decltype(t_)>(root.integer("t", 0, INT32_MAX));
    k_ = k; v_ = v; mk_ = mk; vk_ = vk; mv_ = mv; vv_ = vv;
    epoch_ = epoch;
    batch_ = batch;
    t_ = t;
    history_ = std::move(hist);
    order_ = epoch_order(epoch_);
}

}  // namespace cushion
