// The fast greedy step's screen (issue 14): an estimate of L_q(prefix + t) for every candidate t at about the cost
// of one token's forward pass per candidate, so the exact L_q (a forward pass of the whole n-token sample per
// candidate) is needed only for the few best.
//
// What a candidate t changes. The sample runs after the prefix's KV; with t appended, every sample token's
// attention, in every block, sees one more key/value pair: t's (k_t, v_t), which depend on the prefix and t only
// (one (B, 1) forward of the candidates after the prefix KV gives them for a whole batch). For a sample token i of
// head h with query q_i, attention output a_i and log-normaliser lse_i (over the prefix and the visible sample),
// the new slot takes the weight
//     w_i(t) = sigmoid(scale * q_i . k_t - lse_i)
// and the output becomes a_i + w_i(t) (v_t - a_i). With the queries of the run without t (frozen), that is the
// exact attention of the first block; the screen keeps it for every block and carries the effect on L_q to first
// order through the rest of the network:
//     est(t) = L_q(prefix) + sum over blocks, heads, sample tokens of  w_i(t) * g_i . (v_t - a_i)
// where g_i = dL~/da_i (one backward pass of the sample per step, shared by all candidates), and L~ is L_q's range
// term: L_q of a per-tensor min-max quantizer grows with each tensor's range (max - min), and the range is what an
// outlier moves. L~ = sum over the L_q sites of c_s * (max_s - min_s), with c_s = dL_q/d(range) of that site
// measured on the sample by central differences (the rounding error at fixed values is noise a candidate does
// not steer). The sample is run where it sits after one more prefix token (ForwardArgs::position_gap = 1), so the
// relative positions of queries and the candidate's key are the real ones.
//
// Optionally (head > 0; default 0) the first `head` sample tokens, which see few keys and so can give a candidate a
// large share of their attention, run exactly after each candidate in the same forward pass ((b, 1 + head) tokens)
// and give their exact range per site; the first-order part covers the tokens after them:
//     est(t) = L_q(prefix) + sum_s c_s [max(head_max_s(t), rest_max_s) - min(head_min_s(t), rest_min_s) - range_s]
//              + sum over blocks, heads and sample tokens i >= head of w_i(t) g_i . (v_t - a_i)
// with L~ built from the rest's max / min where the rest sets the site's range.
//
// Measured quality (tests/perf/RESULTS.md, "Fast step"): the screen does not find the large single-token drops of
// stories260K after <bos> alone (the exhaustive winners, x0.84-0.88, rank 100-400th of 509, with or without an
// exact head), but ranks the exhaustive winner first or near it after a 2-token prefix. Hence Auto keeps exhaustive
// steps wherever they are affordable.
//
// The estimate is a ranking device, not L_q: GreedySearch's fast step re-scores the best `keep` candidates exactly
// on the whole sample and chooses among those (tests/perf/RESULTS.md has how often that is the exhaustive choice).
// Cost per candidate: (1 + head) tokens' forward after the prefix plus 4 n (n_heads x head_dim) flops per block.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "base/progress.h"
#include "model/kv_cache.h"
#include "model/model.h"
#include "quant/quant_loss.h"

namespace cushion {

class CandidateScreen {
public:
    // Prepares the sample's side once: one forward and one backward pass of the n-token sample after prefix_kv
    // (batch 1, the current prefix), on the model's device, under the loss options' bits and sites.
    // head: the first `head` sample tokens are run exactly after each candidate (see above); 0 = first order only.
    CandidateScreen(const Model& m, const KVCache& prefix_kv, const std::vector<int32_t>& sample,
                    const QuantLossOptions& loss, int64_t head = kDefaultHead);
    static constexpr int64_t kDefaultHead = 0;

    // est(t) - L_q(prefix) for each token (order kept), `batch` candidates per forward pass. Reports progress from
    // f0 to f1 before every batch and within it before each block's forward and products (throws Cancelled when
    // asked to stop, within one block's work; nothing here changes state).
    // A batch that runs out of memory is halved and retried (base/out_of_memory.h; on_halve(old, new) is told, empty:
    // a line on stderr); with a batch of 1 it throws Error.
    // attention_mass (optional): per token, sum over blocks, heads and the sample tokens after the head of the weight
    // w_i(t) the candidate slot takes: how strongly t changes the sample, where the first order is least reliable.
    std::vector<double> estimate(const std::vector<int32_t>& tokens, int64_t batch, const ProgressFn& progress = {},
                                 double f0 = 0, double f1 = 1, const std::string& label = "screen",
                                 std::vector<double>* attention_mass = nullptr,
                                 const std::function<void(int64_t, int64_t)>& on_halve = {}) const;

    // Only the first `blocks` blocks' terms (and the candidates' forward only that deep; 0 = every block, the
    // default): a cheaper, coarser estimate, e.g. to study how much of the ranking the early blocks decide.
    void set_depth(int64_t blocks);
    int64_t depth() const;  // blocks used

    // The weights w_i(t) of the candidate slot, (depth(), n_heads, n) float32 CPU, for one token: what the
    // estimate uses (for tests: in block 0 they are the attention a plain forward of prefix + t + sample gives t).
    at::Tensor slot_weights(int32_t token) const;
    // The range surrogate L~ on the sample (its value; its gradient is the g above).
    double surrogate() const { return surrogate_; }
    int64_t sample_tokens() const { return n_; }

    // Floating-point operations of screening one candidate after a P-token prefix with an n-token sample: its
    // one-token forward plus the estimate's products (2 per multiply-add).
    static double flops_per_candidate(const ModelConfig& c, int64_t P, int64_t n, int64_t head = kDefaultHead);

private:
    struct Layer {
        // The sample's side of one block (tokens after the head), with the queries frozen after RoPE at the gap positions,
        // lse their log-sum-exp over the prefix and the visible sample, a the attention output and g = dL~/da:
        at::Tensor qa;   // (H, n, D + 1) [scale q, -lse]: times [k_t; 1], the slot's logit less lse
        at::Tensor gaa;  // (H, n, D + 1) [g, -g . a]: times [v_t; 1], g . (v_t - a)
    };
    static constexpr int64_t kProductColumns = 128;  // candidates per slice of the estimate's products
    struct Range {
        double c = 0;                  // dL_q/d(range) of the site on the sample
        double range0 = 0;             // its range without the candidate
        double rest_max = 0, rest_min = 0;  // over the sample tokens after the head
    };
    // One forward pass of [t, head tokens] per row: the candidate slot's K/V per block, (H, D + 1, b) with a row of ones
    // under them (see Layer), and the head's per-site max / min, (b) each in the order of ranges_.
    // on_block (optional) is called with each block's index as the forward makes its keys and values (it may throw,
    // e.g. Cancelled: the pass is then abandoned, nothing changed).
    void candidate_pass(const std::vector<int32_t>& tokens, std::vector<at::Tensor>* k, std::vector<at::Tensor>* v,
                        std::vector<at::Tensor>* head_max, std::vector<at::Tensor>* head_min,
                        const std::function<void(int)>& on_block = {}) const;

    const Model& model_;
    const KVCache& prefix_kv_;
    std::vector<int32_t> head_tokens_;
    int64_t n_ = 0;
    std::vector<Range> ranges_;
    QuantLossOptions loss_;
    std::vector<Layer> layers_;
    double surrogate_ = 0;
    int64_t depth_ = 0;
};

}  // namespace cushion
