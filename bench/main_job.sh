#!/usr/bin/env bash
# The main job: a real compressed training run against plain, with a summary table.
# Builds terse (release) if needed, then trains the C trainer's byte-level language model on the
# Python standard library's sources with 4 MPI ranks: with a plain MPI_Allreduce, through terse's
# scheduler (auto), and through uniform quant:4, and prints the summaries side by side.
# Usage: bash bench/main_job.sh [steps]   (env: NP=4, BUILD=build, TERSE_* as usual)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-600}
NP=${NP:-4}
BUILD=${BUILD:-build}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl=self,vader,tcp OMPI_MCA_btl_vader_single_copy_mechanism=none
if [ ! -x "$BUILD/examples/c_trainer/c_trainer" ]; then
    cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$BUILD" -j "$(nproc)" >/dev/null
fi
MPIRUN=(mpirun -np "$NP" --oversubscribe --allow-run-as-root --bind-to none)
OUT=${OUT_DIR:-$BUILD/main_job}
mkdir -p "$OUT"

run() { # label, extra environment...
    local label=$1; shift
    echo "== $label: $NP ranks, $STEPS steps =="
    env "$@" "${MPIRUN[@]}" $(for kv in "$@"; do printf -- '-x %s ' "${kv%%=*}"; done) \
        "$BUILD/examples/c_trainer/c_trainer" -s "$STEPS" -o "$OUT/$label.csv" -L "$label" \
        $( [ "$label" = plain ] && echo -P ) | tee "$OUT/$label.log"
    echo
}
# plain: MPI_Allreduce, no terse. auto: the scheduler with its cost model told the link is
# 1 Gbit/s (this machine's shared memory is fast enough that compressing would not pay, and
# auto would rightly send everything uncompressed). quant:4: the uniform reference setting.
run plain
run auto-1gbit TERSE_COMPRESSOR=auto TERSE_LINK_BANDWIDTH=1.25e8 TERSE_STATS="$OUT/auto-1gbit.%r.jsonl"
run quant4 TERSE_COMPRESSOR=quant:4
echo "== summary: $NP ranks, $STEPS steps, byte-level LM on the Python standard library =="
printf '# %-12s %6s %10s %10s %9s %14s %8s %9s %9s\n' run steps loss held-loss held-acc bytes/step ratio ms/step comm-ms
for l in plain auto-1gbit quant4; do grep -h -A1 '^# run' "$OUT/$l.log" | grep -v '^#'; done
# plots (python3-matplotlib, installed by .ci/setup): the training curves and auto's telemetry
if /usr/bin/python3 -c 'import matplotlib' 2>/dev/null; then
    /usr/bin/python3 bench/plot_curves.py "$OUT/plain.csv" "$OUT/auto-1gbit.csv" "$OUT/quant4.csv" \
        -o "$OUT/curves.png"
    /usr/bin/python3 bench/plot_stats.py "$OUT/auto-1gbit.0.jsonl" -o "$OUT/auto-1gbit-stats.png"
else
    echo "(no matplotlib: skipping the PNG plots; apt-get install python3-matplotlib)"
fi
