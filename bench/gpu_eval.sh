#!/usr/bin/env bash
# The whole GPU evaluation of the NCCL path (issue 7) in one command, on the 2-GPU machine:
#   bash bench/gpu_eval.sh [OUTDIR]            (default out/eval; under 9 minutes on 2 x H200)
# 1. configure with CUDA and build (CUnit from .deps when the system has none);
# 2. the gpu tests: ctest -L gpu (kernels, the NCCL device path, libterse-nccl.so under torch);
# 3. bench/gpu_nccl.sh when present: terse-bench over NCCL, NVLink and socket, with plain rows;
# 4. the DDP comparison (examples/ddp/train.py under torchrun, 2 GPUs, DDP_STEPS >= 300 steps)
#    on NVLink and on the socket path (NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1 NCCL_NET=Socket
#    NCCL_SOCKET_IFNAME=lo, as DESIGN.md section 7 measured the baseline): plain NCCL with
#    EVAL_SEEDS seeds, terse auto without and with the layout helper, terse powersgd:4 (with the
#    helper: layer-wise), PyTorch's powerSGD_hook (rank 4) and fp16_compress_hook; then the
#    compute floor (the same step on one GPU, no communication).
# Tables: OUTDIR/ddp_<path>.md (loss at the end, held-out loss, step time, bytes per step, ratio,
# ranks equal) and OUTDIR/summary.txt; every run's log beside them.
#
# Model size. DESIGN.md section 7's reference model (152 M parameters, d 1024, 12 layers, batch
# 8 x 512) has a 40 ms compute floor and a 195 ms plain step on the socket path: 300 steps of
# 16 runs of it take ~20 minutes. The evaluation runs a model with the same shape of problem --
# compute a small fraction of the plain socket step (the reference: 40 / 195 ms) -- that fits
# the budget: DDP_ARGS below (8 layers, d 512, batch 8 x 256, 25 M parameters, 101 MB of fp32
# gradients a step). `DDP_ARGS= bash bench/gpu_eval.sh` runs the reference model instead.
#
# Environment: BUILD (/tmp/terse-eval-build), JOBS (16), EVAL_PARTS ("build tests nccl ddp"),
# EVAL_TESTS (ctest -R regex within -L gpu; default all), EVAL_PATHS ("socket nvlink"),
# EVAL_MODES (the DDP rows to run, by mode name, e.g. "plain terse-auto compute-floor-1gpu";
# default all: with DDP_ARGS= it fits the reference model's rows into one call),
# EVAL_SEEDS (3), DDP_STEPS (300), DDP_ARGS, DDP_TIMEOUT (s per run, 90), EVAL_DEADLINE (s
# after start when no new DDP run starts, 500), TERSE_* (passed to the terse runs).
#
# Time (2 x H200, measured): build of libterse-nccl.so 13 s, the shim's gpu tests ~100 s, one
# DDP run of the default model 15-25 s (startup ~10 s of it): the 16 DDP runs take ~5.5 min.
# With the kernel tests and gpu_nccl.sh the whole may pass 9 minutes: EVAL_DEADLINE then skips
# the last runs (logged; extra plain seeds go last), or split it with EVAL_PARTS.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/out/eval}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
BUILD=${BUILD:-/tmp/terse-eval-build}
JOBS=${JOBS:-16}
PARTS=${EVAL_PARTS:-build tests nccl ddp}
PATHS_=${EVAL_PATHS:-socket nvlink}
SEEDS=${EVAL_SEEDS:-3}
STEPS=${DDP_STEPS:-300}
DDP_ARGS=${DDP_ARGS---layers 8 --d-model 512 --heads 8 --batch 8 --seq 256}
DDP_TIMEOUT=${DDP_TIMEOUT:-90}
DEADLINE=${EVAL_DEADLINE:-500}
PY=${PYTHON:-python3}
START=$(date +%s)
log() { echo "== $* ($(( $(date +%s) - START )) s)" | tee -a "$OUT/summary.txt"; }
has() { [[ " $PARTS " == *" $1 "* ]]; }

: > "$OUT/summary.txt"
log "host $(hostname) $(date -u +%FT%TZ) git $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader >> "$OUT/summary.txt" 2>&1 || true
"$PY" -c "import torch; print('torch', torch.__version__, 'nccl', torch.cuda.nccl.version(), 'gpus', torch.cuda.device_count())" \
    >> "$OUT/summary.txt" 2>&1 || true

# ---------------------------------------------------------------- 1. build
if has build; then
    CMAKE_ARGS=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DTERSE_ENABLE_CUDA=ON)
    command -v mpicc > /dev/null 2>&1 || CMAKE_ARGS+=(-DTERSE_ENABLE_MPI=OFF)
    . "$ROOT/bench/gpu_cmake_args.sh" # CUnit from .deps, gradients from .data
    log "configure"
    cmake -S "$ROOT" -B "$BUILD" "${CMAKE_ARGS[@]}" > "$OUT/configure.log" 2>&1 \
        || { log "configure FAILED"; tail -30 "$OUT/configure.log"; exit 1; }
    log "build"
    TARGETS=${EVAL_TARGETS:-}
    if [ -n "$TARGETS" ]; then
        # shellcheck disable=SC2086
        cmake --build "$BUILD" -j "$JOBS" --target $TARGETS > "$OUT/build.log" 2>&1
    else
        cmake --build "$BUILD" -j "$JOBS" -- -k > "$OUT/build.log" 2>&1
    fi || { log "build had errors"; grep -E "error|Error" "$OUT/build.log" | head -20 | tee -a "$OUT/summary.txt"; }
fi
SHIM="$BUILD/comm/libterse-nccl.so"
[ -f "$SHIM" ] || { log "no $SHIM: cannot run the terse rows"; }
if [ -f "$SHIM" ]; then
    bash "$ROOT/tests/comm/shim_deps_test.sh" nccl "$SHIM" | tee -a "$OUT/summary.txt"
fi

# ---------------------------------------------------------------- 2. gpu tests
if has tests && [ -d "$BUILD" ]; then
    log "gpu tests"
    # gpu_nccl.sh runs the NCCL device-path runner itself (with its watchdog): not twice
    EXCL=""
    if has nccl && [ -f "$ROOT/bench/gpu_nccl.sh" ]; then EXCL="-E ^comm_cuda$"; fi
    # shellcheck disable=SC2086
    (cd "$BUILD" && ctest -L gpu ${EVAL_TESTS:+-R "$EVAL_TESTS"} $EXCL --output-on-failure \
        --timeout 300) > "$OUT/ctest_gpu.log" 2>&1
    log "ctest rc $?"
    grep -E "tests passed|Passed|Failed|\*\*\*|Skipped|Not Run" "$OUT/ctest_gpu.log" | tail -30 \
        | tee -a "$OUT/summary.txt"
fi

# ---------------------------------------------------------------- 3. terse-bench over NCCL
if has nccl && [ -f "$ROOT/bench/gpu_nccl.sh" ]; then
    log "bench/gpu_nccl.sh"
    BUILD="$BUILD" JOBS="$JOBS" bash "$ROOT/bench/gpu_nccl.sh" "$OUT/nccl" > "$OUT/gpu_nccl.log" 2>&1
    log "gpu_nccl.sh rc $?"
    tail -40 "$OUT/nccl/summary.txt" >> "$OUT/summary.txt" 2> /dev/null || true
fi

# ---------------------------------------------------------------- 4. DDP comparison
ddp_run() { # path name seed [env...] -- [train.py args...]
    local path=$1 name=$2 seed=$3
    shift 3
    local envs=() args=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do envs+=("$1"); shift; done
    [ $# -gt 0 ] && shift
    args=("$@")
    local log_="$OUT/ddp_${path}_${name}_s${seed}.log"
    if [ -n "${EVAL_MODES:-}" ] && [[ " $EVAL_MODES " != *" $name "* ]]; then
        return # not asked for
    fi
    if [ $(( $(date +%s) - START )) -gt "$DEADLINE" ]; then
        log "ddp $path $name seed $seed: skipped (past EVAL_DEADLINE)"
        return
    fi
    local netenv=()
    [ "$path" = socket ] && netenv=(NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1 NCCL_NET=Socket NCCL_SOCKET_IFNAME=lo)
    # shellcheck disable=SC2086
    env "${netenv[@]}" "${envs[@]}" timeout "$DDP_TIMEOUT" "$PY" -m torch.distributed.run \
        --standalone --nproc_per_node "${NPROC:-2}" "$ROOT/examples/ddp/train.py" --steps "$STEPS" \
        --seed "$seed" --mode "$name" --log-every 50 $DDP_ARGS "${args[@]}" > "$log_" 2>&1
    local rc=$?
    local res
    res=$(grep '^RESULT' "$log_" | tail -1)
    [ -n "$res" ] || res="RESULT mode $name seed $seed failed rc $rc"
    echo "path $path $res" >> "$OUT/ddp_results.txt"
    log "ddp $path $name seed $seed rc $rc: ${res#RESULT }"
}

if has ddp; then
    : > "$OUT/ddp_results.txt"
    T=()
    [ -f "$SHIM" ] && T=(LD_PRELOAD="$SHIM")
    H=(TERSE_TORCH_HELPER=1 PYTHONPATH="$ROOT/examples/ddp/terse_helper")
    # every path's single-seed rows first, then the extra plain seeds: a run cut short by
    # EVAL_DEADLINE loses seeds, not whole paths
    for path in $PATHS_; do
        log "ddp comparison: $path ($STEPS steps, $DDP_ARGS)"
        ddp_run "$path" plain 1
        if [ -f "$SHIM" ]; then
            ddp_run "$path" terse-auto 1 "${T[@]}"
            ddp_run "$path" terse-auto-helper 1 "${T[@]}" "${H[@]}"
            ddp_run "$path" terse-powersgd4-helper 1 "${T[@]}" "${H[@]}" TERSE_COMPRESSOR=powersgd:4
        fi
        ddp_run "$path" powerSGD_hook 1 -- --hook powersgd
        ddp_run "$path" fp16_hook 1 -- --hook fp16
    done
    for path in $PATHS_; do
        for s in $(seq 2 "$SEEDS"); do
            ddp_run "$path" plain "$s"
        done
    done
    # the compute floor: the same step on one GPU (DDP over one rank moves no bytes), shown
    # in the first path's table -- the step time no compressor can beat
    for path in $PATHS_; do
        NPROC=1 ddp_run "$path" compute-floor-1gpu 1
        break
    done
    # beyond the issue's list, last (the deadline drops it first): a fixed uniform compressor
    # through the shim, what the wire path gives without the planner
    if [ -f "$SHIM" ]; then
        for path in $PATHS_; do
            ddp_run "$path" terse-quant4 1 "${T[@]}" TERSE_COMPRESSOR=quant:4
        done
    fi
    "$PY" - "$OUT" <<'PYEOF'
import collections, statistics, sys
out = sys.argv[1]
rows = collections.defaultdict(list)
for line in open(out + "/ddp_results.txt"):
    w = line.split()
    path = w[1]
    kv = dict(zip(w[3::2], w[4::2]))
    rows[path].append(kv)
for path, rs in rows.items():
    plain = [r for r in rs if r.get("mode") == "plain" and "heldout" in r]
    band = None
    if len(plain) >= 2:
        hs = [float(r["heldout"]) for r in plain]
        ls = [float(r["loss"]) for r in plain]
        band = (min(hs), max(hs), min(ls), max(ls))
    pt = statistics.mean(float(r["step_ms"]) for r in plain) if plain else None
    with open("%s/ddp_%s.md" % (out, path), "w") as f:
        f.write("| mode | seed | loss (last 20) | held-out loss | step ms | vs plain | MB sent/step | ratio | bytes from | ranks equal |\n")
        f.write("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
        for r in rs:
            if "heldout" not in r:
                f.write("| %s | %s | failed | | | | | | | |\n" % (r.get("mode"), r.get("seed")))
                continue
            sp = ("%.2fx" % (pt / float(r["step_ms"]))) if pt else ""
            f.write("| %s | %s | %s | %s | %s | %s | %.1f | %s | %s | %s |\n" % (
                r["mode"], r["seed"], r["loss"], r["heldout"], r["step_ms"], sp,
                float(r["bytes_per_step"]) / 1e6, r["ratio"], r["bytes_from"], r["ranks_equal"]))
        if band:
            f.write("\nplain band (%d seeds): held-out %.4f .. %.4f, train loss %.4f .. %.4f; "
                    "mean plain step %.2f ms\n" % (len(plain), band[0], band[1], band[2], band[3], pt))
            for r in rs:
                if r.get("mode") != "plain" and "heldout" in r:
                    h = float(r["heldout"])
                    f.write("- %s: held-out %.4f %s the plain band\n" % (
                        r["mode"], h, "inside" if band[0] <= h <= band[1] else
                        ("below" if h < band[0] else "above")))
    print(open("%s/ddp_%s.md" % (out, path)).read())
PYEOF
    for path in $PATHS_; do
        [ -f "$OUT/ddp_$path.md" ] && { echo "## DDP, $path"; cat "$OUT/ddp_$path.md"; } >> "$OUT/summary.txt"
    done
fi
log "done"
