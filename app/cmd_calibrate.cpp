// `cushion calibrate`: CushionCache itself — greedy prefix search, then prefix tuning, written as a
// cushion file. Ctrl-C stops cleanly; with --checkpoint the last completed step is kept for --resume.
#include <ATen/ATen.h>

#include <cstdio>
#include <filesystem>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cushion/calib_checkpoint.h"
#include "cli_common.h"
#include "cli_distributed.h"
#include "cli_progress.h"
#include "cushion/cushion.h"
#include "cushion/greedy_search.h"
#include "cushion/token_lists.h"
#include "model/perplexity.h"
#include "cushion/prefix_tuner.h"
#include "quant/quant_config.h"
#include "base/sha256.h"

namespace cushion::cli {

using json = nlohmann::json;

static_assert(kDefaultMaxPrefix == 4, "kCalibrateHelp states the default --max-prefix");
const char* kCalibrateHelp =
    "usage: cushion calibrate [MODEL] --calib FILE --out CUSHION [options]\n"
    "CushionCache: finds a prefix (\"cushion\") that minimises the activation quantization loss L_q of the\n"
    "calibration text by greedy search over the vocabulary, tunes its per-layer key/value cache, and writes\n"
    "it as a cushion file (for eval, ppl, generate, probe --cushion).\n"
    "Search: each step scores every candidate token t by L_q(prefix + t) on a sample of the calibration text\n"
    "(the documents' tokens without <bos>, concatenated, first N) and accepts the best when its L_q is below\n"
    "tau x L_q(prefix); it stops otherwise or at --max-prefix tokens. Tuning: Adam on the prefix KV with\n"
    "loss = cross-entropy + lambda x L_q over the calibration documents, model frozen.\n"
    "  --calib FILE           calibration text, one document per line (required)\n"
    "  --out FILE             the cushion file to write (atomically, at the end)\n"
    "  --out-greedy FILE      also write the cushion of the search alone (before tuning)\n"
    "  --start LIST           start tokens, comma-separated: bos, newline, a token id or a vocabulary piece\n"
    "                         (default bos; <bos> is put first when the model has one)\n"
    "  --tau T                acceptance ratio (default 0.5)\n"
    "  --max-prefix N         longest prefix in tokens, start tokens included (default 4)\n"
    "  --sample-tokens N      calibration sample length (default min(512, context - max-prefix))\n"
    "  --abits N              bits of L_q's quantizer: 4, 6, 8 or 16 (default 8)\n"
    "  --act A                per-tensor-static (default) or per-tensor-dynamic: the activation quantization\n"
    "                         the cushion is for; L_q quantizes each activation tensor of the sample as a whole\n"
    "  --sites LIST           L_q sites (default attn_in,o_in,mlp_in,down_in)\n"
    "  --candidates LIST      candidate token ids, e.g. 3-100,200 (default: every non-special token)\n"
    "  Step kind (default: exhaustive when a step costs at most 2 TFLOP, e.g. stories260K; fast above it, e.g.\n"
    "  SmolLM2-135M's 49152 candidates; the chosen kind is printed):\n"
    "  --exhaustive           every candidate's L_q on the whole sample (|V| forward passes of the sample)\n"
    "  --fast                 screen every candidate at about one token's forward pass (first-order estimate of\n"
    "                         L_q from its key/value, cushion/candidate_screen.h), re-score the best exactly\n"
    "  --screen-keep K        fast steps: candidates re-scored exactly on the whole sample (default 16)\n"
    "  --screen-batch N       fast steps: candidates per screening forward pass (default 1024); with several\n"
    "                         processes each screens a share of these batches\n"
    "  --pruned               pruned steps: score all candidates on a window, re-score the best on the sample\n"
    "  --prune-window N       window tokens (default 64)\n"
    "  --prune-keep K         candidates re-scored (default 16)\n"
    "  --memory MB            memory for one batch of candidates; sets the batch size (default: 32 on the\n"
    "                         CPU, where small batches are fastest, or a quarter of the free RAM if less;\n"
    "                         half of the GPU's free memory on a GPU)\n"
    "  --threads N            CPU threads while scoring candidates (default 0 = automatic: 1 for models\n"
    "                         narrower than 1024, whose small operations run faster unsplit; else all cores)\n"
    "  --tune-epochs N        prefix tuning epochs (default 2; 0 = search only)\n"
    "  --lambda L             weight of L_q in the tuning loss (default 0.01)\n"
    "  --lr LR                Adam learning rate (default 0.001)\n"
    "  --batch N              documents per tuning step (default 4)\n"
    "  --seed S               document order seed (default 0)\n"
    "  --checkpoint FILE      save the state after every completed step (atomically)\n"
    "  --resume               continue from --checkpoint (same model, calibration text and settings)\n"
    "  With --json: a summary {prefix_ids, prefix_text, search: [...], tuning: [...], out} on stdout.\n";

namespace {

std::string show_piece(const Model& m, int32_t t) {
    std::string s = m.tokenizer->piece(t), o;
    for (char c : s) o += c == '\n' ? std::string("\\n") : std::string(1, c);
    return "'" + o + "' (" + std::to_string(t) + ")";
}

}  // namespace

namespace {
// Runs a restore from the checkpoint's `field` metadata; its errors name the checkpoint file and the field.
void in_checkpoint(const std::string& path, const char* field, const std::function<void()>& restore) {
    try {
        restore();
    } catch (const Cancelled&) {
        throw;
    } catch (const Error& e) {
        throw Error(path + " (checkpoint, metadata '" + field + "'): " + e.what());
    } catch (const json::exception& e) {
        throw Error(path + " (checkpoint, metadata '" + field + "'): a field is missing or of the wrong type: " + e.what());
    }
}
}  // namespace

namespace {
std::string sha_of(const std::string& s) {
    Sha256 h;
    h.update(s.data(), s.size());
    return h.hex_digest();
}

// The run itself, on this rank of `comm` (one process: rank 0 of 1). Only rank 0 writes files and prints.
int calibrate_run(const Args& a, const std::shared_ptr<Communicator>& comm) {
    const bool rank0 = comm->rank() == 0;
    const std::string out_path = a.require("out");
    const auto calib_lines = read_documents(a.require("calib"));
    if (a.has("resume") && !a.has("checkpoint")) throw Error("--resume needs --checkpoint FILE");
    const ActGranularity act = parse_granularity(a.get("act", "per-tensor-static"));
    if (act == ActGranularity::PerToken)
        throw Error("--act per-token: L_q quantizes whole activation tensors; use per-tensor-static or per-tensor-dynamic");
    const bool quiet = a.has("quiet") || !rank0, js = a.has("json") && rank0;

    GreedySearchOptions so;
    so.tau = a.get_double("tau", 0.5, 1e-12, 1.0);
    so.max_prefix = static_cast<int>(a.get_int("max-prefix", kDefaultMaxPrefix, 1, 1 << 16));
    so.loss.bits = static_cast<int>(a.get_int("abits", 8, 1, 64));
    if (a.has("sites")) so.loss.sites = parse_sites(a.get("sites"));
    so.pruned = a.has("pruned");
    if (a.has("exhaustive") + a.has("fast") + a.has("pruned") > 1)
        throw Error("--exhaustive, --fast and --pruned choose the step kind: give at most one");
    so.step_kind = a.has("exhaustive") ? StepChoice::Exhaustive : a.has("fast") ? StepChoice::Fast
                 : a.has("pruned") ? StepChoice::Pruned : StepChoice::Auto;
    so.screen_keep = static_cast<int>(a.get_int("screen-keep", 16, 1, 1 << 24));
    so.screen_batch = a.get_int("screen-batch", kDefaultScreenBatch, 1, 1 << 24);
    so.prune_window = a.get_int("prune-window", 64, 1, 1 << 24);
    so.prune_keep = static_cast<int>(a.get_int("prune-keep", 16, 1, 1 << 24));
    so.memory_budget = a.has("memory") ? a.get_int("memory", 0, 1, 1 << 24) << 20 : 0;
    so.threads = static_cast<int>(a.get_int("threads", 0, 0, 4096));
    PrefixTuneOptions to;
    to.epochs = static_cast<int>(a.get_int("tune-epochs", 2, 0, 100000));
    to.lambda = a.get_double("lambda", 0.01, 0.0, 1e12);
    to.lr = a.get_double("lr", 1e-3, 1e-12, 1e6);
    to.batch_size = a.get_int("batch", 4, 1, 1 << 20);
    to.seed = static_cast<uint64_t>(a.get_int("seed", 0, 0, 1LL << 62));
    to.loss = so.loss;
    so.comm = comm;
    to.comm = comm;

    auto m = load_model_from_args(a);
    std::shared_ptr<const Model> mc = m;
    std::string note;
    so.start_tokens = parse_start_tokens(a.get("start", "bos"), *m->tokenizer, "--start", &note);
    if (!note.empty() && !quiet) std::fprintf(stderr, "note: %s\n", note.c_str());
    if (a.has("candidates")) so.candidates = parse_token_ranges(a.get("candidates"), m->config.vocab_size, "--candidates");
    const int64_t n = a.has("sample-tokens") ? a.get_int("sample-tokens", 0, 1, 1 << 24)
                                              : default_sample_tokens(m->config, so.max_prefix);
    const auto docs = tokenize_documents(*m, calib_lines, int64_t(1) << 40);
    const int32_t bos = m->tokenizer->bos_id();
    std::vector<int32_t> sample = make_search_sample(docs, bos, n);
    const std::string run_settings = json{{"act", granularity_name(act)}}.dump();

    GreedySearch search(mc, sample, so);
    if (comm->world_size() > 1) {
        // Every rank must run the same search and tuning: check before the first exchange.
        comm->check_agree("model (fingerprint)", m->fingerprint());
        comm->check_agree("search settings and sample", search.settings_json() + " " + run_settings);
        comm->check_agree("tuning settings", json{{"epochs", to.epochs}, {"lambda", to.lambda}, {"lr", to.lr},
                                                  {"batch", to.batch_size}, {"seed", to.seed},
                                                  {"documents", docs.size()}, {"dtype", a.get("dtype")}}
                                                 .dump());
    }
    std::unique_ptr<PrefixTuner> tuner;
    CalibCheckpoint ck;
    const std::string ck_path = a.get("checkpoint");
    if (a.has("resume")) {
        if (!std::filesystem::exists(ck_path)) throw Error("--resume: checkpoint " + ck_path + " does not exist");
        ck = load_calib_checkpoint(ck_path);
        in_checkpoint(ck_path, "search", [&] { search.restore(ck.search_state); });
        if (!quiet)
            std::fprintf(stderr, "resumed from %s: prefix of %zu tokens, L_q %.6g%s\n", ck_path.c_str(),
                         search.prefix().size(), search.loss(), ck.tune_state.empty() ? "" : ", tuning in progress");
    }
    if (a.has("resume") && comm->world_size() > 1)
        comm->check_agree("resumed checkpoint (sha256 of its search state and tensors)",
                          sha_of(search.state_json() + ck.tune_state));
    auto save_ck = [&] {
        if (!ck_path.empty() && rank0) save_calib_checkpoint(ck_path, search, tuner.get(), run_settings);
    };
    if (!quiet)
        std::fprintf(stderr, "search: %zu candidates, sample of %lld tokens, start L_q %.6g, tau %g, max prefix %d%s\n",
                     search.candidates().size(), (long long)n, search.initial_loss(), so.tau, so.max_prefix,
                     (std::string(" (") + step_kind_name(search.default_kind()) + " steps)").c_str());

    // ---- greedy search
    json jsteps = json::array();
    while (!search.done() && ck.tune_state.empty()) {
        ProgressBar bar("search", quiet);
        GreedyStepResult r = search.step(bar.fn());
        bar.finish();
        save_ck();
        if (!quiet) {
            std::fprintf(stderr, "step %d: %s  [%s step, %lld candidates scored exactly in %.1f s, batch %lld]\n", r.step,
                         r.reason.c_str(), step_kind_name(r.kind), (long long)r.evaluated, r.seconds, (long long)r.batch_size);
        }
    }
    for (const auto& h : search.history())
        jsteps.push_back({{"step", h.step}, {"token", h.token}, {"piece", h.piece}, {"lq_before", h.loss_before},
                          {"lq_after", h.loss_after}, {"best_lq", h.best_loss}, {"accepted", h.accepted},
                          {"stop", stop_reason_name(h.stop)}, {"kind", step_kind_name(h.kind)}, {"seconds", h.seconds}});
    Cushion greedy = search.cushion();
    std::string prefix_show;
    for (auto t : search.prefix()) prefix_show += (prefix_show.empty() ? "" : " ") + show_piece(*m, t);
    if (!quiet)
        std::fprintf(stderr, "prefix (%zu tokens): %s; L_q %.6g -> %.6g (x%.4f)\n", search.prefix().size(),
                     prefix_show.c_str(), search.initial_loss(), search.loss(),
                     search.initial_loss() > 0 ? search.loss() / search.initial_loss() : 1.0);
    if (a.has("out-greedy") && rank0) save_cushion(greedy, a.get("out-greedy"));

    // ---- prefix tuning
    Cushion result = greedy;
    json jtune = json::array();
    if (to.epochs > 0) {
        tuner = std::make_unique<PrefixTuner>(mc, greedy, docs, to);
        if (!ck.tune_state.empty()) in_checkpoint(ck_path, "tune", [&] { tuner->restore(ck.tensors, ck.tune_state); });
        if (!quiet && !tuner->done())
            std::fprintf(stderr, "tuning: %zu documents, %lld batches x %d epochs, lr %g, lambda %g\n",
                         tuner->documents(), (long long)tuner->batches_per_epoch(), to.epochs, to.lr, to.lambda);
        ProgressBar bar("tuning", quiet);
        while (!tuner->done()) {
            TuneStepResult r = tuner->step(bar.fn());
            save_ck();
            if (!quiet) {
                bar.finish();
                std::fprintf(stderr, "tuning epoch %d batch %lld/%lld: CE %.5f  L_q %.6g  total %.6g  |grad| %.4g  (%.2f s)\n",
                             r.epoch + 1, (long long)r.batch + 1, (long long)r.batches_per_epoch, r.ce, r.lq, r.total,
                             r.grad_norm, r.seconds);
            }
        }
        bar.finish();
        for (const auto& h : tuner->history())
            jtune.push_back({{"step", h.step}, {"epoch", h.epoch}, {"batch", h.batch}, {"ce", h.ce}, {"lq", h.lq},
                             {"total", h.total}, {"grad_norm", h.grad_norm}});
        result = tuner->cushion();
    }
    {
        json s = json::parse(result.settings_json);
        s["act"] = granularity_name(act);
        s["calib"] = a.get("calib");
        result.settings_json = s.dump();
    }
    if (!rank0) return 0;
    save_cushion(result, out_path);
    if (js) {
        std::cout << json{{"prefix_ids", result.prefix_ids}, {"prefix_text", result.prefix_text},
                          {"initial_lq", search.initial_loss()}, {"lq", search.loss()}, {"search", jsteps},
                          {"tuning", jtune}, {"out", out_path}}
                         .dump()
                  << "\n";
    } else {
        std::printf("cushion of %zu tokens %s written to %s\n", result.prefix_ids.size(), prefix_show.c_str(),
                    out_path.c_str());
    }
    return 0;
}
}  // namespace

int cmd_calibrate(int argc, char** argv) {
    Args a(argc, argv, 2, with({"pruned", "exhaustive", "fast", "resume"}, common_flags()),
           with(with({"calib", "out", "out-greedy", "start", "tau", "max-prefix", "sample-tokens", "abits", "act", "sites",
                      "candidates", "prune-window", "prune-keep", "screen-keep", "screen-batch", "memory", "threads", "tune-epochs", "lambda", "lr", "batch",
                      "seed", "checkpoint"},
                     distributed_values()),
                common_values()));
    if (a.has("help")) {
        std::printf("%s\n%s\nCommon options:\n%s", kCalibrateHelp, kDistributedHelp, kCommonHelp);
        return 0;
    }
    if (a.has("local-processes")) return run_local_processes(argc, argv, static_cast<int>(a.get_int("local-processes", 1, 1, 256)));
    const std::shared_ptr<Communicator> comm = connect(distributed_from_args(a));
    // A failure on any rank ends every rank: fail() tells the others (and returns the first rank's message).
    auto failed = [&](const std::string& what) {
        const std::string shown = comm->fail(what);
        if (shown != what) throw Error(shown);
        if (comm->world_size() > 1) throw Error(comm->who() + ": " + what);
    };
    try {
        const int rc = calibrate_run(a, comm);
        comm->finish();
        return rc;
    } catch (const Cancelled&) {
        if (comm->fail("cancelled") != "cancelled") throw Error(comm->who() + ": cancelled, after another rank failed");
        throw;
    } catch (const Error& e) {
        failed(e.what());
        throw;
    } catch (const c10::Error& e) {
        failed(std::string("libtorch error: ") + e.what_without_backtrace());
        throw;
    } catch (const std::exception& e) {
        failed(e.what());
        throw;
    }
}

}  // namespace cushion::cli
