// Step 2 of CushionCache (resources/docs/method.md): prefix tuning, as a steppable engine.
//
// The cushion's per-layer K and V (batch 1, keys after RoPE) become trainable float32 tensors; the model
// stays frozen. Each step takes one batch of calibration documents (each without its <bos>: the cushion
// provides it; truncated to the context left after the prefix; right-padded) run after the prefix KV, and
//     loss = CE + lambda * L_q
//   CE  : mean next-token cross-entropy over the batch's predicted text positions (token i+1 from text
//         position i). The first text token is predicted from the prefix's last-position logits, which
//         do not depend on the trainable KV of that position; it is left out of CE.
//   L_q : QuantLossHook (per-tensor asymmetric min-max over each document's real tokens, scale / zero /
//         rounding detached), summed over blocks and sites per document, averaged over the batch's
//         documents: the search objective per sample.
// Adam (hand-written, PyTorch's update with bias correction) updates K and V. An epoch is one pass over
// the documents in an order shuffled per epoch from a seed (a fixed Fisher-Yates on a 64-bit LCG stream,
// the same on every platform); the last batch of an epoch may be smaller.
//
// last_logits of the tuned cushion: the logits of the last prefix token run after the tuned KV of the
// earlier prefix positions (for a one-token prefix, the token alone) — what the model predicts there
// given the tuned cache; perplexity takes the first text token's prediction from them.
//
// Cancellation: step() reports progress before and after the batch's forward/backward pass; when the
// callback returns false it throws Cancelled and nothing has changed (the update is applied last).
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cushion/cushion.h"
#include "model/model.h"
#include "base/progress.h"
#include "quant/quant_loss.h"

namespace cushion {

class Communicator;

struct PrefixTuneOptions {
    double lambda = 0.01;        // weight of L_q
    double lr = 1e-3;            // Adam learning rate
    double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
    int epochs = 2;
    int64_t batch_size = 4;      // documents per step
    QuantLossOptions loss;       // bits (8) and sites of L_q
    bool shuffle = true;
    uint64_t seed = 0;
    int64_t ce_chunk_bytes = int64_t(64) << 20;  // logits memory per CE slice (see prefix_tune_loss)
    // Data-parallel tuning (cushion/distributed.h): each rank takes a contiguous share of every batch's
    // documents, the gradients are summed across ranks (each share normalised by the whole batch's counts),
    // and every rank applies the same update. Null (or one process): everything here.
    std::shared_ptr<Communicator> comm;
};

// One batch's losses (and, from gradients(), the gradients).
struct TuneLoss {
    double ce = 0, lq = 0, total = 0;
    int64_t tokens = 0;  // predicted positions in CE
    int64_t docs = 0;
    std::vector<at::Tensor> grad_k, grad_v;  // per layer, like the KV; empty unless asked for
    double grad_norm = 0;                    // L2 norm over all K and V gradients
};

struct TuneStepResult {
    int64_t step = 0;             // 1-based global step
    int epoch = 0;                // 0-based epoch this batch belongs to
    int64_t batch = 0;            // 0-based batch index within the epoch
    int64_t batches_per_epoch = 0;
    double ce = 0, lq = 0, total = 0, grad_norm = 0;
    int64_t tokens = 0, docs = 0;
    bool epoch_end = false;       // this was the epoch's last batch
    bool done = false;            // this was the last batch of the last epoch
    double seconds = 0;
};

class PrefixTuner {
public:
    // init: the cushion to tune (e.g. GreedySearch::cushion()); it must fit the model. docs: as from
    // tokenize_documents (each starting with <bos>). Throws Error on bad settings or no usable document.
    PrefixTuner(std::shared_ptr<const Model> model, const Cushion& init, const std::vector<std::vector<int32_t>>& docs,
                PrefixTuneOptions opts = {});

    // One Adam step on the next batch. Throws Error when done().
    TuneStepResult step(const ProgressFn& progress = {});
    // Loss (and gradients with respect to the KV when with_grad) on the given documents (indices into the
    // tuner's documents), at the current KV; no state changes.
    TuneLoss loss_on(const std::vector<size_t>& docs, bool with_grad) const;

    bool done() const { return epoch_ >= opts_.epochs; }
    int epoch() const { return epoch_; }
    int64_t batch_in_epoch() const { return batch_; }
    int64_t batches_per_epoch() const;
    int64_t total_steps() const { return batches_per_epoch() * opts_.epochs; }
    int64_t steps_done() const { return t_; }
    const std::vector<TuneStepResult>& history() const { return history_; }
    const std::vector<at::Tensor>& k() const { return k_; }
    const std::vector<at::Tensor>& v() const { return v_; }
    size_t documents() const { return docs_.size(); }
    const PrefixTuneOptions& options() const { return opts_; }

    // The tuned cushion: the initial one's prefix ids and settings, the tuned KV, recomputed last_logits,
    // "tuning" added to settings_json and history_json.
    Cushion cushion() const;

    // Checkpoint: tensors (KV and Adam moments) and a JSON of the rest; restore() checks the model, the
    // prefix and the settings.
    void save_state(std::vector<std::pair<std::string, at::Tensor>>* tensors, std::string* state_json) const;
    void restore(const std::map<std::string, at::Tensor>& tensors, const std::string& state_json);
    // The same state as one safetensors file (written atomically): the tuned K/V, Adam's moments, the step
    // count and the epoch/batch position, so that a fresh tuner made with the same model, cushion,
    // documents and settings resumes exactly where this one stopped.
    //   metadata "format": "cushioncache-tuner-state", "version": "1", "tune": the state JSON, tool_version
    //   tensors  "tune.{k,v,mk,vk,mv,vv}.<layer>" float32
    // load_state() throws Error on a missing or foreign file, or a state made for another model, prefix or
    // settings (nothing changes then).
    void save_state(const std::string& path) const;
    void load_state(const std::string& path);
    // The file save_state(path) writes, from a state taken before with save_state(&tensors, &state_json) (the studio
    // takes it on the tuning thread and writes it with the session's other files).
    static void write_state_file(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                                 const std::string& state_json);

private:
    std::vector<size_t> epoch_order(int epoch) const;
    TuneLoss shared_loss(const std::vector<size_t>& docs) const;  // loss_on(docs, true) shared out over comm
    std::string settings_json() const;

    std::shared_ptr<const Model> model_;
    Cushion init_;
    std::vector<std::vector<int32_t>> docs_;  // without <bos>, truncated to fit after the prefix
    PrefixTuneOptions opts_;
    std::vector<at::Tensor> k_, v_, mk_, vk_, mv_, vv_;  // parameters, Adam first/second moments
    int epoch_ = 0;
    int64_t batch_ = 0;
    int64_t t_ = 0;
    std::vector<size_t> order_;
    std::vector<TuneStepResult> history_;
};

// The tuning loss of documents (token ids without <bos>, each fitting after the prefix) run after `kv`
// (batch 1): CE, L_q and CE + lambda * L_q as described above. With with_grad, the gradients with respect
// to kv's tensors (computed on detached float32 copies; float64 when kv is float64) are returned as well.
// CE is taken a slice of positions at a time so that about ce_chunk_bytes of logits exist at once (a 32k
// vocabulary makes (B, T, V) logits large); the result does not depend on it beyond summation order.
// ce_tokens / lq_docs > 0: CE is divided by ce_tokens instead of these documents' predicted positions and L_q
// by lq_docs instead of their number (a share of a larger batch: the shares' losses and gradients add up to
// the batch's).
TuneLoss prefix_tune_loss(const Model& m, const KVCache& kv, const std::vector<std::vector<int32_t>>& seqs,
                          double lambda, const QuantLossOptions& loss, bool with_grad,
                          int64_t ce_chunk_bytes = int64_t(64) << 20, int64_t ce_tokens = 0, int64_t lq_docs = 0);

// The logits at the last prefix position given a (possibly tuned) KV: the last token run after the KV of
// the earlier positions. (V) float32 on the CPU.
at::Tensor prefix_last_logits(const Model& m, const std::vector<int32_t>& prefix_ids, const KVCache& kv);

}  // namespace cushion
