#!/bin/bash
# libterse-nccl.so without a GPU (ctest shim_nccl_cpu, label cpu): tests/comm/shim_nccl_cpu.c
# over the stand-in NCCL of fake_nccl.c, with CUDA_VISIBLE_DEVICES empty.
#   shim_nccl_cpu.sh          with SHIM (the library) and PROG (shim_nccl_cpu) set
# Checks: every call passes through exactly and the results hash equals a run without the
# shim; the shim warns once for each reason (nonblocking communicator, one it never saw being
# created, a group, a capture state it cannot read); no other error; the exit warning when a
# libnccl is loaded but no ncclAllReduce came through.
set -u
tmp=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; for f in "$tmp"/*; do echo "--- $f"; tail -30 "$f"; done; exit 1; }
export CUDA_VISIBLE_DEVICES=
"$PROG" run > "$tmp/out.plain" 2> "$tmp/err.plain" || fail "run without the shim failed"
LD_PRELOAD="$SHIM" TERSE_COMPRESSOR=quant:4 "$PROG" run > "$tmp/out.shim" 2> "$tmp/err.shim" \
    || fail "run with the shim failed"
grep -q 'shim 0 failures 0' "$tmp/out.plain" || fail "the plain run did not run alone"
grep -q 'shim 1 failures 0' "$tmp/out.shim" || fail "the shim was not loaded or a check failed"
a=$(awk '/^results/ {print $2}' "$tmp/out.plain")
b=$(awk '/^results/ {print $2}' "$tmp/out.shim")
[ -n "$a" ] && [ "$a" = "$b" ] || fail "results differ: $a vs $b"
for w in "nonblocking communicator" "created before terse was loaded" \
         "inside ncclGroupStart/End" "CUDA cannot tell"; do
    [ "$(grep -c "$w" "$tmp/err.shim")" -eq 1 ] || fail "not warned exactly once: $w"
done
grep 'TERSE ERROR' "$tmp/err.shim" | grep -v 'terse_nccl_register_layout' | grep -q . \
    && fail "unexpected errors"
LD_PRELOAD="$SHIM" "$PROG" idle > "$tmp/out.idle" 2> "$tmp/err.idle" || fail "idle run failed"
grep -q "libnccl was loaded but no ncclAllReduce" "$tmp/err.idle" || fail "no exit warning"
grep -q "libnccl was loaded" "$tmp/err.shim" && fail "exit warning although calls came through"
echo "ok: pass-through exact ($a), one warning per reason, exit warning"
