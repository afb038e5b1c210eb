#!/usr/bin/env bash
# The NCCL path on the GPU machine (issue 7) in one command: configure with CUDA, build the gpu
# tests of comm/ and terse-bench, run the NCCL device-path tests, then terse-bench -T nccl on
# NVLink (1 MiB .. 1 GiB) and on the socket path (1 MiB .. 256 MiB; NCCL_P2P_DISABLE=1
# NCCL_SHM_DISABLE=1 NCCL_NET=Socket NCCL_SOCKET_IFNAME=lo, as DESIGN.md section 7 measured
# the baseline), plain ncclAllReduce vs quant:4, quant:8, topk:0.01, powersgd:4 and auto.
#   bash bench/gpu_nccl.sh [OUTDIR]          (default out/nccl)
# Tables: OUTDIR/nvlink.txt, OUTDIR/socket.txt, OUTDIR/socket_mpirun.txt (the socket path with
# one process per rank under mpirun, when there is one); OUTDIR/summary.txt has the logs' tails
# (build logs, stderr and JSON rows stay beside BUILD).
# Environment: BUILD (default /tmp/terse-nccl-build), JOBS (16), BENCH_N (timed calls, 10),
# BENCH_W (warm-up calls, 14: auto needs TERSE_WARMUP_STEPS + 2 to have its plan in force),
# NVLINK_MAX (1G), SOCKET_MAX (256M), SPECS (the -C list), TEST_TIMEOUT, BENCH_TIMEOUT (s);
# SKIP_BENCH=1, BENCH_NVLINK=0, BENCH_SOCKET=0, BENCH_MPI=0 leave parts out.
# NCCL is never linked: the tests and terse-bench load libnccl.so.2 from LD_LIBRARY_PATH or
# TERSE_NCCL_LIBRARY; this script looks for the torch wheel's copy (the baseline's) first,
# then the system's. With mpirun on PATH and MPI in the build, MPIRUN=1 runs the bench as
# 2 processes (MPI only broadcasts the ncclUniqueId); the default is one thread per GPU.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/out/nccl}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
BUILD=${BUILD:-/tmp/terse-nccl-build}
JOBS=${JOBS:-16}
BENCH_N=${BENCH_N:-8}
BENCH_W=${BENCH_W:-14}
NVLINK_MAX=${NVLINK_MAX:-1G}
SOCKET_MAX=${SOCKET_MAX:-256M}
SPECS=${SPECS:-quant:4 quant:8 topk:0.01 powersgd:4 auto}
TEST_TIMEOUT=${TEST_TIMEOUT:-80}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-80}
START=$(date +%s)
log() { echo "== $* ($(( $(date +%s) - START )) s)" | tee -a "$OUT/summary.txt"; }

: > "$OUT/summary.txt"
log "host $(hostname) $(date -u +%FT%TZ) git $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader >> "$OUT/summary.txt" 2>&1 || true
nvidia-smi topo -m >> "$OUT/summary.txt" 2>&1 || true
env | grep -E '^NCCL_' | sort >> "$OUT/summary.txt" || true

# ---------------------------------------------------------------- NCCL to load at run time
find_nccl() {
    local py d
    for py in python3 python /usr/bin/python3; do
        command -v "$py" >/dev/null 2>&1 || continue
        d=$("$py" - 2>/dev/null <<'PYEOF'
import importlib.util, os
spec = importlib.util.find_spec("nvidia.nccl")
if spec and spec.submodule_search_locations:
    for base in spec.submodule_search_locations:
        lib = os.path.join(base, "lib")
        if os.path.exists(os.path.join(lib, "libnccl.so.2")):
            print(lib); break
PYEOF
)
        [ -n "$d" ] && { echo "$d"; return; }
    done
    d=$(ldconfig -p 2>/dev/null | awk '/libnccl\.so\.2 /{print $NF; exit}')
    [ -n "$d" ] && { dirname "$d"; return; }
    for d in /usr/local/cuda*/lib /usr/local/cuda*/lib64 /usr/lib/x86_64-linux-gnu; do
        [ -e "$d/libnccl.so.2" ] && { echo "$d"; return; }
    done
}
NCCL_DIR=$(find_nccl)
if [ -n "$NCCL_DIR" ]; then
    export LD_LIBRARY_PATH="$NCCL_DIR:${LD_LIBRARY_PATH:-}"
    log "libnccl.so.2 from $NCCL_DIR ($(ls -l "$NCCL_DIR"/libnccl.so.2* 2>/dev/null | head -1 | awk '{print $NF}'))"
else
    log "no libnccl.so.2 found: the tests will skip and the bench cannot run"
fi

# ---------------------------------------------------------------- configure and build
CMAKE_ARGS=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DTERSE_ENABLE_CUDA=ON)
if command -v mpicc >/dev/null 2>&1; then
    CMAKE_ARGS+=(-DTERSE_ENABLE_MPI=ON)
else
    CMAKE_ARGS+=(-DTERSE_ENABLE_MPI=OFF)
fi
. "$ROOT/bench/gpu_cmake_args.sh" # CUnit from .deps, gradients from .data
log "configure"
cmake -S "$ROOT" -B "$BUILD" "${CMAKE_ARGS[@]}" > "$BUILD.configure.log" 2>&1 \
    || { log "configure FAILED"; tail -30 "$BUILD.configure.log"; exit 1; }
log "build"
cmake --build "$BUILD" -j "$JOBS" --target test_comm_cuda terse-bench > "$BUILD.build.log" 2>&1 \
    || { log "build FAILED"; grep -E "error|Error" "$BUILD.build.log" | head -30 | tee -a "$OUT/summary.txt"; exit 1; }
if readelf -d "$BUILD/libterse.so" "$BUILD/bench/terse-bench" 2>/dev/null | grep -q 'NEEDED.*nccl'; then
    log "ERROR: something links libnccl"
fi

# ---------------------------------------------------------------- tests
log "gpu tests (comm: the NCCL device path)"
# A case whose collective hangs ends the runner through its watchdog (exit 3, naming the case):
# run again without it so the other cases still report (TNC_SKIP), at most 4 times.
export TNC_SKIP=""
: > "$OUT/test_comm_cuda.log"
for attempt in 1 2 3 4; do
    timeout "$TEST_TIMEOUT" "$BUILD/tests/test_comm_cuda" >> "$OUT/test_comm_cuda.log" 2>&1
    TEST_RC=$?
    [ "$TEST_RC" = 3 ] || break
    HUNG=$(grep -o 'WATCHDOG: case .* did not' "$OUT/test_comm_cuda.log" | tail -1 | sed 's/WATCHDOG: case //; s/ did not$//')
    log "case '$HUNG' hung: running the others again"
    TNC_SKIP="$TNC_SKIP|$HUNG"
done
grep -vE '^\s*$' "$OUT/test_comm_cuda.log" | grep -vE '^  \[' | tail -60 | tee -a "$OUT/summary.txt"
log "tests rc $TEST_RC"
# diagnostic: destroy a context and create another over the same communicator
TNC_RECREATE=1 timeout 40 "$BUILD/tests/test_comm_cuda" recreate > "$OUT/recreate.log" 2>&1
log "re-create diagnostic rc $? (124: hung; the phase notes are in recreate.log)"
grep -E 'recreate rank|passed|failed|Run Summary|tests ' "$OUT/recreate.log" | tail -12 >> "$OUT/summary.txt"
[ "${SKIP_BENCH:-0}" = 1 ] && exit "$TEST_RC"

# ---------------------------------------------------------------- benchmark
BENCH="$BUILD/bench/terse-bench"
CARGS=()
for s in $SPECS; do CARGS+=(-C "$s"); done
run_bench() { # name maxbytes [env...]
    local name=$1 max=$2
    shift 2
    local launch=()
    if [ "${MPIRUN:-0}" = 1 ] && command -v mpirun >/dev/null 2>&1; then
        launch=(mpirun -np 2 --allow-run-as-root --bind-to none -x LD_LIBRARY_PATH)
        for e in "$@"; do launch+=(-x "${e%%=*}"); done
    fi
    log "terse-bench -T nccl $name (1M .. $max)"
    env "$@" timeout "$BENCH_TIMEOUT" "${launch[@]}" "$BENCH" -m allreduce -T nccl -b 1M -e "$max" \
        -f 2 -n "$BENCH_N" -w "$BENCH_W" "${CARGS[@]}" -J "$BUILD.$name.json" \
        > "$OUT/$name.txt" 2> "$BUILD.$name.err"
    local rc=$?
    cat "$OUT/$name.txt" >> "$OUT/summary.txt"
    tail -8 "$BUILD.$name.err" >> "$OUT/summary.txt"
    log "$name rc $rc"
    return $rc
}
NV_RC=0
SO_RC=0
if [ "${BENCH_NVLINK:-1}" = 1 ]; then
    run_bench nvlink "$NVLINK_MAX"
    NV_RC=$?
fi
if [ "${BENCH_SOCKET:-1}" = 1 ]; then
    run_bench socket "$SOCKET_MAX" NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1 NCCL_NET=Socket \
        NCCL_SOCKET_IFNAME=lo
    SO_RC=$?
fi
if [ "${BENCH_MPI:-1}" = 1 ] && command -v mpirun >/dev/null 2>&1; then
    # the socket path again with one process per rank (as the baseline was measured)
    MPIRUN=1 run_bench socket_mpirun "$SOCKET_MAX" NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1 \
        NCCL_NET=Socket NCCL_SOCKET_IFNAME=lo
fi
log "done: tests rc $TEST_RC, nvlink rc $NV_RC, socket rc $SO_RC"
[ "$TEST_RC" = 0 ] && [ "$NV_RC" = 0 ] && [ "$SO_RC" = 0 ]
