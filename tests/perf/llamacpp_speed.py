#!/usr/bin/env python3
"""llama.cpp's prefill and decode speed on a GGUF, for the side-by-side table in RESULTS.md.

llama.cpp comes from PyPI's `llama-cpp-python`, which compiles llama.cpp from source. It is not a
project dependency: install it into a venv of its own (it compiles for ~20 minutes on one core):

    python3 -m venv /tmp/llamacpp-venv
    CMAKE_ARGS="-DGGML_NATIVE=ON" MAKEFLAGS=-j1 /tmp/llamacpp-venv/bin/pip install llama-cpp-python==0.3.36
    /tmp/llamacpp-venv/bin/python tests/perf/llamacpp_speed.py models/SmolLM2-135M-Instruct.Q4_1.gguf

Prefill (pp): one prompt of --prompt-tokens tokens evaluated in one batch, like llama-bench's pp512.
Decode (tg): --gen-tokens single-token evaluations after a --decode-prompt-token prompt (default 1, like llama-bench's
tg128).
Wall-clock time around llama-cpp-python's eval() (its
Python overhead per call is included; it matters only for decode), best of --repeats runs; the prompt tokens are
ids 100.. of the vocabulary (content does not change the cost of a dense forward pass).
Prints one JSON line per measurement so a caller can put it beside its own figures from the same run.
"""
import argparse
import json
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("gguf")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--decode-prompt", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    try:
        import llama_cpp
    except ImportError:
        sys.exit("llamacpp_speed: llama_cpp is not installed in this Python; see this script's --help")

    llm = llama_cpp.Llama(model_path=args.gguf, n_ctx=max(args.prompt_tokens, args.decode_prompt) + args.gen_tokens + 8,
                          n_batch=args.prompt_tokens, n_ubatch=args.prompt_tokens,
                          n_threads=args.threads, n_threads_batch=args.threads, verbose=False)
    n_vocab = llm.n_vocab()
    prompt = [100 + (i % (n_vocab - 200)) for i in range(max(args.prompt_tokens, args.decode_prompt + args.gen_tokens))]

    def clear():
        llm.reset()
        if hasattr(llm._ctx, "memory_clear"):
            llm._ctx.memory_clear(True)
        else:
            llm._ctx.kv_cache_clear()

    best_pp = best_tg = 0.0
    for _ in range(args.repeats):
        clear()
        t0 = time.perf_counter()
        llm.eval(prompt[:args.prompt_tokens])
        best_pp = max(best_pp, args.prompt_tokens / (time.perf_counter() - t0))

        clear()
        llm.eval(prompt[:args.decode_prompt])
        t0 = time.perf_counter()
        for i in range(args.gen_tokens):
            llm.eval([prompt[args.decode_prompt + i]])
        best_tg = max(best_tg, args.gen_tokens / (time.perf_counter() - t0))

    common = {"engine": "llama.cpp", "version": "llama-cpp-python " + llama_cpp.__version__,
              "model": args.gguf, "threads": args.threads}
    print(json.dumps(dict(common, test=f"pp{args.prompt_tokens}", tokens_per_s=round(best_pp, 1))))
    print(json.dumps(dict(common, test=f"tg{args.gen_tokens}", decode_prompt=args.decode_prompt, tokens_per_s=round(best_tg, 1))))


if __name__ == "__main__":
    main()
