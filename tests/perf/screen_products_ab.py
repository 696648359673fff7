#!/usr/bin/env python3
# usage: .venv/bin/python tests/perf/screen_products_ab.py [THREADS=2] [ROUNDS=5]   (run with OMP_WAIT_POLICY=PASSIVE, as the engine)
# The screen's estimate products (core/cushion/candidate_screen.cpp) at SmolLM2's shapes, with the same ATen ops
# (the venv's torch 2.12.1 is the libtorch the engine links): the float64 sum over all H n terms (before) against
# the float32 sum over the sample tokens then float64 over the heads (after), alternated, CPU and wall seconds per
# 1024-candidate batch (30 blocks, 128-column slices).
import statistics, sys, time
import torch
threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
torch.set_num_threads(threads)
H, n, D, b, L, cols = 9, 512, 64, 1024, 30, 128
torch.manual_seed(0)
qa = [torch.randn(H, n, D + 1) * 0.1 for _ in range(L)]
gaa = [torch.randn(H, n, D + 1) * 1e-3 for _ in range(L)]
k = [torch.randn(H, D + 1, b) for _ in range(L)]
v = [torch.randn(H, D + 1, b) for _ in range(L)]
def run(after):
    d = torch.zeros(b, dtype=torch.float64)
    for l in range(L):
        for j0 in range(0, b, cols):
            nb = min(cols, b - j0)
            w = torch.bmm(qa[l], k[l][:, :, j0:j0 + nb]).sigmoid_()
            gv = torch.bmm(gaa[l], v[l][:, :, j0:j0 + nb])
            w.mul_(gv)
            d[j0:j0 + nb] += w.sum(1).sum(0, dtype=torch.float64) if after else w.view(H * n, nb).sum(0, dtype=torch.float64)
    return d
ref, new = run(False), run(True)
print(f"threads {threads}: max |after - before| {(new - ref).abs().max().item():.2e}, mean |estimate| {ref.abs().mean().item():.3f}")
res = {False: ([], []), True: ([], [])}
for r in range(int(sys.argv[2]) if len(sys.argv) > 2 else 5):
    for after in (False, True):
        c0, t0 = time.process_time(), time.perf_counter()
        run(after)
        res[after][0].append(time.process_time() - c0)
        res[after][1].append(time.perf_counter() - t0)
for after in (False, True):
    c, w = res[after]
    print(f"  {'after ' if after else 'before'}: cpu median {statistics.median(c):.3f} s (min {min(c):.3f}), wall median {statistics.median(w):.3f} s (min {min(w):.3f}) per batch")
