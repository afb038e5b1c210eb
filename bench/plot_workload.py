#!/usr/bin/env python3
"""bench/plot_workload.py: a PNG of step time and error from terse-bench JSON lines.

    python3 bench/plot_workload.py OUT.png RUN.json [RUN.json ...]

Reads the rows of `terse-bench -m workload -J RUN.json` (one per model and setting) and of
`terse-bench -m allreduce -J RUN.json` (one per compressor and size), from any number of
files, and draws two panels:
  left:  step time (ms, log scale) against the message size in bytes per rank (log scale),
         one line per setting (workload: one point per model; allreduce: one per size)
  right: relative error of the result against the same x axis (log scale; 0 is drawn at
         the bottom of the axis, as for the plain rows)
Each point of a workload row is labelled with its speed-up over plain MPI. Rows with
#wrong > 0 are drawn with a red cross: they are bugs, not data.
When every row is a workload row and all of one size (one model), the x axis is the setting
instead (bars: step time with the speed-up over plain MPI, and relative error).

Needs matplotlib (Debian: apt-get install python3-matplotlib); the CI does not run it.
"""
import json
import sys
from collections import defaultdict


def load(paths):
    rows = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                r = json.loads(line)
                if r.get("mode") == "workload" and "setting" in r:
                    rows.append({"setting": r["setting"], "size": r["size"],
                                 "time_ms": r["time_ms"], "relerr": r["relerr"],
                                 "wrong": r["wrong"], "label": r["model"],
                                 "speedup": r.get("speedup")})
                elif r.get("mode") == "allreduce" and "compressor" in r:
                    rows.append({"setting": "plain" if r["compressor"] == "none"
                                 else r["compressor"], "size": r["size"],
                                 "time_ms": r["time_us"] / 1e3, "relerr": r["relerr"],
                                 "wrong": r["wrong"], "label": None, "speedup": None})
    return rows


def plot_settings(plt, rows, out):
    """One model: bars of step time and relative error per setting."""
    settings = []
    for r in rows:
        if r["setting"] not in settings:
            settings.append(r["setting"])
    settings.sort(key=lambda s: (s != "plain", s != "auto"))
    last = {r["setting"]: r for r in rows}  # the last run of a setting wins
    fig, (ax_t, ax_e) = plt.subplots(1, 2, figsize=(12, 4.8))
    xs = range(len(settings))
    colors = ["black" if s == "plain" else "C%d" % i for i, s in enumerate(settings)]
    times = [last[s]["time_ms"] for s in settings]
    errs = [last[s]["relerr"] for s in settings]
    ax_t.bar(xs, times, color=colors)
    ax_e.bar(xs, errs, color=colors)
    for i, s in enumerate(settings):
        r = last[s]
        note = "%.0f ms" % r["time_ms"]
        if s != "plain" and r["speedup"]:
            note += "\n%.1fx" % r["speedup"]
        ax_t.annotate(note, (i, r["time_ms"]), ha="center", va="bottom", fontsize=8)
        ax_e.annotate("%.2g" % r["relerr"] if r["relerr"] > 0 else "0 (reference)",
                      (i, r["relerr"]), ha="center", va="bottom", fontsize=8)
        if r["wrong"]:
            for ax, y in ((ax_t, r["time_ms"]), (ax_e, r["relerr"])):
                ax.plot([i], [y], marker="x", color="red", markersize=14)
    for ax in (ax_t, ax_e):
        ax.set_xticks(list(xs))
        ax.set_xticklabels(settings)
        ax.set_xlabel("setting")
        ax.grid(True, axis="y", linewidth=0.3)
    name, size = rows[0]["label"], rows[0]["size"]
    ax_t.set_ylabel("step time (ms, slowest rank)")
    ax_e.set_ylabel("relative error against plain MPI_Allreduce")
    ax_t.set_title("%s: one allreduce of %.0f MiB per step" % (name, size / 1048576.0))
    ax_e.set_title("%s: error of the result" % name)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print("plot_workload.py: wrote %s (%d settings)" % (out, len(settings)))
    return 0


def main(argv):
    if len(argv) < 3:
        sys.stderr.write(__doc__)
        return 2
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.stderr.write("plot_workload.py: needs matplotlib (apt-get install python3-matplotlib)\n")
        return 2
    rows = load(argv[2:])
    if not rows:
        sys.stderr.write("plot_workload.py: no workload or allreduce rows in %s\n" % argv[2:])
        return 1
    if all(r["label"] is not None for r in rows) and len({r["size"] for r in rows}) == 1:
        return plot_settings(plt, rows, argv[1])
    by_setting = defaultdict(list)
    for r in rows:
        by_setting[r["setting"]].append(r)
    fig, (ax_t, ax_e) = plt.subplots(1, 2, figsize=(12, 4.8))
    positive = [r["relerr"] for r in rows if r["relerr"] > 0]
    floor = min(positive) / 10 if positive else 1e-8
    for setting in sorted(by_setting, key=lambda s: (s != "plain", s != "auto", s)):
        pts = sorted(by_setting[setting], key=lambda r: r["size"])
        xs = [r["size"] for r in pts]
        style = dict(marker="o", linestyle="-" if len(pts) > 1 else "none", label=setting)
        if setting == "plain":
            style.update(color="black")
        line = ax_t.plot(xs, [r["time_ms"] for r in pts], **style)[0]
        ax_e.plot(xs, [max(r["relerr"], floor) for r in pts], color=line.get_color(),
                  marker=style["marker"], linestyle=style["linestyle"], label=setting)
        for r in pts:
            if r["wrong"]:
                for ax, y in ((ax_t, r["time_ms"]), (ax_e, max(r["relerr"], floor))):
                    ax.plot([r["size"]], [y], marker="x", color="red", markersize=12)
            if r["label"] is not None and r["speedup"] and setting != "plain":
                ax_t.annotate("%.1fx" % r["speedup"], (r["size"], r["time_ms"]),
                              textcoords="offset points", xytext=(4, 4), fontsize=7)
    models = sorted({(r["size"], r["label"]) for r in rows if r["label"]})
    for size, name in models:
        ax_t.axvline(size, color="grey", linewidth=0.5, linestyle=":")
        ax_t.annotate(name, (size, 0), xycoords=("data", "axes fraction"), xytext=(2, 2),
                      textcoords="offset points", fontsize=7, rotation=90, color="grey")
    for ax in (ax_t, ax_e):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("message size per rank (bytes)")
        ax.grid(True, which="both", linewidth=0.3)
    ax_t.set_ylabel("step time (ms, slowest rank)")
    ax_e.set_ylabel("relative error of the result")
    ax_t.set_title("time per allreduce step")
    ax_e.set_title("error against plain MPI_Allreduce")
    ax_t.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(argv[1], dpi=120)
    print("plot_workload.py: wrote %s (%d rows)" % (argv[1], len(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
