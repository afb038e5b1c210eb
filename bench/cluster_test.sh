#!/usr/bin/env bash
# bench/cluster_test.sh: CI correctness on a simulated 2-host, 1 Gbit/s cluster (issue 9 item 5).
#
#   bench/cluster_test.sh TERSE_BENCH [WORKDIR]
#
# Brings up 2 hosts with bench/cluster.sh (prefix terse-ci, subnet 10.78.0.0/24, so it does not
# meet a cluster someone brought up by hand), then with 4 ranks (2 per host):
#   1. terse-bench -m allreduce, quant:4 topk:0.01 powersgd:4 auto, 256 KiB .. 4 MiB, -c 1,
#      twice: flat (TERSE_HIERARCHY=flat) and hierarchical in chunks of 256 KiB
#      (TERSE_HIERARCHY=on, which must log "2 nodes x 2 ranks"): #wrong (elements differing
#      bitwise from rank 0's result, or non-finite) must be 0 in every row, every row must be
#      there, relerr finite.
#   2. terse-bench -m workload on a small model shape file written here (matrices, a conv, a
#      vector; 4.5 MiB) with TERSE_WARMUP_STEPS=1, so that the auto row's check step is
#      compressed by a scheduler plan, hierarchical (TERSE_HIERARCHY=on): #wrong (ranks whose
#      output hash differs from rank 0's, plus non-finite elements) must be 0 in every row,
#      every compressed row must compress and send inter-node bytes.
# Correctness only: speed is not asserted. Always tears the cluster down (trap).
#
# Exit status: 0 pass, 1 fail, 77 skipped (not root, no usable `ip netns`, tc or mpirun:
# ctest maps it through SKIP_RETURN_CODE).
set -uo pipefail

BENCH=${1:-}
WORK=${2:-$(mktemp -d /tmp/terse-cluster-test.XXXXXX)}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CLUSTER=$HERE/cluster.sh
export TSIM_PREFIX=${TSIM_PREFIX:-terse-ci}
export TSIM_NET=${TSIM_NET:-10.78.0}
export TSIM_TIMEOUT=${TSIM_TIMEOUT:-45}

skip() {
    echo "SKIP: cluster_test: $*"
    exit 77
}

fail() {
    echo "FAIL: cluster_test: $*" >&2
    exit 1
}

[ -n "$BENCH" ] && [ -x "$BENCH" ] || { echo "usage: $0 path/to/terse-bench [workdir]" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || skip "needs root (network namespaces, veth links, tc)"
for tool in ip tc mpirun timeout awk; do
    command -v "$tool" >/dev/null 2>&1 || skip "needs '$tool'"
done
probe=${TSIM_PREFIX}-probe$$
if ! timeout 10 ip netns add "$probe" 2>/dev/null; then
    skip "ip netns is not usable here (no CAP_SYS_ADMIN or no netns support)"
fi
timeout 10 ip netns del "$probe" 2>/dev/null || true

mkdir -p "$WORK"
teardown() {
    "$CLUSTER" down >/dev/null 2>&1 || "$CLUSTER" down >&2 || true
}
trap teardown EXIT
trap 'exit 130' INT TERM

# Leftovers of an interrupted earlier run of this test would make `up` refuse.
"$CLUSTER" down >/dev/null 2>&1 || true
"$CLUSTER" up 2 1gbit || fail "cluster.sh up 2 1gbit failed"

status=0

# ---------------------------------------------------------------- 1. allreduce mode
for HIER in flat on; do
AR_JSON=$WORK/allreduce_$HIER.json
AR_LOG=$WORK/allreduce_$HIER.log
echo "== terse-bench -m allreduce, 4 ranks on 2 hosts at 1 Gbit/s, TERSE_HIERARCHY=$HIER"
TERSE_HIERARCHY=$HIER TERSE_HIER_CHUNK_BYTES=256K TERSE_LOG_LEVEL=info \
    "$CLUSTER" run 4 -- "$BENCH" -m allreduce -b 256K -e 4M -f 4 -n 2 -w 0 -c 1 \
    -C quant:4 -C topk:0.01 -C powersgd:4 -C auto -J "$AR_JSON" >"$AR_LOG" 2>&1 ||
    { cat "$AR_LOG"; fail "allreduce run failed"; }
grep -v " TERSE " "$AR_LOG"
if [ "$HIER" = on ] && ! grep -q "hierarchical allreduce: 2 nodes x 2 ranks" "$AR_LOG"; then
    echo "FAIL: TERSE_HIERARCHY=on did not build 2 nodes x 2 ranks" >&2
    status=1
fi
# 5 settings (plain + 4) x 3 sizes, each with wrong 0 and a finite relerr.
awk -v want=15 '
    /"mode":"allreduce"/ {
        rows++
        c = $0; sub(/.*"compressor":"/, "", c); sub(/".*/, "", c)
        s = $0; sub(/.*"size":/, "", s); sub(/,.*/, "", s)
        w = $0; sub(/.*"wrong":/, "", w); sub(/[,}].*/, "", w)
        e = $0; sub(/.*"relerr":/, "", e); sub(/[,}].*/, "", e)
        if (w != "0") { printf "row %s %s: #wrong %s\n", c, s, w; bad++ }
        if (e ~ /nan|inf/) { printf "row %s %s: relerr %s\n", c, s, e; bad++ }
    }
    END {
        if (rows != want) { printf "%d allreduce rows, expected %d\n", rows, want; bad++ }
        exit (bad > 0)
    }' "$AR_JSON" || { echo "FAIL: allreduce rows above ($HIER)" >&2; status=1; }
done

# ---------------------------------------------------------------- 2. workload mode
MODEL=$WORK/tiny_model.txt
cat >"$MODEL" <<'EOF'
# a small model for CI: 1179648 + 512 + 73728 + 128 + 128 + 65536 = 1319680 floats
embed.weight 1152 1024
embed.bias 512
conv.weight 128 64 3 3
conv.bias 128
norm.weight 128
fc.weight 256 256
EOF
WL_JSON=$WORK/workload.json
echo "== terse-bench -m workload (auto after a 1-step scheduler warm-up), 4 ranks on 2 hosts," \
    "hierarchical"
TERSE_WARMUP_STEPS=1 TERSE_HIERARCHY=on TERSE_HIER_CHUNK_BYTES=512K \
    "$CLUSTER" run 4 -- "$BENCH" -m workload -M "$MODEL" -n 2 -w 0 -c 1 \
    -C quant:4 -C topk:0.01 -C powersgd:4 -J "$WL_JSON" || fail "workload run failed"
awk -v want=5 '
    /"setting":/ {
        rows++
        c = $0; sub(/.*"setting":"/, "", c); sub(/".*/, "", c)
        w = $0; sub(/.*"wrong":/, "", w); sub(/[,}].*/, "", w)
        k = $0; sub(/.*"compressed_layers":/, "", k); sub(/[,}].*/, "", k)
        b = $0; sub(/.*"bytes_inter":/, "", b); sub(/[,}].*/, "", b)
        if (w != "0") { printf "workload %s: #wrong %s\n", c, w; bad++ }
        if ((c != "plain") && (c != "auto") && (k + 0 == 0)) {
            printf "workload %s: no layer compressed\n", c; bad++
        }
        if ((c != "plain") && (b + 0 == 0)) {
            printf "workload %s: no inter-node bytes (not hierarchical)\n", c; bad++
        }
    }
    END {
        if (rows != want) { printf "%d workload rows, expected %d\n", rows, want; bad++ }
        exit (bad > 0)
    }' "$WL_JSON" || { echo "FAIL: workload rows above" >&2; status=1; }

if [ "$status" = 0 ]; then
    echo "PASS: cluster_test: every row #wrong 0 (bitwise-equal outputs on all 4 ranks)"
    rm -rf "$WORK"
fi
exit "$status"
