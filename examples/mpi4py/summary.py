#!/usr/bin/env python3
"""The summary table of examples/mpi4py/compare.sh: one row per trainer log (its RESULT line),
with bytes sent per step and the ratio (DESIGN.md section 9) of the run whose terse telemetry is
given with --stats (rank 0's TERSE_STATS file: one JSON line per allreduce terse handled, with
`bytes` it handed to MPI, statistics and agreement traffic included, and `plain_bytes`, what a
plain ring allreduce of that buffer sends). Calls terse passed through without a record (other
dtypes, the trainer's float64 metric sums) are left out of both sides, as plain_bytes_per_step of
the trainer leaves them out. The trainer makes one gradient allreduce a step; the steps before
the shim has learnt the call cycle have no record and count as what they were: plain allreduces.
"""
import argparse
import json
import sys


def result(path):
    with open(path) as f:
        for line in f:
            if line.startswith("RESULT "):
                w = line.split()[1:]
                return {w[i]: w[i + 1] for i in range(0, len(w) - 1, 2)}
    raise ValueError("%s: no RESULT line (did the run fail?)" % path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("logs", nargs="+", help="trainer logs; the last one is the terse run")
    ap.add_argument("--stats", required=True, help="rank 0's TERSE_STATS file of the terse run")
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--min-ratio", type=float, default=0.0,
                    help="exit 1 when the terse run's ratio is below this")
    a = ap.parse_args()
    try:
        rows = [result(p) for p in a.logs]
        sent = plain = 0
        n = 0
        with open(a.stats) as f:
            for line in f:
                if line.strip():
                    d = json.loads(line)
                    sent += d["bytes"]
                    plain += d["plain_bytes"]
                    n += 1
    except (OSError, ValueError, KeyError) as e:
        sys.stderr.write("summary.py: %s\n" % e)
        return 1
    if n == 0 or sent == 0:
        sys.stderr.write("summary.py: %s holds no terse allreduce: was libterse-mpi.so loaded?\n"
                         % a.stats)
        return 1
    print("# %-8s %6s %10s %10s %9s %14s %8s %9s" % ("run", "steps", "loss", "held-loss",
                                                    "held-acc", "bytes/step", "ratio", "ms/step"))
    missing = max(a.steps - n, 0)  # passed through while the shim learnt the cycle
    ratio_terse = 0.0
    for i, r in enumerate(rows):
        terse = (i == len(rows) - 1)
        pbps = float(r["plain_bytes_per_step"])
        total = sent + missing * pbps
        bps = total / a.steps if terse else pbps
        ratio = (plain + missing * pbps) / total if terse else 1.0
        ratio_terse = ratio if terse else ratio_terse
        print("  %-8s %6s %10.4f %10.4f %9.4f %14.0f %8.2f %9.2f" % (
            r["label"], r["steps"], float(r["loss"]), float(r["heldout_loss"]),
            float(r["heldout_acc"]), bps, ratio, float(r["ms_per_step"])))
    print("# terse: %d of %d steps' allreduces recorded on rank 0 (%.0f bytes sent, %.0f plain); "
          "%d passed through uncompressed before that" % (n, a.steps, sent, plain, missing))
    if ratio_terse < a.min_ratio:
        sys.stderr.write("summary.py: terse ratio %.2f below %.2f\n" % (ratio_terse, a.min_ratio))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
