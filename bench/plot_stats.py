#!/usr/bin/python3
"""Plot terse telemetry (TERSE_STATS JSON lines) as a PNG.

    TERSE_STATS=/tmp/terse_%r.jsonl mpirun ... ./train
    python3 bench/plot_stats.py /tmp/terse_0.jsonl -o stats.png [--key KEY]

One line per allreduce per rank (written by comm/terse.c, sched_telemetry):
  step, key (the layout), seconds, bytes (handed to the transport, statistics and agreement
  traffic included), plain_bytes (a plain ring allreduce of the same buffer), sq_err (squared
  error of this rank's compressed input), sq_norm, mem (terse's memory in use), plan (checksum
  of the plan in force), plan_seconds, layers: [{layer, count, cmp, family, param,
  payload_bytes, sq_err_pred}].

The PNG has three panels: bytes sent per step (with the plain allreduce for reference), the
relative error per step (measured) and the predicted squared error per layer over the steps,
and the compressor of each layer over the steps. Needs matplotlib (Debian: python3-matplotlib;
run it with /usr/bin/python3 where another python3 comes first on PATH).
"""
import argparse
import json
import sys


def load(paths, key):
    rows = []
    for path in paths:
        with open(path) as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    sys.exit("%s:%d: not JSON (%s)" % (path, n, e))
    if not rows:
        sys.exit("no telemetry lines")
    if key is None:
        # the layout with the most bytes: the gradient bucket
        tot = {}
        for r in rows:
            tot[r["key"]] = tot.get(r["key"], 0) + r["plain_bytes"]
        key = max(tot, key=tot.get)
    rank0 = min(r["rank"] for r in rows)
    return [r for r in rows if r["key"] == key and r["rank"] == rank0], key


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="+", help="TERSE_STATS files (one rank is plotted)")
    ap.add_argument("-o", "--output", default="terse_stats.png")
    ap.add_argument("--key", help="layout key (default: the largest)")
    args = ap.parse_args()
    rows, key = load(args.files, args.key)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("plot_stats.py needs matplotlib (Debian: apt-get install python3-matplotlib)")

    steps = [r["step"] for r in rows]
    names = [l["layer"] for l in rows[-1]["layers"]]
    fig, ax = plt.subplots(3, 1, figsize=(10, 11), sharex=True)

    ax[0].plot(steps, [r["bytes"] for r in rows], label="terse bytes sent")
    ax[0].plot(steps, [r["plain_bytes"] for r in rows], "--", label="plain allreduce")
    ax[0].set_yscale("log")
    ax[0].set_ylabel("bytes per step (rank %d)" % rows[0]["rank"])
    tot_t = sum(r["bytes"] for r in rows)
    tot_p = sum(r["plain_bytes"] for r in rows)
    ax[0].set_title("layout %s: %d steps, ratio %.2f (plain / terse bytes)"
                    % (key, len(rows), tot_p / max(tot_t, 1)))
    ax[0].legend()

    for i, name in enumerate(names):
        xs, ys = [], []
        for r in rows:
            if i < len(r["layers"]) and r["layers"][i]["sq_err_pred"] > 0:
                xs.append(r["step"])
                ys.append(r["layers"][i]["sq_err_pred"])
        if xs:
            ax[1].plot(xs, ys, label="%s (predicted)" % name)
    meas = [(r["step"], r["sq_err"]) for r in rows if r["sq_err"] > 0]
    if meas:
        ax[1].plot([m[0] for m in meas], [m[1] for m in meas], "k.", ms=2,
                   label="all layers (measured, this rank)")
    ax[1].set_yscale("log")
    ax[1].set_ylabel("squared error")
    ax[1].legend(fontsize=7)

    fams = sorted({l["cmp"] for r in rows for l in r["layers"]})
    for i, name in enumerate(names):
        ax[2].scatter(steps, [fams.index(r["layers"][i]["cmp"]) + 0.08 * i for r in rows],
                      s=3, label=name)
    ax[2].set_yticks(range(len(fams)))
    ax[2].set_yticklabels(fams)
    ax[2].set_xlabel("step")
    ax[2].set_ylabel("compressor")
    ax[2].legend(fontsize=7, markerscale=3)
    fig.tight_layout()
    fig.savefig(args.output, dpi=100)
    print("wrote %s (%d steps of layout %s)" % (args.output, len(rows), key))


if __name__ == "__main__":
    main()
