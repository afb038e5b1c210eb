#!/usr/bin/env bash
# bench/cluster.sh: a simulated multi-host cluster on one machine (DESIGN.md section 6).
#
#   bench/cluster.sh up N [RATE] [DELAY]   N network namespaces ("hosts") on a bridge
#   bench/cluster.sh run NP -- cmd args... mpirun with NP ranks spread over the hosts
#   bench/cluster.sh bw [N [RATE [DELAY]]] plain-MPI bandwidth row (brings a cluster up and
#                                          down again when none is up)
#   bench/cluster.sh status                what is up, with the qdiscs
#   bench/cluster.sh down                  removes everything `up` made (idempotent)
#
# Layout: hosts terse-h0 .. terse-h<N-1>, each a network namespace with one interface veth0
# at 10.77.0.<i+1>/24; the other end of each veth pair, h<i>, is a port of bridge br0 inside
# a namespace of its own, terse-br. Nothing is created in the root namespace, and the test
# subnet exists only between these namespaces. Both ends of every link are shaped with tc:
# the host's egress (host -> bridge) and the bridge port's egress (bridge -> host), so each
# host has RATE up and RATE down, shared by all of its ranks, as with one NIC per machine.
#
# RATE is in tc's units: 1gbit is 1 Gbit/s (about 117 MB/s of TCP payload), 10gbit, 500mbit.
# Beware: tc reads "bps" as BYTES per second, so 1gbps would be 8 Gbit/s. "none" (or 0) leaves
# the links unshaped. DELAY (netem, e.g. 1ms, 200us) is added once to the host's egress, so
# a message between two hosts is delayed by DELAY and a round trip by 2 x DELAY.
#
# Ranks: `run` starts mpirun inside terse-h0 (so every orted reaches mpirun's out-of-band
# listener over the test subnet), with a hostfile of the namespaces' names and the launch
# agent bench/cluster_agent.sh turning "ssh host cmd" into "ip netns exec host sh -c cmd".
# Open MPI is restricted to pml ob1 with btl tcp,self on the test subnet (no UCX, no shared
# memory between hosts; all hosts share the hostname, /tmp and /dev/shm of this machine).
# Consecutive ranks share a host: NP=4 on 2 hosts puts ranks 0,1 on terse-h0 and 2,3 on
# terse-h1. Every process shares this machine's hostname and boot id, so a host hash alone
# cannot tell the hosts apart: terse's topology also hashes the network namespace, and
# TERSE_TOPOLOGY=<ranks-per-node> overrides it. So terse's hierarchical allreduce
# (TERSE_HIERARCHY=auto) sees NP / N ranks per node here; with the default btl its traffic
# inside a host goes over loopback TCP (CPU-bound on a small machine), with
# TSIM_BTL=vader,tcp,self over shared memory, as on a real node.
#
# Environment:
#   TSIM_PREFIX       name prefix of the namespaces (default terse)
#   TSIM_NET          first three octets of the /24 test subnet (default 10.77.0)
#   TSIM_BTL          Open MPI btl list (default tcp,self; vader,tcp,self lets
#                              ranks of one host use shared memory among themselves: each
#                              rank then starts through bench/cluster_rank.sh, which gives
#                              every host its own vader segment directory)
#   TSIM_MPIRUN_ARGS  extra mpirun arguments (split on spaces)
#   TSIM_TIMEOUT      seconds allowed to `run` (default 600)
# TERSE_*, LD_PRELOAD, LD_LIBRARY_PATH, ASAN_OPTIONS and UBSAN_OPTIONS are passed to the
# ranks with -x.
#
# Needs root (exit 2 otherwise). Exit status: 0 success, 1 failure, 2 usage or privileges,
# otherwise the status of the command that `run` started.
set -euo pipefail

PREFIX=${TSIM_PREFIX:-terse}
NET=${TSIM_NET:-10.77.0}
BTL=${TSIM_BTL:-tcp,self}
RUN_TIMEOUT=${TSIM_TIMEOUT:-600}
STEP_TIMEOUT=20                       # seconds allowed to each setup/teardown command
BRNS=${PREFIX}-br
STATE=/run/${PREFIX}-cluster          # state file, hostfile, per-host TMPDIRs
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
AGENT=${HERE}/cluster_agent.sh

die() {
    echo "cluster.sh: $*" >&2
    exit 1
}

usage() {
    sed -n '3,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "cluster.sh: needs root (network namespaces, veth links and tc); run it with sudo" >&2
        exit 2
    fi
    for tool in ip tc timeout; do
        command -v "$tool" >/dev/null 2>&1 || die "needs '$tool' (iproute2, coreutils)"
    done
}

# Time-bound wrappers: every command that touches the network stack gets STEP_TIMEOUT.
t() { timeout -k 5 "$STEP_TIMEOUT" "$@"; }
nsexec() {
    local ns=$1
    shift
    timeout -k 5 "$STEP_TIMEOUT" ip netns exec "$ns" "$@"
}

host_ns() { echo "${PREFIX}-h$1"; }

# Our namespaces, whatever state they are in.
our_namespaces() {
    t ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${PREFIX}-(h[0-9]+|br)\$" || true
}

is_up() { [ -f "$STATE/state" ]; }

# Bits per second of a tc rate ("1gbit", "500mbit", "1gbps" = bytes), or 0 for none.
rate_bits() {
    local r=$1
    case $r in
    none | 0 | unlimited) echo 0; return 0 ;;
    esac
    echo "$r" | awk '
        match($0, /^[0-9]+(\.[0-9]+)?/) {
            v = substr($0, 1, RLENGTH); u = tolower(substr($0, RLENGTH + 1));
            m["bit"] = 1; m["kbit"] = 1e3; m["mbit"] = 1e6; m["gbit"] = 1e9; m["tbit"] = 1e12;
            m["bps"] = 8; m["kbps"] = 8e3; m["mbps"] = 8e6; m["gbps"] = 8e9; m["tbps"] = 8e12;
            if ((u in m) && v > 0) { printf "%.0f\n", v * m[u]; exit 0 }
        }
        { exit 1 }'
}

check_delay() {
    case $1 in
    none | 0) return 0 ;;
    esac
    echo "$1" | grep -Eq '^[0-9]+(\.[0-9]+)?(us|ms|s)$'
}

# shape <namespace> <device> <rate> <rate-bits> <delay>
shape() {
    local ns=$1 dev=$2 rate=$3 bits=$4 delay=$5 burst parent=root
    if [ "$delay" != none ] && [ "$delay" != 0 ]; then
        # netem first, the token bucket as its child: delay, then rate.
        t tc -n "$ns" qdisc add dev "$dev" root handle 1: netem delay "$delay" limit 100000 ||
            die "cannot add a netem delay: this kernel may lack netem (CONFIG_NET_SCH_NETEM);" \
                "use DELAY none"
        parent="parent 1:1"
    fi
    if [ "$bits" -gt 0 ]; then
        # One millisecond of tokens (at least 32 KiB so that segmented GSO bursts pass), and a
        # 50 ms queue: deep enough for TCP to fill the link, shallow enough to keep RTT sane.
        burst=$((bits / 8 / 1000))
        [ "$burst" -lt 32768 ] && burst=32768
        # shellcheck disable=SC2086
        t tc -n "$ns" qdisc add dev "$dev" $parent handle 10: tbf rate "$rate" burst "$burst" \
            latency 50ms
    fi
}

cmd_up() {
    local n=${1:-} rate=${2:-1gbit} delay=${3:-none} bits i ns
    need_root
    if ! [[ $n =~ ^[0-9]+$ ]] || [ "$n" -lt 1 ] || [ "$n" -gt 250 ]; then
        echo "cluster.sh: up needs a host count 1..250" >&2
        exit 2
    fi
    bits=$(rate_bits "$rate") || {
        echo "cluster.sh: bad RATE '$rate' (e.g. 1gbit, 500mbit, 10gbit, none; 1gbps = 8 Gbit/s)" >&2
        exit 2
    }
    check_delay "$delay" || {
        echo "cluster.sh: bad DELAY '$delay' (e.g. 1ms, 200us, none)" >&2
        exit 2
    }
    if is_up || [ -n "$(our_namespaces)" ]; then
        die "a cluster (or its leftovers) is up already: run '$0 down' first"
    fi

    # Anything that fails (or an interrupt) from here on removes what was made so far.
    UP_DONE=0
    trap 'if [ "$UP_DONE" = 0 ]; then echo "cluster.sh: up failed, tearing down" >&2; cmd_down >/dev/null 2>&1 || true; fi' EXIT
    trap 'exit 130' INT TERM

    mkdir -p "$STATE"
    t ip netns add "$BRNS"
    t ip -n "$BRNS" link set lo up
    nsexec "$BRNS" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    t ip -n "$BRNS" link add br0 type bridge
    t ip -n "$BRNS" link set br0 up
    for ((i = 0; i < n; ++i)); do
        ns=$(host_ns "$i")
        t ip netns add "$ns"
        t ip -n "$ns" link set lo up
        # Both ends are created directly inside their namespaces.
        t ip link add "h$i" netns "$BRNS" type veth peer name veth0 netns "$ns"
        t ip -n "$BRNS" link set "h$i" master br0
        t ip -n "$BRNS" link set "h$i" up
        # No IPv6 on the test links: nothing but the test subnet carries traffic.
        nsexec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
        t ip -n "$ns" addr add "${NET}.$((i + 1))/24" dev veth0
        t ip -n "$ns" link set veth0 up
        shape "$ns" veth0 "$rate" "$bits" "$delay"
        shape "$BRNS" "h$i" "$rate" "$bits" none
        mkdir -p "$STATE/tmp/$ns"
    done
    printf 'hosts %s\nrate %s\nrate_bits %s\ndelay %s\nnet %s\n' "$n" "$rate" "$bits" "$delay" \
        "$NET" >"$STATE/state"
    UP_DONE=1
    trap - EXIT INT TERM
    echo "cluster up: $n hosts $(host_ns 0)..$(host_ns $((n - 1))) on ${NET}.0/24," \
        "rate $rate ($((bits / 1000000)) Mbit/s per direction per host, 0 = unshaped), delay $delay"
}

cmd_down() {
    local ns pid pids left
    need_root
    for ns in $(our_namespaces); do
        # Processes still inside (an orted or rank of an interrupted run) keep a namespace
        # alive after `ip netns del`: end them first, by pid.
        pids=$(t ip netns pids "$ns" 2>/dev/null || true)
        if [ -n "$pids" ]; then
            for pid in $pids; do kill -TERM "$pid" 2>/dev/null || true; done
            sleep 1
            for pid in $(t ip netns pids "$ns" 2>/dev/null || true); do
                kill -KILL "$pid" 2>/dev/null || true
            done
        fi
        t ip netns del "$ns" 2>/dev/null || true
    done
    rm -rf "$STATE"
    left=$(our_namespaces)
    if [ -n "$left" ]; then
        die "could not remove: $left"
    fi
    echo "cluster down: no ${PREFIX}-* namespaces left"
}

cmd_status() {
    local ns
    need_root
    if ! is_up; then
        echo "no cluster up"
        our_namespaces | sed 's/^/leftover namespace: /'
        return 0
    fi
    cat "$STATE/state"
    for ns in $(our_namespaces); do
        echo "== $ns"
        t ip -n "$ns" -brief addr | grep -v '^lo' || true
        t tc -n "$ns" qdisc show | grep -Ev 'noqueue|^qdisc (pfifo_fast|mq) ' || true
    done
}

state_get() { awk -v k="$1" '$1 == k {print $2}' "$STATE/state"; }

cmd_run() {
    local np=${1:-} hosts slots i args=() var
    need_root
    if ! [[ $np =~ ^[0-9]+$ ]] || [ "$np" -lt 1 ]; then
        echo "cluster.sh: run needs a rank count: run NP -- cmd args..." >&2
        exit 2
    fi
    shift
    [ "${1:-}" = "--" ] && shift
    [ $# -ge 1 ] || {
        echo "cluster.sh: run needs a command: run NP -- cmd args..." >&2
        exit 2
    }
    is_up || die "no cluster up: run '$0 up N [RATE] [DELAY]' first"
    command -v mpirun >/dev/null 2>&1 || die "needs mpirun (Open MPI) on PATH"
    hosts=$(state_get hosts)
    slots=$(((np + hosts - 1) / hosts))
    : >"$STATE/hostfile"
    for ((i = 0; i < hosts; ++i)); do
        echo "$(host_ns "$i") slots=$slots" >>"$STATE/hostfile"
    done
    for var in $(compgen -e); do
        case $var in
        TSIM_*) ;;
        TERSE_* | LD_PRELOAD | LD_LIBRARY_PATH | ASAN_OPTIONS | UBSAN_OPTIONS) args+=(-x "$var") ;;
        esac
    done
    # shellcheck disable=SC2206
    args+=(${TSIM_MPIRUN_ARGS:-})
    # Shared memory inside a host: each host needs its own segment directory.
    case ,$BTL, in
    *,vader,* | *,sm,*) set -- "$HERE/cluster_rank.sh" "$@" ;;
    esac
    # mpirun runs inside host 0; TSIM_STATE tells the agent where the TMPDIRs are.
    TSIM_STATE=$STATE TMPDIR=$STATE/tmp/$(host_ns 0) \
        timeout -k 10 "$RUN_TIMEOUT" ip netns exec "$(host_ns 0)" \
        mpirun --allow-run-as-root --oversubscribe --bind-to none -np "$np" \
        --hostfile "$STATE/hostfile" --map-by slot \
        --mca plm_rsh_agent "$AGENT" --mca plm_rsh_no_tree_spawn 1 \
        --mca pml ob1 --mca btl "$BTL" --mca osc '^ucx' --mca mpi_yield_when_idle 1 \
        --mca btl_tcp_if_include "${NET}.0/24" --mca oob_tcp_if_include "${NET}.0/24" \
        -x TSIM_HOSTS="$hosts" -x TSIM_STATE="$STATE" \
        "${args[@]}" "$@"
}

cmd_bw() {
    local n=${1:-2} rate=${2:-1gbit} delay=${3:-none} dir rc=0 own=0 hosts bits out
    need_root
    command -v mpicc >/dev/null 2>&1 || die "needs mpicc (Open MPI) to build cluster_bw.c"
    if ! is_up; then
        cmd_up "$n" "$rate" "$delay" >&2
        own=1
    fi
    dir=$(mktemp -d /tmp/terse-cluster-bw.XXXXXX)
    # shellcheck disable=SC2064
    trap "rm -rf '$dir'; if [ $own = 1 ]; then cmd_down >&2 || true; fi" EXIT
    trap 'exit 130' INT TERM
    t mpicc -O2 -o "$dir/cluster_bw" "$HERE/cluster_bw.c"
    hosts=$(state_get hosts)
    bits=$(state_get rate_bits)
    out=$(TSIM_TIMEOUT=${TSIM_TIMEOUT:-180} \
        cmd_run $((2 * hosts)) -- "$dir/cluster_bw" -r "$(state_get rate)" -d "$(state_get delay)") || rc=$?
    echo "$out"
    [ "$rc" = 0 ] || die "cluster_bw failed (status $rc)"
    # Compare the one-way stream rate with the shaped rate.
    echo "$out" | awk -v bits="$bits" '
        $1 !~ /^#/ && NF >= 8 { gbit = $7 }
        END {
            if (gbit == "") { exit 1 }
            if (bits > 0) {
                printf "# stream %.3f Gbit/s of payload = %.0f%% of the shaped %.3f Gbit/s\n",
                       gbit, 100 * gbit * 1e9 / bits, bits / 1e9
            } else {
                printf "# unshaped links: stream %.3f Gbit/s\n", gbit
            }
        }'
}

main() {
    local cmd=${1:-}
    [ $# -ge 1 ] && shift
    case $cmd in
    up) cmd_up "$@" ;;
    down) cmd_down ;;
    run) cmd_run "$@" ;;
    bw) cmd_bw "$@" ;;
    status) cmd_status ;;
    *) usage ;;
    esac
}

main "$@"
