#!/bin/sh
# bench/cluster_agent.sh: Open MPI launch agent (plm_rsh_agent) for bench/cluster.sh.
#
# Open MPI calls it as it would call ssh: `agent [ssh options] host word...`, the words
# forming one shell command line (ssh joins them with spaces for the remote shell). Here the
# "host" is a network namespace made by cluster.sh, and the command runs inside it:
#   ip netns exec host sh -c "word..."
# Each host gets its own TMPDIR, because every simulated host has the same hostname and /tmp,
# and Open MPI names its session directories after the hostname.
set -eu

# Skip ssh options (those that take an argument consume the next word).
while [ $# -gt 0 ]; do
    case $1 in
    -[bcDEeFIiJLlmOopQRSWw]) shift 2 ;;
    -*) shift ;;
    *) break ;;
    esac
done
if [ $# -lt 2 ]; then
    echo "cluster_agent.sh: usage: cluster_agent.sh [ssh options] host command..." >&2
    exit 255
fi
host=$1
shift

# Only namespaces that exist, and only names a namespace can have.
case $host in
*/* | .*)
    echo "cluster_agent.sh: bad host name '$host'" >&2
    exit 255
    ;;
esac
if [ ! -e "/run/netns/$host" ]; then
    echo "cluster_agent.sh: no network namespace '$host' (is the cluster up?)" >&2
    exit 255
fi

state=${TSIM_STATE:-/run/terse-cluster}
tmp=$state/tmp/$host
mkdir -p "$tmp"
TMPDIR=$tmp
export TMPDIR
exec ip netns exec "$host" /bin/sh -c "$*"
