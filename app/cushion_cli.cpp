// cushion: the command line face of CushionCache Studio.
#include <cstdio>
#include <cstring>
#include <exception>

#include <c10/util/Exception.h>

#include "cli_common.h"
#include "cli_progress.h"
#include "base/threads.h"

using namespace cushion;
using namespace cushion::cli;

namespace {

const Command kCommands[] = {
    {"info", "show a model's architecture, sizes, tokenizer and fingerprint", kInfoHelp, cmd_info},
    {"generate", "generate text from a prompt (greedy or sampled)", kGenerateHelp, cmd_generate},
    {"ppl", "perplexity on a text file (one document per line)", kPplHelp, cmd_ppl},
    {"probe", "activation statistics per block and site; outlier tokens; heatmap PNG", kProbeHelp, cmd_probe},
    {"outliers", "PrefixQuant-style outlier tokens (down_proj max/median > 64) and their frequency", kOutliersHelp, cmd_outliers},
    {"calibrate", "CushionCache: greedy prefix search + prefix tuning -> a cushion file", kCalibrateHelp, cmd_calibrate},
    {"eval", "perplexity full precision vs simulated W/A quantization (--sweep: the paper's table)", kEvalHelp, cmd_eval},
    {"export", "write the quantized model + cushion as a self-contained, verifiable package", kExportHelp, cmd_export},
    {"verify", "check an exported package's hashes and re-measure its perplexity", kVerifyHelp, cmd_verify},
    {"plant-outliers", "derive a model with planted massive activations (shows the disease)", kPlantHelp, cmd_plant_outliers},
};

void usage(FILE* out) {
    std::fprintf(out,
                 "cushion %s - see and fix activation outliers for LLM quantization (CushionCache)\n\n"
                 "usage: cushion COMMAND [MODEL] [options]      (cushion COMMAND --help for details)\n\n"
                 "commands:\n",
                 CUSHION_VERSION);
    for (const auto& c : kCommands) std::fprintf(out, "  %-10s %s\n", c.name, c.summary);
    std::fprintf(out, "\nMODEL is a llama2.c .bin, a .gguf or a Hugging Face directory; without it the embedded\n"
                      "stories260K model is used. Models load from local files only.\n");
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help")) {
        usage(stdout);
        return argc < 2 ? 1 : 0;
    }
    if (!std::strcmp(argv[1], "--version")) {
        std::printf("cushion %s\n", CUSHION_VERSION);
        return 0;
    }
    bool help = false;
    for (int i = 2; i < argc; ++i) help = help || !std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h");
    if (!help) relaunch_with_passive_openmp(argv);  // before any work: idle OpenMP threads sleep, not spin
    install_interrupt_handler();
    use_all_cores();
    for (const auto& c : kCommands) {
        if (std::strcmp(argv[1], c.name) != 0) continue;
        try {
            return c.run(argc, argv);
        } catch (const Cancelled&) {
            std::fprintf(stderr, "\ncushion %s: cancelled\n", c.name);
            return 130;
        } catch (const Error& e) {
            std::fprintf(stderr, "cushion %s: error: %s\n", c.name, e.what());
            return 2;
        } catch (const c10::Error& e) {
            std::fprintf(stderr, "cushion %s: libtorch error: %s\n", c.name, e.what_without_backtrace());
            return 3;
        } catch (const std::exception& e) {
            std::fprintf(stderr, "cushion %s: internal error: %s\n", c.name, e.what());
            return 3;
        }
    }
    std::fprintf(stderr, "cushion: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
