// Step 1 of CushionCache (resources/docs/method.md): the greedy prefix search, as a steppable engine.
//
// The search holds a prefix (the start tokens, then one accepted token per step) and one calibration
// sample of n tokens. Each step scores every candidate token t by the quantization loss
//     L_q(prefix + t) = sum over blocks and chosen linear-input sites of || A - Q(A) ||^2
// of the sample run after the prefix KV (QuantLossHook: per-tensor asymmetric min-max over the sample's
// tokens, the prefix never in A), in the full-precision model. The best t* (lowest L_q, ties -> lowest
// id) is accepted when L_q(prefix + t*) < tau * L_q(prefix); otherwise the search stops. It also stops
// when the prefix reaches max_prefix tokens.
//
// Cost: one forward pass of the n-token sample per candidate. The prefix's KV is computed once per step
// and shared: each candidate batch extends it by one token per row (a (b, 1) forward with the shared
// prefix, batch-1 broadcast), then runs the sample once per row after that (b, P+1) cache.
// Candidates go in batches sized from a memory budget (search_bytes_per_candidate). A batch that runs out of
// memory anyway (CPU or CUDA) is halved and the same candidates retried; the halved size stays for the later
// batches and steps; with one candidate per batch it is an Error (base/out_of_memory.h).
//
// A pruned step scores every candidate on the first `prune_window` tokens of the sample only, keeps the
// `prune_keep` best (ties -> lowest id) and re-scores those on the whole sample; the best of them is t*.
//
// Determinism: candidates are scored in ascending id order with fixed batches; the same model, sample,
// settings and device give the same losses and choices. Across devices (or batch sizes) losses agree to
// float rounding, so the choice is the same up to near-ties.
//
// Cancellation: every step takes a ProgressFn; when it returns false the step throws Cancelled and the
// search is exactly as before the step.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "model/kv_cache.h"
#include "model/model.h"
#include "base/progress.h"
#include "quant/quant_loss.h"

namespace cushion {

struct Cushion;
class Communicator;

// The default longest prefix, start tokens included (the paper leaves m unspecified: "small, a few tokens"); the
// CLI's --max-prefix and the studio's Max prefix start from it.
constexpr int kDefaultMaxPrefix = 4;

// The fast step's candidates per screening forward pass when GreedySearchOptions::screen_batch is 0: on the CPU 15%
// less time than 256 for SmolLM2 (tests/perf/RESULTS.md).
constexpr int64_t kDefaultScreenBatch = 1024;

// How step() chooses its kind (GreedySearchOptions::step_kind).
enum class StepChoice { Auto, Exhaustive, Pruned, Fast };
const char* step_choice_name(StepChoice c);                    // "auto", "exhaustive", "pruned", "fast"
bool parse_step_choice(const std::string& s, StepChoice* out);  // the names above
// Auto runs exhaustive steps up to this many floating-point operations a step (about 10 s on the 2-core test
// machine), fast steps above.
constexpr double kAutoExhaustiveFlops = 2e12;

struct GreedySearchOptions {
    std::vector<int32_t> start_tokens;  // the initial prefix; empty = {<bos>}
    double tau = 0.5;                   // accept t* when L_q(prefix + t*) < tau * L_q(prefix); 0 < tau <= 1
    int max_prefix = kDefaultMaxPrefix; // the prefix never grows beyond this many tokens (start tokens included)
    QuantLossOptions loss;              // bits (8) and sites (the four linear inputs) of L_q
    std::vector<int32_t> candidates;    // empty = every token the tokenizer does not call special
    int64_t memory_budget = 0;          // bytes of transient memory per candidate batch; 0 = default_memory_budget
    int64_t max_batch = 0;              // > 0: at most this many candidates per batch (else from the budget)
    bool pruned = false;                // step() runs pruned steps (the same as step_kind = Pruned)
    int64_t prune_window = 64;          // sample tokens of the pruning pass
    int prune_keep = 16;                // candidates re-scored on the whole sample
    // The kind of step() (and of `cushion calibrate` and the studio's Step): Auto = exhaustive when an exhaustive
    // step costs at most kAutoExhaustiveFlops (stories260K: 0.2 TFLOP), else the fast step (SmolLM2-135M: ~5 PFLOP).
    StepChoice step_kind = StepChoice::Auto;
    int screen_keep = 16;               // fast steps: candidates re-scored exactly on the whole sample
    int64_t screen_head = 0;            // fast steps: first sample tokens run exactly after every candidate (costs 1 + head
                                        // token forwards per candidate; measured no better on stories260K, RESULTS.md)
    int64_t screen_batch = 0;           // fast steps: candidates per screening forward pass (0 = kDefaultScreenBatch)
    // CPU intra-op threads while scoring. 0 = automatic: 1 for models narrower than 1024, whose per-candidate
    // operations are too small to split (stories260K, one exhaustive step on the 2-core test machine: 14.3 s
    // on 1 thread, 19.6 s on 2; RESULTS.md), otherwise the process's setting. < 0: the process's setting.
    int threads = 0;
    // Scoring shared out over processes (cushion/distributed.h): each rank scores a contiguous range of every
    // pass's candidate batches (the fast step's screen too: screen_shard) and the losses are gathered on every
    // rank, which then decide alike. Every rank must run the same search with the same settings. Null (or one
    // process): everything here.
    std::shared_ptr<Communicator> comm;
    // Lines worth a log entry while scoring: a candidate batch that ran out of memory was halved (the same
    // candidates are retried; base/out_of_memory.h). Empty: the line goes to stderr.
    std::function<void(const std::string&)> log;
};
// The fast step's screen across ranks: the [begin, end) candidates rank `rank` of `world_size` screens, a contiguous
// range of whole `batch`-candidate batches (shard_range over the batches), so that every batch holds the same
// candidates as in one process.
std::pair<size_t, size_t> screen_shard(size_t candidates, int64_t batch, int rank, int world_size);
// The intra-op thread count a search with these options uses on the model's device (0 = unchanged).
int search_threads(const GreedySearchOptions& o, const ModelConfig& c, c10::Device dev);

// The calibration sample of the search: the documents' tokens in order, each without its leading <bos>
// (the cushion provides it), concatenated, and the first n of them. Throws Error if there are fewer than
// n tokens in all. docs: as from tokenize_documents (untruncated is best: tokenize with a large max_len).
std::vector<int32_t> make_search_sample(const std::vector<std::vector<int32_t>>& docs, int32_t bos, int64_t n);
// min(512, max_seq_len - max_prefix): the sample after the longest prefix still fits the context.
int64_t default_sample_tokens(const ModelConfig& c, int max_prefix);

// Transient bytes of one candidate row of a batch: the sample of n tokens after a prefix of P tokens
// (attention scores dominate: 3 x heads x n x (P + n) floats). Used to size batches from the budget.
int64_t search_bytes_per_candidate(const ModelConfig& c, int64_t P, int64_t n, at::ScalarType dtype);
// The batch memory used when GreedySearchOptions::memory_budget is 0, from the device's free memory now
// (query_device_memory): on the CPU 32 MiB (small batches stay in cache: on the test machine one
// 509-token candidate per batch was 1.4x faster than 9) or a quarter of the available memory if less; on
// a GPU half of its free memory (2 GiB when that cannot be read). A batch size is at least 1; when one
// candidate needs more than the device has free, the step throws Error instead of running out of memory.
int64_t default_memory_budget(c10::Device dev);
// Floating-point operations of scoring one candidate: the one-token extension of a P-token prefix, then
// the n-token sample after P + 1 cached tokens (2 per multiply-add in every block linear layer and in the
// attention products over the keys each query can see (causal); no LM head).
double search_flops_per_candidate(const ModelConfig& c, int64_t P, int64_t n);

// Exhaustive: every candidate's L_q on the whole sample. Pruned: every candidate on the first prune_window sample
// tokens, the best prune_keep re-scored on the whole sample. Fast: every candidate through the screen of
// cushion/candidate_screen.h (about one token's forward pass each), the best screen_keep re-scored exactly on the
// whole sample; t* is the best of those.
enum class StepKind { Exhaustive, Pruned, Fast };
const char* step_kind_name(StepKind k);  // "exhaustive", "pruned", "fast"

enum class StopReason {
    None,           // the step accepted a token; the search goes on
    NoImprovement,  // L_q(prefix + t*) >= tau * L_q(prefix)
    MaxLength,      // the prefix has max_prefix tokens
    NoCandidates,   // the candidate set is empty
};
const char* stop_reason_name(StopReason r);  // "", "no-improvement", "max-length", "no-candidates"

// What one step did, for display.
struct GreedyStepResult {
    int step = 0;                  // 1-based index of this step in the search (including overrides)
    StepKind kind = StepKind::Exhaustive;
    at::Tensor candidate_loss;     // (V) float64 CPU: L_q(prefix + t) on the whole sample; NaN where not scored
    at::Tensor window_loss;        // pruned steps: (V) float64 L_q on the pruning window; fast steps: (V) the
                                   // screen's estimate of L_q(prefix + t) (NaN where not scored)
    std::vector<int32_t> shortlist;  // pruned and fast steps: the candidates re-scored on the whole sample, best first
    int32_t best_token = -1;       // t* (lowest L_q; ties -> lowest id); -1 if nothing was scored
    double best_loss = 0;          // L_q(prefix + t*)
    int32_t chosen_token = -1;     // the token appended: t*, or the caller's with override_step; -1 if none
    double loss_before = 0;        // L_q(prefix)
    double loss_after = 0;         // L_q of the prefix after the step (== loss_before when nothing was added)
    bool accepted = false;         // a token was appended
    bool overridden = false;       // the caller chose the token (override_step)
    StopReason stop = StopReason::None;
    std::string reason;            // human-readable: why accepted / stopped
    int64_t evaluated = 0;         // candidate forward passes run (pruning pass + re-scoring)
    int64_t batch_size = 0;        // candidates per batch
    double seconds = 0;            // wall time of the step
    std::vector<int32_t> prefix;   // the prefix after the step
};

// One row of the history (the step result without the big vectors).
struct GreedyHistoryEntry {
    int step = 0;
    int32_t token = -1;  // appended token, -1 for a stop
    std::string piece;
    double loss_before = 0, loss_after = 0, best_loss = 0;
    bool accepted = false, overridden = false, pruned = false;
    StepKind kind = StepKind::Exhaustive;
    StopReason stop = StopReason::None;
    double seconds = 0;
};

class GreedySearch {
public:
    // sample: the calibration tokens (no <bos>), e.g. from make_search_sample. Computes the start prefix's
    // KV and L_q (one forward pass). Throws Error on bad settings, a start prefix plus sample that does not
    // fit the context with room for max_prefix, or token ids out of range.
    GreedySearch(std::shared_ptr<const Model> model, std::vector<int32_t> sample, GreedySearchOptions opts = {});

    // The kind step() runs: opts.pruned / step_kind, Auto resolved by the exhaustive step's cost.
    StepKind default_kind() const;
    // One greedy step (default_kind()): scores the candidates, accepts t* or stops. After a
    // stop, further steps return the same stop without work (until override_step appends a token).
    GreedyStepResult step(const ProgressFn& progress = {});
    GreedyStepResult step(StepKind kind, const ProgressFn& progress = {});
    // Everything step() computes, with the decision it would take, without changing the search.
    GreedyStepResult score(StepKind kind, const ProgressFn& progress = {}) const;
    // Commits a score() result made for the current state (same prefix and step number): does what step()
    // does with it — appends its chosen token (one forward pass for the new prefix's KV and L_q) or stops.
    // step(kind) is commit(score(kind)). After a stop it returns that stop, like step(). Throws Error if
    // the result is for another prefix or step.
    GreedyStepResult commit(GreedyStepResult scored);
    // Interactive calibration: appends `token` whatever tau says (one forward pass for its L_q), and
    // resumes a stopped search. Throws Error if the prefix is already max_prefix long or the id is invalid.
    GreedyStepResult override_step(int32_t token, const ProgressFn& progress = {});
    // L_q(prefix + t) on the whole sample for the given tokens (any order), without changing the search.
    std::vector<double> evaluate(const std::vector<int32_t>& tokens, const ProgressFn& progress = {}) const;
    // Undoes the last step (the last history entry, from step(), commit() or override_step()): removes its
    // token, or its stop, and brings back the state before it exactly: prefix, prefix KV, L_q, stop state
    // and step count. Returns false when the history is empty. Steps that came from restore() are undone
    // by recomputing the shorter prefix's KV and L_q (the same computation as when it was made).
    bool undo();

    bool done() const { return stop_ != StopReason::None; }
    StopReason stop_reason() const { return stop_; }
    const std::vector<int32_t>& prefix() const { return prefix_; }
    const KVCache& prefix_kv() const { return prefix_kv_; }  // the prefix's keys and values (batch 1)
    double loss() const { return loss_; }                  // L_q(prefix)
    double initial_loss() const { return initial_loss_; }  // L_q(start prefix)
    const std::vector<GreedyHistoryEntry>& history() const { return history_; }
    const std::vector<int32_t>& candidates() const { return candidates_; }
    const std::vector<int32_t>& sample() const { return sample_; }
    const GreedySearchOptions& options() const { return opts_; }
    const Model& model() const { return *model_; }
    int64_t batch_size(int64_t sample_tokens) const;  // candidates per batch for a pass over that many tokens

    // The cushion of the current prefix (make_cushion) with settings_json() and history_json().
    Cushion cushion() const;
    // {"start": [...], "tau", "max_prefix", "bits", "sites", "sample_tokens", "sample_sha256", "candidates",
    //  "pruned", "prune_window", "prune_keep"}.
    std::string settings_json() const;
    // {"initial_lq", "prefix": [...], "steps": [...], "stop"}.
    std::string history_json() const;

    // Checkpoint: the search state (prefix and history) as JSON, and back. restore() checks that the state
    // was made for the same model (fingerprint) and settings and sample, then recomputes the prefix's KV.
    std::string state_json() const;
    void restore(const std::string& state_json);

private:
    struct Scores;
    Scores score_tokens(const std::vector<int32_t>& tokens, int64_t n, const ProgressFn& progress, double f0,
                        double f1, const std::string& label) const;
    void set_prefix(std::vector<int32_t> prefix);
    void record(const GreedyStepResult& r);
    void set_last_stop(const std::string& note);  // last_stop_ for stop_ without a step result

    // The state before each of the last undo_.size() history entries (oldest first), for undo().
    struct Before {
        KVCache kv;
        double loss = 0;
        StopReason stop = StopReason::None;
        GreedyStepResult last_stop;
    };
    Before before() const { return {prefix_kv_, loss_, stop_, last_stop_}; }

    std::shared_ptr<const Model> model_;
    std::vector<int32_t> sample_;
    GreedySearchOptions opts_;
    std::vector<int32_t> candidates_;
    std::vector<int32_t> prefix_;
    KVCache prefix_kv_;  // batch 1
    double loss_ = 0, initial_loss_ = 0;
    StopReason stop_ = StopReason::None;
    GreedyStepResult last_stop_;
    std::vector<GreedyHistoryEntry> history_;
    int steps_ = 0;
    std::vector<Before> undo_;
    // After a candidate batch ran out of memory: the halved batch size that worked, the most batch_size() gives.
    mutable int64_t oom_batch_cap_ = 0;
};

}  // namespace cushion
