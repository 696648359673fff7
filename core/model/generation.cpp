#include "model/generation.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "base/error.h"

namespace cushion {

namespace {
// xorshift64*: the same random stream on every platform and device.
double next_uniform(uint64_t* s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return ((*s * 0x2545F4914F6CDD1DULL) >> 11) * (1.0 / 9007199254740992.0);
}
}  // namespace

int32_t sample_token(const at::Tensor& logits_in, double temperature, double top_p, uint64_t* rng) {
    at::Tensor logits = logits_in.to(at::kCPU, at::kDouble).contiguous();
    const double* l = logits.data_ptr<double>();
    const int64_t V = logits.numel();
    if (temperature <= 0) return static_cast<int32_t>(std::max_element(l, l + V) - l);  // first max wins
    std::vector<double> p(V);
    const double mx = *std::max_element(l, l + V);
    double sum = 0;
    for (int64_t i = 0; i < V; ++i) sum += p[i] = std::exp((l[i] - mx) / temperature);
    for (auto& x : p) x /= sum;
    std::vector<int32_t> idx(V);
    std::iota(idx.begin(), idx.end(), 0);
    int64_t n = V;
    if (top_p < 1.0) {
        std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return p[a] > p[b]; });
        double cum = 0;
        for (n = 0; n < V && cum < top_p; ++n) cum += p[idx[n]];
    }
    double mass = 0;
    for (int64_t i = 0; i < n; ++i) mass += p[idx[i]];
    double r = next_uniform(rng) * mass, c = 0;
    for (int64_t i = 0; i < n; ++i) {
        c += p[idx[i]];
        if (r < c) return idx[i];
    }
    return idx[n - 1];
}

std::vector<int32_t> generate(const Model& m, const std::vector<int32_t>& prompt_in, const GenerateOptions& opts) {
    at::NoGradGuard no_grad;
    std::vector<int32_t> prompt = prompt_in;
    const bool with_prefix = opts.prefix && !opts.prefix->empty();
    if (with_prefix && !prompt.empty() && prompt[0] == m.tokenizer->bos_id()) prompt.erase(prompt.begin());
    if (prompt.empty() && !(with_prefix && opts.prefix_last_logits.defined())) throw Error("generate: empty prompt");
    uint64_t rng = opts.seed ? opts.seed : 0x9E3779B97F4A7C15ULL;
    KVCache cache;
    if (with_prefix) cache = *opts.prefix;
    std::vector<int32_t> out;
    std::vector<int32_t> feed = prompt;
    const int64_t limit = m.config.max_seq_len;
    if (feed.empty()) {  // only <bos> after a cushion: the first token comes from the cushion's last logits
        int32_t first = sample_token(opts.prefix_last_logits, opts.temperature, opts.top_p, &rng);
        if (opts.stop_at_eos && (first == m.tokenizer->eos_id() || first == m.tokenizer->bos_id())) return out;
        out.push_back(first);
        if (opts.on_token && !opts.on_token(first)) return out;
        feed = {first};
    }
    for (int64_t step = (int64_t)out.size(); step < opts.max_new_tokens; ++step) {
        if (cache.length() + (int64_t)feed.size() > limit) break;
        at::Tensor tokens = at::tensor(std::vector<int64_t>(feed.begin(), feed.end()), at::kLong).unsqueeze(0);
        KVCache present;
        ForwardArgs fa;
        fa.prefix = cache.empty() ? nullptr : &cache;
        fa.present = &present;
        fa.last_logits_only = true;
        fa.hook = opts.hook;
        fa.kernels = opts.kernels;
        at::Tensor logits = m.forward(tokens, fa)[0][0];
        cache = std::move(present);
        int32_t next = sample_token(logits, opts.temperature, opts.top_p, &rng);
        if (opts.stop_at_eos && (next == m.tokenizer->eos_id() || next == m.tokenizer->bos_id())) break;
        out.push_back(next);
        if (opts.on_token && !opts.on_token(next)) break;
        feed = {next};
    }
    return out;
}

}  // namespace cushion
