#!/bin/bash
# Tests of libterse-nccl.so from PyTorch on 2 GPUs (ctest label gpu; see extra.cmake).
#   shim_nccl_test.sh MODE        with SHIM (the library) and SRC (the source tree) set
#   (KEEP=1 keeps the temporary folder; exit 77 = skipped: no torch or fewer than 2 GPUs)
# Modes:
#   passthrough  90 calls terse must not touch (integer, double, MAX/MIN/PROD, small floats,
#                grouped large floats) are bit-identical with and without the shim
#                (compression on: TERSE_COMPRESSOR=quant:4); the group warning is logged
#   compress     fp32 SUM, bf16 SUM, fp32 AVG buckets: exact while the cycle is learned,
#                quant:4 sums afterwards, bitwise equal on both ranks every step
#   envdiff      rank 1 sets another TERSE_* value: both ranks pass through exactly, warning
#   badenv       rank 1 has an invalid TERSE_* value: the first float allreduce fails on both
#                ranks, the log names the variable
#   helper       train.py with TERSE_TORCH_HELPER=1 and terse not loaded gives the same
#                parameter checksum as without the helper (gradients bit-identical); with the
#                shim and powersgd:4, the helper's layouts bind and the checksum is equal on
#                both ranks
set -u
mode=$1
PY=${PYTHON:-python3}
tmp=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$tmp"' EXIT
fail() { echo "FAIL ($mode): $*"; echo "--- stdout"; cat "$tmp"/out* 2>/dev/null | tail -40;
         echo "--- stderr"; cat "$tmp"/err* 2>/dev/null | grep -v '^\s*$' | tail -40; exit 1; }
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.device_count() >= 2 else 1)" 2> /dev/null \
    || { echo "skipped: needs torch and 2 GPUs"; exit 77; }
run=("$PY" -m torch.distributed.run --standalone --nproc_per_node 2)
T=$SRC/tests/comm/shim_nccl_torch.py
export TERSE_LOG_LEVEL=${TERSE_LOG_LEVEL:-warn}

case $mode in
passthrough)
    SHIM_TEST_OUT="$tmp/plain" "${run[@]}" "$T" passthrough > "$tmp/out.plain" 2> "$tmp/err.plain" \
        || fail "plain run failed"
    SHIM_TEST_OUT="$tmp/shim" LD_PRELOAD="$SHIM" TERSE_COMPRESSOR=quant:4 TERSE_LOG_LEVEL=info \
        "${run[@]}" "$T" passthrough > "$tmp/out.shim" 2> "$tmp/err.shim" || fail "shim run failed"
    n=$(awk '/^combinations/ {print $2; exit}' "$tmp/plain.rank0")
    [ "${n:-0}" -ge 80 ] || fail "only ${n:-0} combinations"
    for r in 0 1; do
        [ -s "$tmp/shim.rank$r" ] || fail "no output of rank $r with the shim"
        diff "$tmp/plain.rank$r" "$tmp/shim.rank$r" > "$tmp/diff" \
            || { head "$tmp/diff"; fail "results of rank $r differ"; }
    done
    grep -q "inside ncclGroupStart/End" "$tmp/err.shim" || fail "no warning for the grouped calls"
    echo "ok: $n combinations bit-identical on 2 ranks"
    ;;
compress|envdiff)
    LD_PRELOAD="$SHIM" TERSE_COMPRESSOR=quant:4 "${run[@]}" "$T" "$mode" > "$tmp/out" 2> "$tmp/err" \
        || fail "run failed"
    [ "$(grep -c '^done' "$tmp/out")" -eq 2 ] || fail "did not finish"
    grep -q "loss allreduce wrong" "$tmp/out" && fail "the small allreduce is wrong"
    if [ "$mode" = compress ]; then
        # 3 qualifying calls a step, recur 3: the cycle locks at the last call of step 3
        awk '/^rank/ { s = $4; name = $5; r = $8; eq = $10;
                       exact = (name == "bf16sum") ? 5e-3 : 1e-6;
                       if (eq != 1) { print "not identical: " $0; bad = 1 }
                       if (s < 3 && r > exact) { print "compressed too early: " $0; bad = 1 }
                       if (s >= 4 && (r < 1e-2 || r > 0.6)) { print "not a quant:4 result: " $0; bad = 1 } }
             END { exit bad }' "$tmp/out" || fail "bad results"
        echo "ok: compressed after the cycle locked, identical on both ranks"
    else
        awk '/^rank/ { exact = ($5 == "bf16sum") ? 5e-3 : 1e-6;
                       if ($8 > exact || $10 != 1) { print "not passed through: " $0; bad = 1 } }
             END { exit bad }' "$tmp/out" || fail "compressed although the settings differ"
        grep -q "different TERSE_\* settings" "$tmp/err" || fail "no warning"
        echo "ok: both ranks passed through with a warning"
    fi
    ;;
badenv)
    LD_PRELOAD="$SHIM" TERSE_COMPRESSOR=quant:4 timeout 120 "${run[@]}" "$T" badenv > "$tmp/out" 2> "$tmp/err"
    for r in 0 1; do
        # not anchored: two ranks' lines can interleave in torchrun's combined output (seen
        # on the 2 x H200 machine: rank 0's line began in the middle of rank 1's)
        grep -q "rank $r badenv error" "$tmp/out" || fail "rank $r did not get an error"
    done
    grep -q "TERSE_MIN_BYTES" "$tmp/err" || fail "the log does not name the variable"
    grep -q "ncclInvalidArgument" "$tmp/err" || fail "the log does not say what the call returns"
    echo "ok: the call failed on both ranks"
    ;;
helper)
    TR=(--steps 12 --layers 2 --d-model 256 --heads 4 --batch 4 --seq 128 --log-every 0 --time-from 6)
    "${run[@]}" "$SRC/examples/ddp/train.py" "${TR[@]}" > "$tmp/out.plain" 2> "$tmp/err.plain" \
        || fail "plain run failed"
    TERSE_TORCH_HELPER=1 PYTHONPATH="$SRC/examples/ddp/terse_helper" \
        "${run[@]}" "$SRC/examples/ddp/train.py" "${TR[@]}" > "$tmp/out.helper" 2> "$tmp/err.helper" \
        || fail "helper run failed"
    a=$(awk '/^RESULT/ { for (i = 1; i < NF; ++i) if ($i == "checksum") print $(i + 1) }' "$tmp/out.plain")
    b=$(awk '/^RESULT/ { for (i = 1; i < NF; ++i) if ($i == "checksum") print $(i + 1) }' "$tmp/out.helper")
    [ -n "$a" ] && [ "$a" = "$b" ] || fail "checksums differ without terse: $a vs $b"
    LD_PRELOAD="$SHIM" TERSE_COMPRESSOR=powersgd:4 TERSE_LOG_LEVEL=info TERSE_TORCH_HELPER=1 \
        PYTHONPATH="$SRC/examples/ddp/terse_helper" \
        "${run[@]}" "$SRC/examples/ddp/train.py" "${TR[@]}" > "$tmp/out.terse" 2> "$tmp/err.terse" \
        || fail "terse run failed"
    grep -q "ranks_equal 1" "$tmp/out.terse" || fail "ranks differ under terse"
    grep -q "uses a registered layout" "$tmp/err.terse" || fail "no layout was bound"
    grep -q "bytes_from terse" "$tmp/out.terse" || fail "the counters were not read"
    echo "ok: helper bit-identical without terse ($a); layouts bound under terse"
    ;;
*)
    echo "unknown mode $mode"; exit 2 ;;
esac
