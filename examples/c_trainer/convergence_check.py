#!/usr/bin/env python3
"""Convergence check: does compressed training stay within the noise of plain training?

Runs the C trainer under mpirun with fixed data order:
  plain      3 seeds, plain MPI_Allreduce: the noise band [min, max] of each metric
  candidate  3 seeds, terse with TERSE_COMPRESSOR=<candidate>: the MEAN of each metric must lie
             inside the band (the mean of 3 draws of the same distribution lies inside the range of
             3 others with high probability; a real loss of accuracy does not), and it must send
             at least --min-ratio times fewer bytes (DESIGN.md section 9)
  negative   a negative control that must FAIL the same check (default: top-k at 0.1 % with error
             feedback switched off), proving the check can tell the two apart.
Candidate and negative control plan for the fewest bytes (--candidate-env): deterministic plans,
where plans by predicted time would follow timings measured on the machine of the day.
Exit status 0 only when the candidate passes and the negative control fails.
Metrics: final held-out loss, final held-out accuracy, and the last epoch's training loss.
"""
import argparse
import os
import statistics
import subprocess
import sys

METRICS = ("heldout_loss", "heldout_acc", "loss")


def run(args, seed, env_extra, plain):
    cmd = [args.mpirun, "-np", str(args.np), "--oversubscribe", "--allow-run-as-root",
           "--bind-to", "none"]
    for k, v in env_extra.items():
        cmd += ["-x", "%s=%s" % (k, v)]
    cmd += [args.trainer, "-s", str(args.steps), "-e", str(args.epoch), "-S", str(seed)]
    if plain:
        cmd.append("-P")
    cmd += args.trainer_args
    env = dict(os.environ)
    env.update(env_extra)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    if out.returncode != 0:
        sys.stdout.write(out.stdout)
        sys.stderr.write(out.stderr)
        return None
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            f = line.split()[1:]
            return {f[i]: (f[i + 1] if f[i] == "label" else float(f[i + 1]))
                    for i in range(0, len(f) - 1, 2)}
    sys.stdout.write(out.stdout)
    return None


def series(args, name, env_extra, plain):
    rows = []
    for seed in args.seeds:
        r = run(args, seed, env_extra, plain)
        if r is None:
            print("  %-10s seed %d: FAILED TO RUN" % (name, seed))
            return None
        print("  %-10s seed %d: heldout_loss %.4f heldout_acc %.4f loss %.4f ratio %6.2f" %
              (name, seed, r["heldout_loss"], r["heldout_acc"], r["loss"], r["ratio"]))
        sys.stdout.flush()
        rows.append(r)
    return rows


def judge(name, rows, band, min_ratio):
    """Returns (passed, reasons)."""
    if rows is None:
        return False, ["did not run to the end (non-finite loss or crash)"]
    reasons = []
    for m in METRICS:
        mean = statistics.fmean(r[m] for r in rows)
        lo, hi = band[m]
        inside = lo <= mean <= hi
        print("  %-10s %-13s mean %.4f band [%.4f, %.4f] %s" %
              (name, m, mean, lo, hi, "inside" if inside else "OUTSIDE"))
        if not inside:
            reasons.append("%s mean %.4f outside [%.4f, %.4f]" % (m, mean, lo, hi))
    ratio = min(r["ratio"] for r in rows)
    print("  %-10s ratio %.2f (need >= %.2f)" % (name, ratio, min_ratio))
    if ratio < min_ratio:
        reasons.append("ratio %.2f < %.2f" % (ratio, min_ratio))
    return not reasons, reasons


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trainer", required=True)
    p.add_argument("--mpirun", default="mpirun")
    p.add_argument("--np", type=int, default=4)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--epoch", type=int, default=100)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--candidate", default="auto", help="TERSE_COMPRESSOR of the candidate")
    p.add_argument("--negative", default="topk:0.001",
                   help="TERSE_COMPRESSOR of the negative control (run with TERSE_ERROR_FEEDBACK=0)")
    p.add_argument("--candidate-env", nargs="*", default=["TERSE_SCHED_OBJECTIVE=bytes"],
                   metavar="VAR=VALUE",
                   help="extra environment of the candidate and the negative control (default: "
                        "plan for the fewest bytes: plans by predicted time depend on timings "
                        "measured at run time, so they differ from run to run and machine to "
                        "machine, and a CI check must not; the budget stays the default)")
    p.add_argument("--min-ratio", type=float, default=4.0)
    p.add_argument("--timeout", type=int, default=600)
    p.add_argument("trainer_args", nargs="*")
    args = p.parse_args()
    if len(args.seeds) < 3:
        p.error("the noise band needs at least 3 seeds")

    print("# convergence check: %d ranks, %d steps, seeds %s" % (args.np, args.steps, args.seeds))
    plain = series(args, "plain", {}, True)
    if plain is None:
        return 1
    band = {m: (min(r[m] for r in plain), max(r[m] for r in plain)) for m in METRICS}

    extra = dict(kv.split("=", 1) for kv in args.candidate_env)
    cand = series(args, "candidate", dict(extra, TERSE_COMPRESSOR=args.candidate), False)
    ok, why = judge("candidate", cand, band, args.min_ratio)
    neg = series(args, "negative", dict(extra, TERSE_COMPRESSOR=args.negative,
                                        TERSE_ERROR_FEEDBACK="0"), False)
    neg_ok, neg_why = judge("negative", neg, band, args.min_ratio)

    print("# candidate %s: %s%s" % (args.candidate, "PASS" if ok else "FAIL",
                                    "" if ok else " (" + "; ".join(why) + ")"))
    print("# negative control %s without error feedback: %s" %
          (args.negative, "fails the check, as it must" if not neg_ok
           else "PASSES the check: the check cannot tell good from bad"))
    return 0 if (ok and not neg_ok) else 1


if __name__ == "__main__":
    sys.exit(main())
