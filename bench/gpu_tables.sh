#!/usr/bin/env bash
# Rule 10 on the device path (issue 6): one model's gradient buffer cut into its layers
# (TERSE_LAYOUT from the model shapes of .data/gradients), terse-bench -T nccl on the GPUs with
# TERSE_DEVICE_TABLES=1 (quant, sign, cast, top-k and random-k layers of up to 2^20 elements in
# multi-tensor tables) and =0 (one launch per layer), each run with its own plain-NCCL row. Needs the build of
# gpu_all.sh (BUILD, default /tmp/terse-gpu-build) with terse-bench; writes $OUT/tables_*.txt.
#   bash bench/gpu_tables.sh [model, default resnet50] [shapes file]
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/out}
BUILD=${BUILD:-/tmp/terse-gpu-build}
MODEL=${1:-resnet50}
SHAPES=${2:-$ROOT/.data/gradients/model_shapes.txt}
SPECS=${TABLES_SPECS:-"quant:4 sign cast:bf16 topk:0.01 randomk:0.01 powersgd:4"}
mkdir -p "$OUT"
LAYOUT="$OUT/layout_$MODEL.txt"
# "model name d0 d1 ...": count = product; rows = d0, cols = the rest (0 0 for vectors)
awk -v m="$MODEL" '$1 == m { c = 1; for (i = 3; i <= NF; ++i) c *= $i;
    if (NF > 3) { print c, $3, c / $3, $2 } else { print c, 0, 0, $2 } }' "$SHAPES" > "$LAYOUT"
NL=$(wc -l < "$LAYOUT")
TOTAL=$(awk '{ s += $1 } END { print s }' "$LAYOUT")
[ "$NL" -gt 0 ] || { echo "no layers of $MODEL in $SHAPES"; exit 1; }
SMALL=$(awk '$1 <= 1048576' "$LAYOUT" | wc -l)
echo "== $MODEL: $NL layers ($SMALL of up to 2^20 elements), $TOTAL fp32 values" |
    tee "$OUT/tables.txt"
CARGS=()
for s in $SPECS; do CARGS+=(-C "$s"); done
for t in 1 0; do
    TERSE_LAYOUT="$LAYOUT" TERSE_DEVICE_TABLES=$t TERSE_MIN_BYTES=0 timeout 240 \
        "$BUILD/bench/terse-bench" -m allreduce -T nccl -b $((TOTAL * 4)) -e $((TOTAL * 4)) \
        -n "${TABLES_N:-50}" -w "${TABLES_W:-5}" "${CARGS[@]}" > "$OUT/tables_$t.txt" \
        2> "$OUT/tables_$t.err"
    echo "== TERSE_DEVICE_TABLES=$t rc $?" | tee -a "$OUT/tables.txt"
    cat "$OUT/tables_$t.txt" >> "$OUT/tables.txt"
    tail -3 "$OUT/tables_$t.err" >> "$OUT/tables.txt"
done
cat "$OUT/tables.txt"
