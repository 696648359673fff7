// Test helper: the engine's float32 logits for one token sequence, for comparisons with other
// implementations (tests/reference/hf_models_reference.py compares them with Hugging Face transformers).
//   usage: dump_logits MODEL IDS OUT.bin [CUSHION]
// MODEL: anything `cushion` loads (CPU, float32). IDS: comma-separated token ids, used as they are (no <bos>
// is added). CUSHION: a cushion file; the ids then run after its prefix KV cache (positions P, P+1, ...).
// OUT.bin: the (T, vocab) logits, float32 little-endian, row-major; "T V" is printed on stdout.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cstdio>
#include <exception>
#include <sstream>
#include <string>
#include <vector>

#include "cushion/cushion.h"
#include "package/open_target.h"

int main(int argc, char** argv) {
    if (argc != 4 && argc != 5) {
        std::fprintf(stderr, "usage: dump_logits MODEL IDS OUT.bin [CUSHION]   (IDS: comma-separated token ids)\n");
        return 2;
    }
    try {
        std::vector<int64_t> ids;
        std::stringstream ss(argv[2]);
        for (std::string item; std::getline(ss, item, ',');) ids.push_back(std::stoll(item));
        if (ids.empty()) throw std::runtime_error("no token ids");
        auto model = cushion::load_model(argv[1]);
        at::NoGradGuard no_grad;
        const at::Tensor tokens = at::tensor(ids, at::kLong).unsqueeze(0);
        cushion::ForwardArgs fa;
        cushion::Cushion cush;
        if (argc == 5) {
            cush = cushion::load_cushion(argv[4]);
            cushion::check_cushion_fits(cush, *model, argv[4]);
            fa.prefix = &cush.kv;
        }
        const at::Tensor logits = model->forward(tokens, fa)[0].to(at::kCPU, at::kFloat).contiguous();
        FILE* f = std::fopen(argv[3], "wb");
        if (!f) throw std::runtime_error(std::string(argv[3]) + ": cannot open for writing");
        const size_t n = static_cast<size_t>(logits.numel());
        const bool ok = std::fwrite(logits.data_ptr<float>(), sizeof(float), n, f) == n;
        if (std::fclose(f) != 0 || !ok) throw std::runtime_error(std::string(argv[3]) + ": write failed");
        std::printf("%lld %lld\n", (long long)logits.size(0), (long long)logits.size(1));
    } catch (const std::exception& e) {
        std::fprintf(stderr, "dump_logits: %s\n", e.what());
        return 1;
    }
    return 0;
}
