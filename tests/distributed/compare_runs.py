#!/usr/bin/env python3
"""Compares a distributed `cushion calibrate` run with the single-process run of the same settings.

usage: compare_runs.py LOSS_TOL DELTA_TOL ONE.json TWO.json ONE_GREEDY.safetensors TWO_GREEDY.safetensors
                       ONE.safetensors TWO.safetensors

What must agree (tests/distributed/distributed_check.sh says why):
  search  the chosen tokens, and every L_q (start, per step before/after/best) exactly: a candidate batch's
          losses do not depend on which process scored it (same batches, same thread count).
          The searched (untuned) cushions are the same tensors bit for bit.
  tuning  per-step CE and L_q within LOSS_TOL relative, and the tuning's change of the cushion (tuned -
          searched K/V) the same within DELTA_TOL of its L2 norm. Each rank's share of a batch runs with its own
          padding and the gradient is summed across ranks in another order than in one process's backward pass:
          float32 rounding. With lambda = 0 (CE alone, a smooth loss) that is all. With lambda > 0 a rounding
          difference can flip an activation's rounding in L_q's quantizer, a jump in its stop-gradient
          derivative, and Adam's normalised step carries it into the next steps: larger, still small.
Exit 0 when everything agrees, 1 on a mismatch (each one printed), 2 on bad input.
"""
import json
import sys

import numpy as np
from safetensors.numpy import load_file



def main(argv):
    if len(argv) != 9:
        print(__doc__)
        return 2
    LOSS_TOL, DELTA_TOL = float(argv[1]), float(argv[2])
    argv = argv[2:]
    one, two = (json.load(open(p)) for p in argv[1:3])
    bad = []

    if one["prefix_ids"] != two["prefix_ids"]:
        bad.append(f"prefix ids differ: one process {one['prefix_ids']}, two {two['prefix_ids']}")
    for key in ("initial_lq", "lq"):
        if one[key] != two[key]:
            bad.append(f"{key} differs: {one[key]!r} vs {two[key]!r}")
    if len(one["search"]) != len(two["search"]):
        bad.append(f"search steps: {len(one['search'])} vs {len(two['search'])}")
    for a, b in zip(one["search"], two["search"]):
        for key in ("token", "lq_before", "lq_after", "best_lq", "accepted", "stop"):
            if a[key] != b[key]:
                bad.append(f"search step {a['step']}: {key} {a[key]!r} vs {b[key]!r}")

    ga, gb = load_file(argv[3]), load_file(argv[4])
    if sorted(ga) != sorted(gb):
        bad.append(f"searched cushions hold different tensors: {sorted(ga)} vs {sorted(gb)}")
    else:
        for name in sorted(ga):
            if ga[name].shape != gb[name].shape or not np.array_equal(ga[name], gb[name]):
                bad.append(f"searched cushion tensor {name} differs")

    if len(one["tuning"]) != len(two["tuning"]) or not one["tuning"]:
        bad.append(f"tuning steps: {len(one['tuning'])} vs {len(two['tuning'])} (the test needs some)")
    worst_loss = 0.0
    for a, b in zip(one["tuning"], two["tuning"]):
        for key in ("ce", "lq"):
            rel = abs(a[key] - b[key]) / max(abs(a[key]), 1e-30)
            worst_loss = max(worst_loss, rel)
            if rel > LOSS_TOL:
                bad.append(f"tuning step {a['step']}: {key} {a[key]!r} vs {b[key]!r} (relative {rel:.3g} > {LOSS_TOL})")

    ta, tb = load_file(argv[5]), load_file(argv[6])
    delta_rel = 0.0
    kv_names = sorted(n for n in ta if n.startswith(("k.", "v.")))
    if sorted(ta) != sorted(tb) or not kv_names or any(ta[n].shape != tb[n].shape for n in kv_names):
        bad.append(f"tuned cushions hold different tensors: {sorted(ta)} vs {sorted(tb)}")
    else:
        da = np.concatenate([(ta[n].astype(np.float64) - ga[n]).ravel() for n in kv_names])
        db = np.concatenate([(tb[n].astype(np.float64) - gb[n]).ravel() for n in kv_names])
        delta_rel = float(np.linalg.norm(da - db) / max(np.linalg.norm(da), 1e-300))
        if not delta_rel <= DELTA_TOL:
            bad.append(f"the tuning's change of the cushion differs by {delta_rel:.3g} of its norm (> {DELTA_TOL})")
        # The tuning must have moved the cushion far beyond float32 rounding, or the comparison says nothing.
        scale = max(float(np.abs(ta[n]).max()) for n in kv_names)
        moved = float(np.abs(da).max()) / scale
        if not moved > 1e-4:
            bad.append(f"the tuning barely moved the cushion ({moved:.3g} of max |K,V|): the test would see no difference")

    print(f"prefix {one['prefix_ids']}, L_q {one['initial_lq']:.6g} -> {one['lq']:.6g}; "
          f"{len(one['search'])} search steps, {len(one['tuning'])} tuning steps")
    print(f"tuning: worst relative CE/L_q difference {worst_loss:.3g} (tolerance {LOSS_TOL}); "
          f"the tuning's change of the cushion differs by {delta_rel:.3g} of its norm (tolerance {DELTA_TOL})")
    for b in bad:
        print("MISMATCH:", b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
