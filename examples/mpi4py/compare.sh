#!/usr/bin/env bash
# The unmodified mpi4py trainer (train.py) twice: plain MPI, then under libterse-mpi.so, and one
# summary table (held-out metrics from the trainer; bytes sent per step and ratio from terse's own
# per-step telemetry, TERSE_STATS, since the trainer knows nothing of terse).
# Usage: bash examples/mpi4py/compare.sh [steps]
#   env: NP (4), BUILD (build), SHIM ($BUILD/comm/libterse-mpi.so), OUT_DIR ($BUILD/mpi4py),
#        PY (/usr/bin/python3: Debian's mpi4py), MIN_RATIO (0: fail below this terse ratio),
#        TERSE_* for the terse run (default: TERSE_COMPRESSOR=auto TERSE_LINK_BANDWIDTH=1.25e8,
#        the cost model of a 1 Gbit/s link, where compressing pays)
set -euo pipefail
cd "$(dirname "$0")/../.."
STEPS=${1:-300}
NP=${NP:-4}
BUILD=${BUILD:-build}
OUT=${OUT_DIR:-$BUILD/mpi4py}
PY=${PY:-/usr/bin/python3}
SHIM=${SHIM:-$(cd "$BUILD" 2>/dev/null && pwd)/comm/libterse-mpi.so}
[ -f "$SHIM" ] || { echo "compare.sh: no $SHIM (build terse first)" >&2; exit 1; }
mkdir -p "$OUT"
rm -f "$OUT"/stats.*.jsonl
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPIRUN=(mpirun -np "$NP" --oversubscribe --allow-run-as-root --bind-to none)
if ! env | grep -q '^TERSE_COMPRESSOR='; then
    export TERSE_COMPRESSOR=auto TERSE_LINK_BANDWIDTH=1.25e8
fi
TERSE_VARS=$(env | grep '^TERSE_' | cut -d= -f1 | sed 's/^/-x /' | tr '\n' ' ')

echo "== plain: $NP ranks, $STEPS steps =="
"${MPIRUN[@]}" "$PY" examples/mpi4py/train.py -s "$STEPS" -L plain | tee "$OUT/plain.log"
echo "== terse ($(env | grep '^TERSE_' | tr '\n' ' ')): $NP ranks, $STEPS steps =="
# shellcheck disable=SC2086
TERSE_STATS="$OUT/stats.%r.jsonl" "${MPIRUN[@]}" -x LD_PRELOAD="$SHIM" -x TERSE_STATS $TERSE_VARS \
    "$PY" examples/mpi4py/train.py -s "$STEPS" -L terse | tee "$OUT/terse.log"
"$PY" examples/mpi4py/summary.py --steps "$STEPS" "$OUT/plain.log" "$OUT/terse.log" \
    --stats "$OUT/stats.0.jsonl" --min-ratio "${MIN_RATIO:-0}"
