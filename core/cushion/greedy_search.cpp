#include "cushion/greedy_search.h"

#include "base/device_memory.h"
#include "base/out_of_memory.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <nlohmann/json.hpp>
#include <numeric>

#include "cushion/candidate_screen.h"
#include "cushion/cushion.h"
#include "cushion/distributed.h"
#include "model/non_finite.h"
#include "base/error.h"
#include "base/json_file.h"
#include "quant/quant_config.h"
#include "base/sha256.h"
#include "base/threads.h"

namespace cushion {

using json = nlohmann::json;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

at::Tensor ids_tensor(const std::vector<int32_t>& v, c10::Device dev) {
    return at::tensor(std::vector<int64_t>(v.begin(), v.end()), at::kLong).to(dev);
}

std::string ids_sha(const std::vector<int32_t>& v) {
    Sha256 h;
    h.update(v.data(), v.size() * sizeof(int32_t));
    return h.hex_digest();
}

std::string printable_piece(const Model& m, int32_t id) {
    std::string s = m.tokenizer ? m.tokenizer->piece(id) : std::to_string(id);
    std::string out;
    for (char ch : s) {
        if (ch == '\n') out += "\\n";
        else out += ch;
    }
    return out;
}

std::string fmt(const char* f, double a, double b = 0, double c = 0) {
    char buf[160];
    std::snprintf(buf, sizeof buf, f, a, b, c);
    return buf;
}

}  // namespace

const char* step_choice_name(StepChoice c) {
    switch (c) {
        case StepChoice::Auto: return "auto";
        case StepChoice::Exhaustive: return "exhaustive";
        case StepChoice::Pruned: return "pruned";
        case StepChoice::Fast: return "fast";
    }
    return "auto";
}

bool parse_step_choice(const std::string& s, StepChoice* out) {
    for (StepChoice c : {StepChoice::Auto, StepChoice::Exhaustive, StepChoice::Pruned, StepChoice::Fast})
        if (s == step_choice_name(c)) {
            *out = c;
            return true;
        }
    return false;
}

const char* step_kind_name(StepKind k) {
    switch (k) {
        case StepKind::Exhaustive: return "exhaustive";
        case StepKind::Pruned: return "pruned";
        case StepKind::Fast: return "fast";
    }
    return "exhaustive";
}

const char* stop_reason_name(StopReason r) {
    switch (r) {
        case StopReason::None: return "";
        case StopReason::NoImprovement: return "no-improvement";
        case StopReason::MaxLength: return "max-length";
        case StopReason::NoCandidates: return "no-candidates";
    }
    return "";
}

static StopReason parse_stop(const std::string& s) {
    if (s == "no-improvement") return StopReason::NoImprovement;
    if (s == "max-length") return StopReason::MaxLength;
    if (s == "no-candidates") return StopReason::NoCandidates;
    return StopReason::None;
}

std::vector<int32_t> make_search_sample(const std::vector<std::vector<int32_t>>& docs, int32_t bos, int64_t n) {
    if (n <= 0) throw Error("search sample: the number of tokens must be positive");
    std::vector<int32_t> out;
    for (const auto& d : docs) {
        size_t begin = (!d.empty() && d[0] == bos) ? 1 : 0;
        for (size_t i = begin; i < d.size() && (int64_t)out.size() < n; ++i) out.push_back(d[i]);
        if ((int64_t)out.size() >= n) break;
    }
    if ((int64_t)out.size() < n)
        throw Error("search sample: the calibration text has " + std::to_string(out.size()) +
                    " tokens (without <bos>), fewer than the " + std::to_string(n) +
                    " asked for; give more text or a smaller sample");
    return out;
}

int64_t default_sample_tokens(const ModelConfig& c, int max_prefix) {
    return std::max<int64_t>(1, std::min<int64_t>(512, c.max_seq_len - max_prefix));
}

int64_t search_bytes_per_candidate(const ModelConfig& c, int64_t P, int64_t n, at::ScalarType dtype) {
    const int64_t e = at::elementSize(dtype), f = 4;
    const int64_t S = P + n, H = c.n_heads, KVH = c.n_kv_heads, D = c.head_dim, C = c.dim, Hd = c.hidden_dim;
    const int64_t attn = 3 * H * n * S * f + (e != f ? H * n * S * e : 0);  // scores, masked, softmax (+ cast)
    const int64_t kv = 2 * (KVH + (H != KVH ? H : 0)) * S * D * e;           // concatenated (and expanded) K, V
    const int64_t act = n * (8 * C + 4 * Hd) * e;                           // residual, norms, q/k/v, MLP
    const int64_t lossq = 4 * n * std::max(C, Hd) * f;                      // L_q temporaries
    const int64_t cache = c.n_layers * 2 * KVH * P * D * e;                 // the row's extended prefix
    return attn + kv + act + lossq + cache;
}

namespace {

// The batch budget of default_memory_budget from an already read figure of the device's free memory.
int64_t budget_for(c10::Device dev, const DeviceMemory& mem) {
    if (dev.is_cpu()) {
        const int64_t fast = int64_t(32) << 20;  // cache-sized batches are the fastest on the CPU
        return mem.known() ? std::max<int64_t>(1, std::min(fast, mem.free_bytes / 4)) : fast;
    }
    // Half of what is free now (the rest for the weights' temporaries and the allocator's slack).
    return mem.known() ? std::max<int64_t>(1, mem.free_bytes / 2) : int64_t(2) << 30;
}

}  // namespace

int64_t default_memory_budget(c10::Device dev) { return budget_for(dev, query_device_memory(dev)); }

std::pair<size_t, size_t> screen_shard(size_t candidates, int64_t batch, int rank, int world_size) {
    if (batch < 1) throw Error("greedy search: the screen batch must be positive");
    const int64_t b = batch, batches = (int64_t(candidates) + b - 1) / b;
    const auto share = shard_range(batches, rank, world_size);
    return {std::min<size_t>(share.first * b, candidates), std::min<size_t>(share.second * b, candidates)};
}

int search_threads(const GreedySearchOptions& o, const ModelConfig& c, c10::Device dev) {
    if (!dev.is_cpu() || o.threads < 0) return 0;
    if (o.threads > 0) return o.threads;
    return c.dim < 1024 ? 1 : 0;
}

double search_flops_per_candidate(const ModelConfig& c, int64_t P, int64_t n) {
    const double C = c.dim, Hd = c.hidden_dim, Q = double(c.n_heads) * c.head_dim, KV = c.kv_dim();
    const double linear = 2 * (C * Q + 2 * C * KV + Q * C + (c.arch == Arch::Llama ? 3 : 2) * C * Hd);
    // Sample token t (0-based) attends to the P + 1 cached keys and t + 1 sample keys.
    const double keys = double(n) * double(P + 1) + double(n) * double(n + 1) / 2;
    const double sample = c.n_layers * (double(n) * linear + 4.0 * keys * Q);
    const double ext = double(c.n_layers) * (linear + 4.0 * double(P + 1) * Q);
    return sample + ext;
}

// ------------------------------------------------------------------------------------ GreedySearch

struct GreedySearch::Scores {
    std::vector<double> loss;  // per token, in the order given
    int64_t batch = 0;
};

GreedySearch::GreedySearch(std::shared_ptr<const Model> model, std::vector<int32_t> sample, GreedySearchOptions opts)
    : model_(std::move(model)), sample_(std::move(sample)), opts_(std::move(opts)) {
    if (!model_) throw Error("greedy search: no model");
    const ModelConfig& c = model_->config;
    const int64_t V = c.vocab_size;
    auto check_id = [&](int32_t t, const char* what) {
        if (t < 0 || t >= V)
            throw Error(std::string("greedy search: ") + what + " token id " + std::to_string(t) +
                        " is out of range [0, " + std::to_string(V) + ")");
    };
    if (!(opts_.tau > 0 && opts_.tau <= 1)) throw Error("greedy search: tau must be in (0, 1], got " + fmt("%g", opts_.tau));
    if (opts_.max_prefix < 1) throw Error("greedy search: the maximum prefix length must be at least 1");
    if (opts_.memory_budget < 0) throw Error("greedy search: the memory budget must be positive (0 = automatic)");
    if (opts_.prune_window < 1 || opts_.prune_keep < 1) throw Error("greedy search: prune window and keep must be >= 1");
    if (opts_.screen_keep < 1) throw Error("greedy search: the fast step must re-score at least 1 candidate (screen keep)");
    if (opts_.screen_head < 0) throw Error("greedy search: the fast step's exact head must not be negative");
    if (opts_.screen_batch < 0) throw Error("greedy search: the screen batch must be positive (0 = automatic)");
    QuantLossHook validate(opts_.loss);  // throws on bad bits / sites
    (void)validate;
    if (opts_.start_tokens.empty()) {
        const int32_t bos = model_->tokenizer ? model_->tokenizer->bos_id() : -1;
        if (bos < 0) throw Error("greedy search: the model has no <bos> token; give start tokens");
        opts_.start_tokens = {bos};
    }
    for (auto t : opts_.start_tokens) check_id(t, "start");
    if ((int)opts_.start_tokens.size() > opts_.max_prefix)
        throw Error("greedy search: the start prefix (" + std::to_string(opts_.start_tokens.size()) +
                    " tokens) is longer than the maximum prefix length " + std::to_string(opts_.max_prefix));
    if (sample_.empty()) throw Error("greedy search: the calibration sample is empty");
    for (auto t : sample_) check_id(t, "sample");
    if ((int64_t)opts_.max_prefix + (int64_t)sample_.size() > c.max_seq_len)
        throw Error("greedy search: a prefix of up to " + std::to_string(opts_.max_prefix) + " tokens plus the " +
                    std::to_string(sample_.size()) + "-token sample exceed the model's context of " +
                    std::to_string(c.max_seq_len) + "; use a sample of at most " +
                    std::to_string(c.max_seq_len - opts_.max_prefix) + " tokens");
    if (opts_.candidates.empty()) {
        for (int32_t t = 0; t < V; ++t)
            if (!(model_->tokenizer && model_->tokenizer->is_special(t))) candidates_.push_back(t);
    } else {
        for (auto t : opts_.candidates) check_id(t, "candidate");
        candidates_ = opts_.candidates;
        std::sort(candidates_.begin(), candidates_.end());
        candidates_.erase(std::unique(candidates_.begin(), candidates_.end()), candidates_.end());
    }
    set_prefix(opts_.start_tokens);
    initial_loss_ = loss_;
    if (!std::isfinite(initial_loss_)) {
        // The model itself computes NaN/Inf on the sample: no candidate can be compared. Say where it starts.
        std::vector<int32_t> all = opts_.start_tokens;
        all.insert(all.end(), sample_.begin(), sample_.end());
        ForwardArgs fa;
        fa.skip_logits = true;
        throw non_finite_error(*model_, "greedy search: L_q of the start prefix and the sample is not finite",
                               ids_tensor(all, model_->device()).unsqueeze(0), fa,
                               [](int64_t) { return std::string("the start prefix + sample"); });
    }
}

void GreedySearch::set_prefix(std::vector<int32_t> prefix) {
    at::NoGradGuard ng;
    const auto dev = model_->device();
    KVCache kv;
    ForwardArgs fa;
    fa.present = &kv;
    fa.skip_logits = true;
    model_->forward(ids_tensor(prefix, dev).unsqueeze(0), fa);
    for (auto& t : kv.k) t = t.contiguous();
    for (auto& t : kv.v) t = t.contiguous();
    ForwardArgs la;
    la.prefix = &kv;
    at::Tensor s = ids_tensor(sample_, dev).unsqueeze(0);
    const double l = quantization_loss(*model_, s, la, opts_.loss).cpu().item<double>();
    // Commit only once everything succeeded.
    prefix_kv_ = std::move(kv);
    prefix_ = std::move(prefix);
    loss_ = l;
}

int64_t GreedySearch::batch_size(int64_t n) const {
    const int64_t P = (int64_t)prefix_.size() + 1;
    const int64_t per = search_bytes_per_candidate(model_->config, P, n, model_->dtype());
    const DeviceMemory mem = query_device_memory(model_->device());
    const int64_t budget = opts_.memory_budget > 0 ? opts_.memory_budget : budget_for(model_->device(), mem);
    if (per > budget) {
        // Even one candidate needs more than the budget: fine when the device has room for it, else a clear
        // error now rather than running out of memory in the middle of a step.
        if (mem.known() && per > mem.free_bytes)
            throw Error("greedy search: one candidate over a sample of " + std::to_string(n) + " tokens needs about " +
                        format_bytes(per) + " of memory, and the device has " + format_bytes(mem.free_bytes) +
                        " free (" + mem.source + "); use a shorter sample (--sample-tokens) or a smaller dtype");
    }
    int64_t b = std::max<int64_t>(1, budget / std::max<int64_t>(per, 1));
    if (opts_.max_batch > 0) b = std::min(b, opts_.max_batch);
    if (oom_batch_cap_ > 0) b = std::min(b, oom_batch_cap_);  // a batch this large ran out of memory before
    return std::max<int64_t>(1, std::min<int64_t>(b, std::max<size_t>(candidates_.size(), 1)));
}

GreedySearch::Scores GreedySearch::score_tokens(const std::vector<int32_t>& tokens, int64_t n,
                                                const ProgressFn& progress, double f0, double f1,
                                                const std::string& label) const {
    Scores out;
    out.loss.assign(tokens.size(), std::numeric_limits<double>::quiet_NaN());
    if (tokens.empty()) return out;
    n = std::min<int64_t>(n, sample_.size());
    const auto dev = model_->device();
    const IntraOpThreads threads(search_threads(opts_, model_->config, dev));
    Communicator* comm = opts_.comm && opts_.comm->world_size() > 1 ? opts_.comm.get() : nullptr;
    int64_t bs = std::min<int64_t>(batch_size(n), tokens.size());
    if (comm) {
        bs = comm->all_reduce_min(bs);  // the same batches on every rank (and as in one process)
        // Every rank must score the same list (a screen that chose differently on one rank would mix lists).
        uint64_t h = 1469598103934665603ULL ^ uint64_t(n);
        for (int32_t t : tokens) h = (h ^ uint64_t(uint32_t(t))) * 1099511628211ULL;
        const std::vector<double> all = comm->all_gather_doubles({double(h >> 12)});  // 52 bits: exact in a double
        for (double x : all)
            if (x != all[0])
                throw Error("greedy search: the ranks were about to score different candidate lists (" + label +
                            "); every rank must run the same search on the same kind of hardware and thread count");
    }
    out.batch = bs;
    const at::Tensor sample =
        ids_tensor(std::vector<int32_t>(sample_.begin(), sample_.begin() + n), dev).unsqueeze(0);
    const size_t chunks = (tokens.size() + bs - 1) / bs;
    // This process's chunks: all of them, or its contiguous range when sharded.
    const auto share = comm ? shard_range(chunks, comm->rank(), comm->world_size()) : std::pair<int64_t, int64_t>(0, chunks);
    const size_t first = std::min<size_t>(share.first * bs, tokens.size());
    const size_t total = std::min<size_t>(share.second * bs, tokens.size()) - first;  // candidates scored here
    // One chunk: extend the shared prefix by one token per row, then run the sample after each row's
    // (P + 1)-token cache. Rows write disjoint entries of out.loss.
    auto run_chunk = [&](size_t i, int64_t b) {
        at::NoGradGuard ng;
        std::vector<int32_t> chunk(tokens.begin() + i, tokens.begin() + i + b);
        KVCache ext;
        ForwardArgs ea;
        ea.prefix = &prefix_kv_;
        ea.present = &ext;
        ea.skip_logits = true;
        model_->forward(ids_tensor(chunk, dev).unsqueeze(1), ea);
        ForwardArgs sa;
        sa.prefix = &ext;
        at::Tensor l = quantization_loss(*model_, sample.expand({b, n}), sa, opts_.loss).to(at::kCPU, at::kDouble);
        auto acc = l.accessor<double, 1>();
        for (int64_t j = 0; j < b; ++j) out.loss[i + j] = acc[j];
    };
    const auto t0 = Clock::now();
    auto what = [&](size_t done) {
        std::string w = label + ": " + std::to_string(done) + "/" + std::to_string(total) + " candidates";
        const double secs = seconds_since(t0);
        if (done > 0 && secs > 0) w += fmt(", %.1f/s", double(done) / secs);
        return w;
    };
    auto fraction = [&](size_t done) { return f0 + (f1 - f0) * double(done) / double(total); };
    // Chunks run one after the other, each with the intra-op threads. (Sharing whole chunks out to the
    // threads, each computing its chunk single-threaded, was measured on the 2-core test VM: no faster
    // than one thread; see tests/perf/RESULTS.md.) A batch that runs out of memory is halved and the same
    // candidates retried (base/out_of_memory.h); the smaller batch stays for the rest of the search.
    int64_t batch = bs;
    run_halving_on_oom(
        first, first + total, &batch,
        [&](size_t i, int64_t b) {
            report_progress(progress, fraction(i - first), what(i - first));
            check_injected_out_of_memory(b);
            run_chunk(i, b);
        },
        [&](int64_t old_b, int64_t new_b) {
            oom_batch_cap_ = new_b;
            if (opts_.log)
                opts_.log(batch_halved_message("greedy search " + label, old_b, new_b));
            else
                report_batch_halved("greedy search " + label, old_b, new_b);
        },
        "greedy search " + label);
    out.batch = batch;
    report_progress(progress, f1, label + ": " + std::to_string(total) + "/" + std::to_string(total) + " candidates");
    if (comm) {
        // Every rank's range, in rank order, is the whole list in order.
        std::vector<double> all = comm->all_gather_doubles(
            std::vector<double>(out.loss.begin() + first, out.loss.begin() + first + total));
        if (all.size() != tokens.size())
            throw Error("greedy search: the ranks scored " + std::to_string(all.size()) + " candidates, not " +
                        std::to_string(tokens.size()) + "; every rank must run the same search");
        out.loss = std::move(all);
    }
    return out;
}

std::vector<double> GreedySearch::evaluate(const std::vector<int32_t>& tokens, const ProgressFn& progress) const {
    for (auto t : tokens)
        if (t < 0 || t >= model_->config.vocab_size)
            throw Error("greedy search: token id " + std::to_string(t) + " is out of range");
    if ((int)prefix_.size() >= opts_.max_prefix)
        throw Error("greedy search: the prefix already has the maximum length " + std::to_string(opts_.max_prefix));
    return score_tokens(tokens, sample_.size(), progress, 0, 1, "evaluate").loss;
}

GreedyStepResult GreedySearch::score(StepKind kind, const ProgressFn& progress) const {
    const auto t0 = Clock::now();
    GreedyStepResult r;
    r.step = steps_ + 1;
    r.kind = kind;
    r.loss_before = r.loss_after = loss_;
    r.prefix = prefix_;
    const int64_t V = model_->config.vocab_size;
    r.candidate_loss = at::full({V}, std::numeric_limits<double>::quiet_NaN(), at::kDouble);
    if ((int)prefix_.size() >= opts_.max_prefix) {
        r.stop = StopReason::MaxLength;
        r.reason = "the prefix has the maximum length of " + std::to_string(opts_.max_prefix) + " tokens";
        r.seconds = seconds_since(t0);
        return r;
    }
    if (candidates_.empty()) {
        r.stop = StopReason::NoCandidates;
        r.reason = "no candidate tokens";
        r.seconds = seconds_since(t0);
        return r;
    }
    const int64_t n = sample_.size();
    const std::string label = "step " + std::to_string(r.step);
    std::vector<int32_t> scored;  // ascending ids with full-sample losses
    auto cl = r.candidate_loss.accessor<double, 1>();
    // Fast and pruned steps: the k candidates with the lowest estimate (NaN last; equal estimates in candidate
    // order) are scored exactly on the whole sample from progress fraction f0 on; the shortlist is ordered by
    // that exact L_q.
    auto rescore_best = [&](const std::vector<double>& est, size_t k, double f0) {
        std::vector<size_t> order(candidates_.size());
        std::iota(order.begin(), order.end(), 0);
        auto key = [&](size_t i) { return std::isnan(est[i]) ? std::numeric_limits<double>::infinity() : est[i]; };
        std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return key(a) < key(b); });
        for (size_t i = 0; i < k; ++i) r.shortlist.push_back(candidates_[order[i]]);
        std::vector<int32_t> sorted = r.shortlist;
        std::sort(sorted.begin(), sorted.end());
        Scores sf = score_tokens(sorted, n, progress, f0, 1, label + " (re-score)");
        for (size_t i = 0; i < sorted.size(); ++i) cl[sorted[i]] = sf.loss[i];
        scored = sorted;
        std::stable_sort(r.shortlist.begin(), r.shortlist.end(), [&](int32_t a, int32_t b) { return cl[a] < cl[b]; });
        return sf;
    };
    if (kind == StepKind::Exhaustive) {
        Scores s = score_tokens(candidates_, n, progress, 0, 1, label);
        for (size_t i = 0; i < candidates_.size(); ++i) cl[candidates_[i]] = s.loss[i];
        scored = candidates_;
        r.evaluated = candidates_.size();
        r.batch_size = s.batch;
    } else if (kind == StepKind::Fast) {
        // The screen (one token's forward pass per candidate), then the best screen_keep exactly.
        const size_t k = std::min<size_t>(opts_.screen_keep, candidates_.size());
        const int64_t P = prefix_.size();
        const double cs = candidates_.size() * CandidateScreen::flops_per_candidate(model_->config, P, n, opts_.screen_head);
        const double cf = k * search_flops_per_candidate(model_->config, P, n);
        const double split = cs / (cs + cf);
        report_progress(progress, 0, label + " (screen): preparing the sample");
        const CandidateScreen screen(*model_, prefix_kv_, sample_, opts_.loss, opts_.screen_head);
        const int64_t sb = opts_.screen_batch > 0 ? opts_.screen_batch : kDefaultScreenBatch;
        const std::string screen_label = label + " (screen)";
        // Across ranks: each screens a contiguous range of whole batches (the same batches as one process, so the
        // same estimates bit for bit: a candidate's estimate moves with the batch it is computed in at float
        // rounding), and the estimates are gathered in rank order, the whole list on every rank.
        Communicator* comm = opts_.comm && opts_.comm->world_size() > 1 ? opts_.comm.get() : nullptr;
        if (comm) comm->check_agree("screen batch", std::to_string(sb));  // the same batches on every rank
        const auto range = screen_shard(candidates_.size(), sb, comm ? comm->rank() : 0, comm ? comm->world_size() : 1);
        const std::vector<int32_t> mine(candidates_.begin() + range.first, candidates_.begin() + range.second);
        std::vector<double> est =
            screen.estimate(mine, sb, progress, 0, split, screen_label, nullptr, [&](int64_t old_b, int64_t new_b) {
                if (opts_.log)
                    opts_.log(batch_halved_message("greedy search " + screen_label, old_b, new_b));
                else
                    report_batch_halved("greedy search " + screen_label, old_b, new_b);
            });
        if (comm) {
            est = comm->all_gather_doubles(est);
            if (est.size() != candidates_.size())
                throw Error("greedy search: the ranks screened " + std::to_string(est.size()) + " candidates, not " +
                            std::to_string(candidates_.size()) + "; every rank must run the same search");
        }
        r.window_loss = at::full({V}, std::numeric_limits<double>::quiet_NaN(), at::kDouble);
        auto wl = r.window_loss.accessor<double, 1>();
        for (size_t i = 0; i < candidates_.size(); ++i) wl[candidates_[i]] = loss_ + est[i];
        const Scores sf = rescore_best(est, k, split);
        r.evaluated = r.shortlist.size();
        r.batch_size = sf.batch;
    } else {
        const int64_t w = std::min<int64_t>(opts_.prune_window, n);
        const size_t k = std::min<size_t>(opts_.prune_keep, candidates_.size());
        const int64_t P = prefix_.size();
        const double cw = candidates_.size() * search_flops_per_candidate(model_->config, P, w);
        const double cf = k * search_flops_per_candidate(model_->config, P, n);
        const double split = cw / (cw + cf);
        Scores sw = score_tokens(candidates_, w, progress, 0, split, label + " (window)");
        r.window_loss = at::full({V}, std::numeric_limits<double>::quiet_NaN(), at::kDouble);
        auto wl = r.window_loss.accessor<double, 1>();
        for (size_t i = 0; i < candidates_.size(); ++i) wl[candidates_[i]] = sw.loss[i];
        rescore_best(sw.loss, k, split);
        r.evaluated = candidates_.size() + r.shortlist.size();
        r.batch_size = sw.batch;
    }
    // t*: the lowest L_q; ascending ids and a strict comparison break ties towards the lowest id.
    double best = std::numeric_limits<double>::infinity();
    for (int32_t t : scored)
        if (!std::isnan(cl[t]) && cl[t] < best) {
            best = cl[t];
            r.best_token = t;
        }
    r.seconds = seconds_since(t0);
    if (r.best_token < 0) {
        r.stop = StopReason::NoImprovement;
        r.reason = "no candidate gave a finite L_q";
        return r;
    }
    r.best_loss = best;
    const std::string piece = "'" + printable_piece(*model_, r.best_token) + "' (" + std::to_string(r.best_token) + ")";
    const double ratio = loss_ > 0 ? best / loss_ : std::numeric_limits<double>::infinity();
    if (best < opts_.tau * loss_) {
        r.accepted = true;
        r.chosen_token = r.best_token;
        r.loss_after = best;
        r.reason = "accepted " + piece + ": L_q " + fmt("%.6g", loss_) + " -> " + fmt("%.6g", best) +
                   fmt(" (x%.4f < tau %g)", ratio, opts_.tau);
    } else {
        r.stop = StopReason::NoImprovement;
        r.reason = "stopped: the best candidate " + piece + " gives L_q " + fmt("%.6g", best) +
                   fmt(" = x%.4f of L_q(prefix), not below tau %g", ratio, opts_.tau);
    }
    return r;
}

void GreedySearch::record(const GreedyStepResult& r) {
    GreedyHistoryEntry h;
    h.step = r.step;
    h.token = r.accepted ? r.chosen_token : -1;
    if (h.token >= 0) h.piece = printable_piece(*model_, h.token);
    h.loss_before = r.loss_before;
    h.loss_after = r.loss_after;
    h.best_loss = r.best_loss;
    h.accepted = r.accepted;
    h.overridden = r.overridden;
    h.pruned = r.kind == StepKind::Pruned;
    h.kind = r.kind;
    h.stop = r.stop;
    h.seconds = r.seconds;
    history_.push_back(h);
}

StepKind GreedySearch::default_kind() const {
    if (opts_.pruned) return StepKind::Pruned;
    switch (opts_.step_kind) {
        case StepChoice::Exhaustive: return StepKind::Exhaustive;
        case StepChoice::Pruned: return StepKind::Pruned;
        case StepChoice::Fast: return StepKind::Fast;
        case StepChoice::Auto: break;
    }
    const double ex = double(candidates_.size()) *
                      search_flops_per_candidate(model_->config, (int64_t)prefix_.size(), (int64_t)sample_.size());
    return ex <= kAutoExhaustiveFlops ? StepKind::Exhaustive : StepKind::Fast;
}

GreedyStepResult GreedySearch::step(const ProgressFn& progress) { return step(default_kind(), progress); }

GreedyStepResult GreedySearch::step(StepKind kind, const ProgressFn& progress) {
    if (done()) return last_stop_;
    return commit(score(kind, progress));
}

GreedyStepResult GreedySearch::commit(GreedyStepResult r) {
    if (done()) return last_stop_;
    if (r.prefix != prefix_ || r.step != steps_ + 1 || r.overridden)
        throw Error("greedy search: the scores are for another prefix or step; score again");
    const auto t0 = Clock::now();
    Before b = before();
    if (r.accepted) {
        if (r.chosen_token < 0 || r.chosen_token >= model_->config.vocab_size)
            throw Error("greedy search: the scores choose no valid token");
        std::vector<int32_t> p = prefix_;
        p.push_back(r.chosen_token);
        set_prefix(std::move(p));
        r.loss_after = loss_;
        r.prefix = prefix_;
    } else {
        stop_ = r.stop;
    }
    r.seconds += seconds_since(t0);
    ++steps_;
    record(r);
    undo_.push_back(std::move(b));
    if (!r.accepted) last_stop_ = r;
    return r;
}

bool GreedySearch::undo() {
    if (history_.empty()) return false;
    const GreedyHistoryEntry h = history_.back();
    if (h.token >= 0 && (prefix_.size() <= opts_.start_tokens.size() || prefix_.back() != h.token))
        throw Error("greedy search: the last history entry does not match the prefix; nothing undone");
    if (!undo_.empty()) {
        Before& b = undo_.back();
        if (h.token >= 0) prefix_.pop_back();
        prefix_kv_ = std::move(b.kv);
        loss_ = b.loss;
        stop_ = b.stop;
        last_stop_ = std::move(b.last_stop);
        undo_.pop_back();
        history_.pop_back();
        --steps_;
        return true;
    }
    // A step from restore(): recompute the shorter prefix. Only an override can follow a stop, so the
    // search was stopped before the step exactly when it was an override right after a stop entry.
    if (h.token >= 0) set_prefix(std::vector<int32_t>(prefix_.begin(), prefix_.end() - 1));
    const size_t n = history_.size();
    stop_ = h.overridden && n >= 2 && history_[n - 2].token < 0 ? history_[n - 2].stop : StopReason::None;
    history_.pop_back();
    --steps_;
    set_last_stop("after an undo");
    return true;
}

GreedyStepResult GreedySearch::override_step(int32_t token, const ProgressFn& progress) {
    const auto t0 = Clock::now();
    Before b = before();
    if (token < 0 || token >= model_->config.vocab_size)
        throw Error("greedy search: token id " + std::to_string(token) + " is out of range");
    if ((int)prefix_.size() >= opts_.max_prefix)
        throw Error("greedy search: the prefix already has the maximum length " + std::to_string(opts_.max_prefix));
    GreedyStepResult r;
    r.step = steps_ + 1;
    r.loss_before = loss_;
    r.candidate_loss = at::full({model_->config.vocab_size}, std::numeric_limits<double>::quiet_NaN(), at::kDouble);
    const double l = evaluate({token}, progress)[0];
    r.candidate_loss[token] = l;
    r.best_token = token;
    r.best_loss = l;
    r.chosen_token = token;
    r.accepted = r.overridden = true;
    r.evaluated = 1;
    r.batch_size = 1;
    std::vector<int32_t> p = prefix_;
    p.push_back(token);
    set_prefix(std::move(p));
    r.loss_after = loss_;
    r.prefix = prefix_;
    r.reason = "override: appended '" + printable_piece(*model_, token) + "' (" + std::to_string(token) + "): L_q " +
               fmt("%.6g", r.loss_before) + " -> " + fmt("%.6g", r.loss_after);
    stop_ = StopReason::None;
    r.seconds = seconds_since(t0);
    ++steps_;
    record(r);
    undo_.push_back(std::move(b));
    return r;
}

std::string GreedySearch::settings_json() const {
    json j;
    j["start"] = opts_.start_tokens;
    j["tau"] = opts_.tau;
    j["max_prefix"] = opts_.max_prefix;
    j["bits"] = opts_.loss.bits;
    j["sites"] = sites_string(opts_.loss.sites);
    j["sample_tokens"] = sample_.size();
    j["sample_sha256"] = ids_sha(sample_);
    j["candidates"] = opts_.candidates.empty() ? json("non-special") : json(candidates_);
    j["candidate_count"] = candidates_.size();
    j["pruned"] = opts_.pruned;
    j["prune_window"] = opts_.prune_window;
    j["prune_keep"] = opts_.prune_keep;
    j["step_kind"] = step_choice_name(opts_.pruned ? StepChoice::Pruned : opts_.step_kind);
    j["screen_keep"] = opts_.screen_keep;
    j["screen_head"] = opts_.screen_head;
    return j.dump();
}

std::string GreedySearch::history_json() const {
    json steps = json::array();
    for (const auto& h : history_) {
        json s = {{"step", h.step}, {"lq_before", h.loss_before}, {"lq_after", h.loss_after},
                  {"best_lq", h.best_loss}, {"accepted", h.accepted}, {"overridden", h.overridden},
                  {"pruned", h.pruned}, {"kind", step_kind_name(h.kind)}, {"seconds", h.seconds}};
        if (h.token >= 0) {
            s["token"] = h.token;
            s["piece"] = h.piece;
        }
        if (h.stop != StopReason::None) s["stop"] = stop_reason_name(h.stop);
        steps.push_back(s);
    }
    json j = {{"initial_lq", initial_loss_}, {"lq", loss_}, {"prefix", prefix_}, {"steps", steps},
              {"stop", stop_reason_name(stop_)}};
    return j.dump();
}

Cushion GreedySearch::cushion() const {
    Cushion c = make_cushion(*model_, prefix_);
    c.settings_json = json{{"search", json::parse(settings_json())}}.dump();
    c.history_json = json{{"search", json::parse(history_json())}}.dump();
    return c;
}

std::string GreedySearch::state_json() const {
    json j = {{"format", "cushioncache-search-state"},
              {"version", 1},
              {"model_fingerprint", model_->fingerprint()},
              {"settings", json::parse(settings_json())},
              {"history", json::parse(history_json())},
              {"steps_done", steps_}};
    return j.dump();
}

void GreedySearch::restore(const std::string& state) {
    json j;
    try {
        j = json::parse(state);
    } catch (const std::exception& e) {
        throw Error(std::string("search state: not valid JSON: ") + e.what());
    }
    // Every field through JsonFields: a missing one or one of the wrong type is named ("search state: field
    // 'history.steps[2].lq_before' must be a number, it is \"x\""), never the JSON library's text.
    const JsonFields root(j, "search state");
    if (!j.is_object() || root.string_or("format", "") != "cushioncache-search-state")
        throw Error("search state: not a search state");
    if (root.string_or("model_fingerprint", "") != model_->fingerprint())
        throw Error("search state: made for another model (fingerprint " + root.string_or("model_fingerprint", "?") +
                    ", this model is " + model_->fingerprint() + ")");
    const json mine = json::parse(settings_json());
    const JsonFields settings = root.object("settings");
    const json& theirs = settings.json();
    for (const char* key : {"start", "bits", "sites", "sample_tokens", "sample_sha256", "candidates"})
        if (!theirs.contains(key) || theirs.at(key) != mine.at(key))
            throw Error(std::string("search state: its setting '") + key + "' (" +
                        (theirs.contains(key) ? theirs.at(key).dump() : std::string("missing")) +
                        ") differs from this run's (" + mine.at(key).dump() +
                        "); resume with the same calibration text and settings");
    const JsonFields h = root.object("history");
    std::vector<int32_t> prefix;
    for (int64_t t : h.integers("prefix", 0, model_->config.vocab_size - 1)) prefix.push_back(static_cast<int32_t>(t));
    if (prefix.size() < opts_.start_tokens.size() || !std::equal(opts_.start_tokens.begin(), opts_.start_tokens.end(), prefix.begin()))
        throw Error("search state: its prefix does not begin with this run's start tokens");
    if ((int)prefix.size() > opts_.max_prefix)
        throw Error("search state: its prefix (" + std::to_string(prefix.size()) + " tokens) is longer than --max-prefix");
    std::vector<GreedyHistoryEntry> hist;
    const JsonFields steps = h.array("steps");
    for (size_t i = 0; i < steps.size(); ++i) {
        const JsonFields s = steps.at(i);
        GreedyHistoryEntry e;
        e.step = static_cast<int>(s.integer("step", 0, INT32_MAX));
        e.token = static_cast<int32_t>(s.integer_or("token", -1, -1, INT32_MAX));
        e.piece = s.string_or("piece", "");
        e.loss_before = s.number("lq_before");
        e.loss_after = s.number("lq_after");
        e.best_loss = s.number_or("best_lq", 0.0);
        e.accepted = s.boolean("accepted");
        e.overridden = s.boolean_or("overridden", false);
        e.pruned = s.boolean_or("pruned", false);
        const std::string kind = s.string_or("kind", e.pruned ? "pruned" : "exhaustive");
        e.kind = kind == "fast" ? StepKind::Fast : kind == "pruned" ? StepKind::Pruned : StepKind::Exhaustive;
        e.stop = parse_stop(s.string_or("stop", ""));
        e.seconds = s.number_or("seconds", 0.0);
        hist.push_back(e);
    }
    const double initial = h.number("initial_lq");
    const int steps_done = static_cast<int>(root.integer_or("steps_done", (int64_t)hist.size(), 0, INT32_MAX));
    StopReason stop = parse_stop(h.string_or("stop", ""));
    const double their_tau = settings.number_or("tau", -1.0);
    // Every field read before anything changes: a bad one leaves the search as it was.
    set_prefix(prefix);
    initial_loss_ = initial;
    history_ = std::move(hist);
    steps_ = steps_done;
    // A saved stop holds only if it would happen again: the same tau, or a prefix still at the maximum length.
    stop_ = stop;
    if (stop_ == StopReason::MaxLength && (int)prefix_.size() < opts_.max_prefix) stop_ = StopReason::None;
    if (stop_ == StopReason::NoImprovement && their_tau != opts_.tau) stop_ = StopReason::None;
    undo_.clear();
    set_last_stop("restored from a checkpoint");
}

void GreedySearch::set_last_stop(const std::string& note) {
    last_stop_ = GreedyStepResult();
    if (stop_ != StopReason::None) {
        last_stop_.step = steps_;
        last_stop_.stop = stop_;
        last_stop_.loss_before = last_stop_.loss_after = loss_;
        last_stop_.prefix = prefix_;
        last_stop_.reason = std::string("stopped (") + stop_reason_name(stop_) + ", " + note + ")";
        if (!history_.empty()) last_stop_.best_loss = history_.back().best_loss;
    }
}

}  // namespace cushion
