#!/bin/bash
# The shims' dynamic sections and exports (DESIGN.md sections 3 and 8, rule 8), CPU only.
#   shim_deps_test.sh nccl|mpi LIB
# nccl: no DT_NEEDED on libnccl, libcudart, libcublas or libmpi (a second NCCL pulled in by
#       soname would make torch run on it; a torch-only job must not load MPI); only nccl* and
#       terse_* exported, the interposed calls and terse_nccl_register_layout among them; no
#       CUDA runtime symbol visible (the static runtime stays hidden).
# mpi:  no DT_NEEDED on libnccl, libcudart or libcublas; only MPI_Allreduce and terse_*.
set -u
kind=$1
lib=$2
fail() { echo "FAIL ($kind): $*"; exit 1; }
command -v readelf > /dev/null || { echo "skipped: no readelf"; exit 0; }
command -v nm > /dev/null || { echo "skipped: no nm"; exit 0; }
[ -f "$lib" ] || fail "no library $lib"

needed=$(readelf -d "$lib" | awk '/\(NEEDED\)/ { gsub(/[\[\]]/, "", $5); print $5 }')
[ -n "$needed" ] || fail "readelf shows no DT_NEEDED at all (not a dynamic library?)"
case $kind in
nccl) bad='^lib(nccl|cudart|cublas|cublasLt|mpi)[._]' ;;
mpi)  bad='^lib(nccl|cudart|cublas|cublasLt)[._]' ;;
*)    fail "unknown kind" ;;
esac
if echo "$needed" | grep -Eq "$bad"; then
    fail "forbidden DT_NEEDED: $(echo "$needed" | grep -E "$bad" | tr '\n' ' ')"
fi

exports=$(nm -D --defined-only "$lib" | awk 'NF >= 3 && $2 ~ /^[TtDdBbRrVvWwi]$/ { print $3 }')
[ -n "$exports" ] || fail "nm shows no exported symbol"
case $kind in
nccl)
    other=$(echo "$exports" | grep -Ev '^(nccl|terse_)' || true)
    for s in ncclAllReduce ncclGroupStart ncclGroupEnd ncclCommInitRank ncclCommInitRankConfig \
             ncclCommInitAll ncclCommSplit ncclCommDestroy ncclCommAbort ncclCommFinalize \
             terse_nccl_register_layout terse_nccl_counters_get terse_init; do
        echo "$exports" | grep -qx "$s" || fail "$s is not exported"
    done
    echo "$exports" | grep -Eq '^(cuda|__cuda)' && fail "a CUDA runtime symbol is exported"
    ;;
mpi)
    other=$(echo "$exports" | grep -Ev '^(MPI_Allreduce$|terse_)' || true)
    echo "$exports" | grep -qx MPI_Allreduce || fail "MPI_Allreduce is not exported"
    ;;
esac
[ -z "$other" ] || fail "exports beyond the allowed prefixes: $(echo "$other" | head -5 | tr '\n' ' ')"
echo "ok: $(echo "$needed" | tr '\n' ' ')- $(echo "$exports" | wc -l) exports"
