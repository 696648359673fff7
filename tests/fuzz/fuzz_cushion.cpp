// The engine's own files: the cushion, the tuner state (.tuner), the calibration checkpoint, and a quantized
// package's quantization.json. Each is checked against stories260K, the model its seeds were made with.
#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <functional>

#include <filesystem>

#include "cushion/calib_checkpoint.h"
#include "cushion/cushion.h"
#include "cushion/greedy_search.h"
#include "cushion/prefix_tuner.h"
#include "fuzz_common.h"
#include "model/model.h"
#include "package/quantized_package.h"
#include "tokenizer/tokenizer.h"

namespace fs = std::filesystem;
using namespace cushion;

namespace {

int32_t bos() { return fuzz::stories()->tokenizer->bos_id(); }

// ---- cushion file

void run_cushion(const uint8_t* d, size_t n) {
    const std::string path = fuzz::write_input("input.cushion", d, n);
    fuzz::expect_only_errors("cushion", [&] {
        Cushion c = load_cushion(path);
        check_cushion_fits(c, *fuzz::stories(), path);
    });
}

void seeds_cushion(const std::string& dir) {
    const auto m = fuzz::stories();
    int k = 0;
    for (const std::vector<int32_t>& ids : {std::vector<int32_t>{bos()}, std::vector<int32_t>{bos(), 5, 300}}) {
        const std::string p = dir + "/c" + std::to_string(k++);
        save_cushion(make_cushion(*m, ids), p);
        const std::string bytes = fuzz::read_file(p);
        fs::remove(p);
        fuzz::seed(dir, "stories-" + std::to_string(ids.size()) + "tok.cushion", bytes);
    }
}

// ---- tuner state (PrefixTuner::save_state / load_state)

PrefixTuneOptions tune_options() {
    PrefixTuneOptions o;
    o.epochs = 1;
    o.batch_size = 2;
    o.lr = 0.01;
    return o;
}
Cushion tune_init() { return make_cushion(*fuzz::stories(), {bos(), 42}); }

void run_tuner(const uint8_t* d, size_t n) {
    static const Cushion init = tune_init();
    const std::string path = fuzz::write_input("session.tuner", d, n);
    fuzz::expect_only_errors("tuner_state", [&] {
        PrefixTuner t(fuzz::stories(), init, fuzz::stories_docs(), tune_options());
        t.load_state(path);
        if (!t.done()) t.step();  // a state that loads must go on
        (void)t.cushion();
    });
}

void seeds_tuner(const std::string& dir) {
    PrefixTuner t(fuzz::stories(), tune_init(), fuzz::stories_docs(), tune_options());
    const std::string p = dir + "/t";
    t.save_state(p);
    fuzz::seed(dir, "step0.tuner", fuzz::read_file(p));
    t.step();
    t.save_state(p);
    fuzz::seed(dir, "step1.tuner", fuzz::read_file(p));
    fs::remove(p);
}

// ---- calibration checkpoint (calibrate --checkpoint / --resume)

GreedySearchOptions search_options() {
    GreedySearchOptions o;
    o.max_prefix = 3;
    return o;
}
std::vector<int32_t> search_sample() { return make_search_sample(fuzz::stories_docs(), bos(), 32); }

// GreedySearch::restore and PrefixTuner::restore report a field of the state JSON that is missing or of the wrong
// type with the JSON library's exception; their caller names the checkpoint file and the field (calibrate --resume:
// in_checkpoint in app/cmd_calibrate.cpp turns it into an Error). The target does the same. (Found by this target:
// a tuning history entry without "grad_norm", out_of_range.403; regressions/checkpoint/history-without-grad-norm.)
void restore_as_the_cli(const char* field, const std::function<void()>& restore) {
    try {
        restore();
    } catch (const nlohmann::json::exception& e) {
        throw Error(std::string("checkpoint (metadata '") + field + "'): a field is missing or of the wrong type: " +
                    e.what());
    }
}

void run_checkpoint(const uint8_t* d, size_t n) {
    static const std::vector<int32_t> sample = search_sample();
    static const Cushion init = tune_init();
    const std::string path = fuzz::write_input("calib.ckpt", d, n);
    fuzz::expect_only_errors("checkpoint", [&] {
        CalibCheckpoint ck = load_calib_checkpoint(path);
        GreedySearch s(fuzz::stories(), sample, search_options());
        restore_as_the_cli("search", [&] { s.restore(ck.search_state); });
        if (!ck.tune_state.empty()) {
            PrefixTuner t(fuzz::stories(), init, fuzz::stories_docs(), tune_options());
            restore_as_the_cli("tune", [&] { t.restore(ck.tensors, ck.tune_state); });
        }
    });
}

void seeds_checkpoint(const std::string& dir) {
    GreedySearch s(fuzz::stories(), search_sample(), search_options());
    const std::string p = dir + "/ck";
    save_calib_checkpoint(p, s, nullptr, "{\"text\":\"calib.txt\"}");
    fuzz::seed(dir, "search-start.ckpt", fuzz::read_file(p));
    s.override_step(42);
    save_calib_checkpoint(p, s, nullptr);
    fuzz::seed(dir, "search-1step.ckpt", fuzz::read_file(p));
    PrefixTuner t(fuzz::stories(), tune_init(), fuzz::stories_docs(), tune_options());
    t.step();
    save_calib_checkpoint(p, s, &t);
    fuzz::seed(dir, "tuning.ckpt", fuzz::read_file(p));
    fs::remove(p);
}

// ---- a package's quantization.json: a W8A8 package of stories260K made once; each input replaces its
// quantization.json. Byte 0 of the input says whether hashes are checked (odd) or not (even: what reaches the
// readers behind the integrity check, e.g. a package whose author recomputed the hashes).

std::string g_pkg;

void make_package(const std::string& dir) {
    const auto m = fuzz::stories();
    ExportOptions eo;
    eo.config.wbits = 8;
    eo.config.abits = 8;
    eo.config.group = 32;
    eo.config.act = ActGranularity::PerTensorStatic;
    eo.config.kv_bits = 8;
    eo.calib_docs = fuzz::stories_docs();
    write_package(*m, make_cushion(*m, {bos(), 42}), dir, eo);
}

void init_package() {
    g_pkg = fuzz::tmp_dir() + "/pkg";
    make_package(g_pkg);
}

void run_package(const uint8_t* d, size_t n) {
    if (n < 1) return;
    fuzz::write_file(g_pkg + "/quantization.json", std::string(reinterpret_cast<const char*>(d) + 1, n - 1));
    fuzz::expect_only_errors("package", [&] {
        LoadPackageOptions o;
        o.check_hashes = d[0] & 1;
        auto p = load_package(g_pkg, o);
        const std::vector<int64_t> ids{bos(), 42, 7};
        at::Tensor tokens = at::tensor(ids).unsqueeze(0);
        (void)p->forward(tokens);
    });
}

void seeds_package(const std::string& dir) {
    const std::string p = fuzz::tmp_dir() + "/seed-pkg";
    make_package(p);
    const std::string info = fuzz::read_file(p + "/quantization.json");
    fuzz::seed(dir, "hashes-checked.json", "\x01" + info, false);
    fuzz::seed(dir, "quantization.json", std::string("\x00", 1) + info);
    fs::remove_all(p);
}

}  // namespace

CUSHION_FUZZ_TARGET(cushion, nullptr, run_cushion, seeds_cushion);
CUSHION_FUZZ_TARGET(tuner_state, nullptr, run_tuner, seeds_tuner);
CUSHION_FUZZ_TARGET(checkpoint, nullptr, run_checkpoint, seeds_checkpoint);
CUSHION_FUZZ_TARGET(package, init_package, run_package, seeds_package);
