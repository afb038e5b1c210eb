#!/usr/bin/python3
"""Plot training curves of the C trainer (its -o CSV files) as one PNG.

    python3 bench/plot_curves.py build/main_job/plain.csv build/main_job/auto-1gbit.csv \
        -o curves.png

Each CSV has the header step,train_loss,heldout_loss,heldout_acc,bytes_per_step,ratio (written
by examples/c_trainer/trainer.c every progress line); the label of a curve is its file name.
Panels: held-out loss and training loss against the step, held-out accuracy against the step,
and held-out loss against the cumulative bytes sent (what compression buys). Needs matplotlib
(Debian: python3-matplotlib; run it with /usr/bin/python3 where another python3 comes first).
"""
import argparse
import csv
import os
import sys


def load(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    need = {"step", "train_loss", "heldout_loss", "heldout_acc", "bytes_per_step"}
    if not rows or not need <= set(rows[0]):
        raise ValueError("%s: expected the C trainer's CSV header with columns %s" %
                         (path, ",".join(sorted(need))))
    return [{k: float(v) for k, v in r.items()} for r in rows]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", nargs="+")
    ap.add_argument("-o", "--output", required=True, help="PNG to write")
    args = ap.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.stderr.write("plot_curves: matplotlib is missing (Debian: python3-matplotlib)\n")
        return 2
    try:
        runs = [(os.path.splitext(os.path.basename(p))[0], load(p)) for p in args.csv]
    except (OSError, ValueError) as e:
        sys.stderr.write("plot_curves: %s\n" % e)
        return 1
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.5))
    for label, rows in runs:
        step = [r["step"] for r in rows]
        line, = ax[0].plot(step, [r["heldout_loss"] for r in rows], label=label + " held-out")
        ax[0].plot(step, [r["train_loss"] for r in rows], linestyle=":", color=line.get_color())
        ax[1].plot(step, [r["heldout_acc"] for r in rows], label=label)
        sent, prev, cum = [], 0.0, 0.0
        for r in rows:  # bytes_per_step is the mean over the progress interval
            cum += r["bytes_per_step"] * (r["step"] - prev)
            prev = r["step"]
            sent.append(cum / 2**20)
        ax[2].plot(sent, [r["heldout_loss"] for r in rows], marker=".", label=label)
    ax[0].set(xlabel="step", ylabel="loss (dotted: training)", title="loss")
    ax[1].set(xlabel="step", ylabel="held-out accuracy", title="held-out accuracy")
    ax[2].set(xlabel="MiB sent per rank (cumulative)", ylabel="held-out loss",
              title="held-out loss against bytes sent")
    ax[2].set_xscale("log")
    for a in ax:
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.output, dpi=110)
    print("plot_curves: wrote %s (%d runs)" % (args.output, len(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
