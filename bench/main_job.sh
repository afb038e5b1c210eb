#!/usr/bin/env bash
# The main job: a real compressed training run against plain, with a summary table.
# Builds terse (release) if needed, then trains the C trainer's byte-level language model on the
# Python standard library's sources with 4 MPI ranks: once with a plain MPI_Allreduce, once through
# terse (TERSE_COMPRESSOR, default of the library), and prints both summaries side by side.
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
for v in $(env | grep -o '^TERSE_[A-Z_]*'); do MPIRUN+=(-x "$v"); done
OUT=${OUT_DIR:-$BUILD/main_job}
mkdir -p "$OUT"

echo "== plain MPI_Allreduce, $NP ranks, $STEPS steps =="
"${MPIRUN[@]}" "$BUILD/examples/c_trainer/c_trainer" -P -s "$STEPS" -o "$OUT/plain.csv" -L plain | tee "$OUT/plain.log"
echo
echo "== terse (TERSE_COMPRESSOR=${TERSE_COMPRESSOR:-default}), $NP ranks, $STEPS steps =="
"${MPIRUN[@]}" "$BUILD/examples/c_trainer/c_trainer" -s "$STEPS" -o "$OUT/terse.csv" -L terse | tee "$OUT/terse.log"
echo
echo "== summary: $NP ranks, $STEPS steps, byte-level LM on the Python standard library =="
printf '# %-12s %6s %10s %10s %9s %14s %8s %9s %9s\n' run steps loss held-loss held-acc bytes/step ratio ms/step comm-ms
grep -h -A1 '^# run' "$OUT/plain.log" "$OUT/terse.log" | grep -v '^#' | grep -v '^--'
