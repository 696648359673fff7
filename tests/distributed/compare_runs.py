#!/usr/bin/env python3
"""Compares a distributed `cushion calibrate` run with the single-process run of the same settings.

usage: compare_runs.py ONE.json TWO.json ONE_GREEDY.safetensors TWO_GREEDY.safetensors ONE.safetensors TWO.safetensors

What must agree (tests/distributed/distributed_check.sh says why):
  search  the chosen tokens, and every L_q (start, per step before/after/best) exactly: a candidate batch's
          losses do not depend on which process scored it (same batches, same thread count).
          The searched (untuned) cushions are the same tensors bit for bit.
  tuning  per-step CE and L_q within 1e-5 relative, and the tuned K/V within 1e-4 of the largest |K/V|
          (max abs difference / max abs value): each rank's share of a batch runs with its own padding and
          the gradient is summed across ranks in another order than in one process's backward pass, so
          they agree to float32 rounding, amplified a little by Adam's normalised steps.
Exit 0 when everything agrees, 1 on a mismatch (each one printed), 2 on bad input.
"""
import json
import sys

import numpy as np
from safetensors.numpy import load_file

KV_TOL = 1e-4      # tuned K/V: max |a - b| / max |a|
LOSS_TOL = 1e-5    # tuning CE and L_q per step: relative


def main(argv):
    if len(argv) != 7:
        print(__doc__)
        return 2
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
    worst_kv = 0.0
    kv_names = sorted(n for n in ta if n.startswith(("k.", "v.")))
    if sorted(ta) != sorted(tb) or not kv_names:
        bad.append(f"tuned cushions hold different tensors: {sorted(ta)} vs {sorted(tb)}")
    else:
        scale = max(float(np.abs(ta[n]).max()) for n in kv_names)
        for n in kv_names:
            if ta[n].shape != tb[n].shape:
                bad.append(f"tuned {n}: shapes {ta[n].shape} vs {tb[n].shape}")
                continue
            d = float(np.abs(ta[n].astype(np.float64) - tb[n].astype(np.float64)).max()) / scale
            worst_kv = max(worst_kv, d)
            if not d <= KV_TOL:
                bad.append(f"tuned {n}: max |difference| / max |K,V| = {d:.3g} > {KV_TOL}")
        # The tuning must have moved the cushion, or the comparison says nothing.
        moved = max(float(np.abs(ta[n] - ga[n]).max()) for n in kv_names) / scale
        if not moved > 100 * KV_TOL:
            bad.append(f"the tuning barely moved the cushion ({moved:.3g} of max |K,V|): the test would not see a difference")

    print(f"prefix {one['prefix_ids']}, L_q {one['initial_lq']:.6g} -> {one['lq']:.6g}; "
          f"{len(one['search'])} search steps, {len(one['tuning'])} tuning steps")
    print(f"tuning: worst relative CE/L_q difference {worst_loss:.3g} (tolerance {LOSS_TOL}); "
          f"tuned K/V: worst max|diff|/max|K,V| {worst_kv:.3g} (tolerance {KV_TOL})")
    for b in bad:
        print("MISMATCH:", b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
