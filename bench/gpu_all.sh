#!/usr/bin/env bash
# One command for the GPU machine (issue 6): configure with CUDA, build with -j16, run the gpu
# tests (ctest -L gpu), then the kernel benchmark; logs and tables go to ${OUT:-out}/.
#   bash bench/gpu_all.sh            (from the repository root, or anywhere)
# CUnit comes from the .deb files in .deps (dpkg -x into a prefix under /tmp) when the system
# has none; real gradients from .data/gradients when present. compute-sanitizer (memcheck) runs
# over the gpu tests when it is installed and GPU_ALL_SANITIZER is not 0; GPU_ALL_TESTS=0 skips
# the tests, GPU_ALL_PROFILE="bench args" adds an Nsight Systems per-kernel table (prof*.csv), or
# ncu's (metrics GPU_ALL_NCU_METRICS, default gpu__time_duration.sum) where nsys is missing. Budget: well under
# 8 minutes on an H100 (build ~1-2 min, tests ~1 min, benchmark ~1 min).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
BUILD=${BUILD:-/tmp/terse-gpu-build}
JOBS=${JOBS:-16}
START=$(date +%s)
log() { echo "== $* ($(( $(date +%s) - START )) s)" | tee -a "$OUT/summary.txt"; }

: > "$OUT/summary.txt"
log "host $(hostname) $(date -u +%FT%TZ) git $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv > "$OUT/gpu.txt" 2>&1 || true
cat "$OUT/gpu.txt" >> "$OUT/summary.txt"

CMAKE_ARGS=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DTERSE_ENABLE_CUDA=ON -DTERSE_ENABLE_MPI=OFF)
. "$ROOT/bench/gpu_cmake_args.sh" # CUnit from .deps, gradients from .data

log "configure"
cmake -S "$ROOT" -B "$BUILD" "${CMAKE_ARGS[@]}" > "$OUT/configure.log" 2>&1 \
    || { log "configure FAILED"; tail -30 "$OUT/configure.log"; exit 1; }
log "build"
# keep going past targets of other components that cannot build on this machine (e.g. without
# MPI headers); what the gpu tests and the benchmark need must build
cmake --build "$BUILD" -j "$JOBS" -- -k > "$OUT/build.log" 2>&1 \
    || { log "build had errors (kept going)"; grep -E "error|Error" "$OUT/build.log" | head -20 | tee -a "$OUT/summary.txt"; }
cmake --build "$BUILD" -j "$JOBS" --target test_compressors_cuda terse_static >> "$OUT/build.log" 2>&1 \
    || { log "build of the gpu tests FAILED"; grep -E "error|Error" "$OUT/build.log" | tail -40; exit 1; }

TEST_RC=0
if [ "${GPU_ALL_TESTS:-1}" != 0 ]; then
    log "gpu tests"
    (cd "$BUILD" && ctest -L gpu --output-on-failure --timeout 300) > "$OUT/ctest_gpu.log" 2>&1
    TEST_RC=$?
    tail -15 "$OUT/ctest_gpu.log" | tee -a "$OUT/summary.txt"
fi

if [ "${GPU_ALL_TESTS:-1}" != 0 ] && [ "${GPU_ALL_SANITIZER:-1}" != 0 ] &&
   command -v compute-sanitizer >/dev/null 2>&1; then
    log "compute-sanitizer memcheck (corrupted-payload suites)"
    for t in "$BUILD"/tests/test_*_cuda; do
        # the compressors' corrupted-payload suites; the comm binary has none: all of it
        filter=corrupt
        case "$(basename "$t")" in test_comm_cuda) filter=comm ;; esac
        log_f="$OUT/memcheck_$(basename "$t").log"
        timeout 240 compute-sanitizer --tool memcheck --error-exitcode 9 "$t" "$filter" \
            > "$log_f" 2>&1
        rc=$?
        # a run of no test checks nothing: say so instead of rc 0
        ran=$(awk '$1 == "tests" { print $3; exit }' "$log_f")
        [ "${ran:-0}" -gt 0 ] 2>/dev/null || rc="no tests ran"
        # rc 9 also counts API errors that libnccl makes and handles itself while it probes its
        # kernels (cudaFuncGetAttributes in ncclCommInitAll / ncclCommSplit): the accesses are
        # what matter, and the errors whose stack has no libnccl frame
        bad=$(grep -c "^========= Invalid " "$log_f") # one line per access, whatever its kind
        own=$(awk '/^========= Program hit/ { e = 1; next }
                   e && /in libnccl/ { e = 0 } e && /^========= $/ { own++; e = 0 }
                   END { print own + 0 }' "$log_f")
        echo "memcheck $(basename "$t") ($filter, ${ran:-0} tests) rc $rc: $bad invalid accesses, $own API errors outside libnccl" |
            tee -a "$OUT/summary.txt"
    done
fi

BENCH="$BUILD/bench/terse-bench-gpu"
if [ ! -x "$BENCH" ]; then
    # bench/CMakeLists.txt does not include bench/gpu.cmake yet: link it by hand
    log "building terse-bench-gpu outside CMake"
    CUDA_HOME=${CUDA_HOME:-$(dirname "$(dirname "$(command -v nvcc)")")}
    BENCH="$BUILD/terse-bench-gpu"
    cc -O2 -std=gnu11 -o "$BENCH" "$ROOT/bench/bench_gpu.c" -I"$ROOT/include" -I"$BUILD/include" \
        -I"$ROOT/comm/base" -I"$ROOT/compressors" -I"$CUDA_HOME/include" "$BUILD/libterse.a" \
        -L"$CUDA_HOME/lib64" -lcudart_static -lstdc++ -lpthread -ldl -lrt -lm >> "$OUT/build.log" 2>&1 \
        || { log "bench build FAILED"; tail -20 "$OUT/build.log"; }
fi
log "kernel benchmark"
timeout 300 "$BENCH" ${BENCH_ARGS:-} > "$OUT/bench_gpu.txt" 2> "$OUT/bench_gpu.err"
BENCH_RC=$?
cat "$OUT/bench_gpu.txt" >> "$OUT/summary.txt"
tail -5 "$OUT/bench_gpu.err" >> "$OUT/summary.txt"
if [ -n "${GPU_ALL_PROFILE:-}" ]; then
    # per-kernel times of the benchmark rows named in GPU_ALL_PROFILE (e.g. "-C topk100m"),
    # from Nsight Systems when the machine has it
    NSYS=$(command -v nsys || ls /usr/local/cuda*/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys 2>/dev/null | head -1)
    if [ -n "$NSYS" ]; then
        log "nsys profile $GPU_ALL_PROFILE"
        timeout 240 "$NSYS" profile -t cuda -o "$BUILD/prof" --force-overwrite true \
            "$BENCH" $GPU_ALL_PROFILE > "$OUT/prof_bench.txt" 2>&1
        timeout 120 "$NSYS" stats -r cuda_gpu_kern_sum -f csv -o "$OUT/prof" "$BUILD/prof.nsys-rep" \
            > /dev/null 2>&1
        ls "$OUT"/prof* >> "$OUT/summary.txt" 2>&1
    elif command -v ncu >/dev/null 2>&1; then
        log "ncu $GPU_ALL_PROFILE (no nsys)"
        timeout 300 ncu --metrics "${GPU_ALL_NCU_METRICS:-gpu__time_duration.sum}" --csv "$BENCH" $GPU_ALL_PROFILE \
            > "$OUT/prof_ncu.csv" 2> "$OUT/prof_ncu.err"
    else
        log "neither nsys nor ncu on this machine: no per-kernel profile"
    fi
fi
log "done: tests rc $TEST_RC, bench rc $BENCH_RC"
[ "$TEST_RC" = 0 ] && [ "$BENCH_RC" = 0 ]
