#!/bin/sh
# bench/cluster_rank.sh: per-rank wrapper that bench/cluster.sh puts in front of the command
# when Open MPI's shared-memory btl (vader) is enabled. Every simulated host shares this
# machine's hostname and /dev/shm, and vader names its segments after the hostname, job and
# local rank: local rank 0 of two hosts would map the same segment. Give each host (network
# namespace) its own backing directory instead.
set -eu
ns=$(ip netns identify $$ 2>/dev/null || true)
if [ -z "$ns" ] || [ -z "${TSIM_STATE:-}" ]; then
    echo "cluster_rank.sh: not inside a cluster.sh host" >&2
    exit 1
fi
dir=$TSIM_STATE/tmp/$ns/shm
mkdir -p "$dir"
OMPI_MCA_btl_vader_backing_directory=$dir
export OMPI_MCA_btl_vader_backing_directory
exec "$@"
