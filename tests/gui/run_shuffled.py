#!/usr/bin/env python3
"""Runs a QtTest binary's test functions in another order, to show they do not depend on each other's order.

    run_shuffled.py [--order reversed|shuffled|both] [--seed N] -- COMMAND...

COMMAND is the test binary (with its wrapper, e.g. xvfb-run -a ... BINARY). The functions are listed with
`COMMAND -functions`; then COMMAND is run with their names in reversed order and/or in an order shuffled with
the seed (QtTest runs the functions named on its command line in the given order; initTestCase and
cleanupTestCase still run first and last). The seed (default: $CUSHION_TEST_SEED, else 1) and the order are
printed, with the command that replays a failing run. Exit status: 0 when every run passed, else the first
failing run's.
"""
import argparse
import os
import random
import shlex
import subprocess
import sys


def list_functions(cmd):
    p = subprocess.run(cmd + ["-functions"], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"run_shuffled: `{' '.join(cmd)} -functions` failed ({p.returncode}):\n{p.stdout}{p.stderr}")
    names = [line.strip()[:-2] for line in p.stdout.splitlines() if line.strip().endswith("()")]
    if not names:
        sys.exit(f"run_shuffled: `{' '.join(cmd)} -functions` listed no test functions:\n{p.stdout}")
    return names


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--order", choices=["reversed", "shuffled", "both"], default="both")
    ap.add_argument("--seed", type=int, default=int(os.environ.get("CUSHION_TEST_SEED", "1")))
    ap.add_argument("command", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not cmd:
        ap.error("no test command given")
    names = list_functions(cmd)
    runs = []
    if a.order in ("reversed", "both"):
        runs.append(("reversed", list(reversed(names))))
    if a.order in ("shuffled", "both"):
        shuffled = list(names)
        random.Random(a.seed).shuffle(shuffled)
        if shuffled in (names, list(reversed(names))) and len(names) > 2:
            shuffled = shuffled[1:] + shuffled[:1]  # another order than the two already run
        runs.append((f"shuffled (seed {a.seed})", shuffled))
    status = 0
    for what, order in runs:
        print(f"== {what}: {' '.join(order)}", flush=True)
        rc = subprocess.run(cmd + order).returncode
        if rc != 0:
            print(f"run_shuffled: the {what} run failed ({rc}); replay: {shlex.join(cmd + order)}", flush=True)
            status = status or rc
    return status


if __name__ == "__main__":
    sys.exit(main())
