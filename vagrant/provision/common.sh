# shellcheck shell=bash disable=SC2034  # the globals are for the scripts that source this
# Sourced by every provisioning step. Settings come from the Vagrantfile (environment), so the
# topology is written down once (and tests/unit/test_vagrant_files.py checks it against hodr.lab).
set -euo pipefail

: "${HODR_NODE:?set by the Vagrantfile}"
: "${HODR_NODES:?}" "${HODR_ADDRESSES:?}" "${HODR_VIP:?}" "${HODR_CLIENT_ADDRESS:?}"
: "${HODR_PREFIX_LEN:=24}" "${HODR_SYNC:=1}" "${HODR_FENCE:=auto}"

REPO=/opt/hodr                     # the repository (synced folder)
STATE=$REPO/vagrant/.state         # shared between the VMs and the host: CA, passwords, markers
VENV=/opt/hodr-venv                # node-local: the host's .venv in the synced folder is not ours
HODR_YML=/etc/hodr/hodr.yml
TLS=/etc/hodr/tls
PG_VERSION=15
PG_CLUSTER=main
PG_SOCKET=/var/run/postgresql
DB=app
CLUSTER_NAME=hodr
export DEBIAN_FRONTEND=noninteractive
read -r -a NODE_NAMES <<<"$HODR_NODES"
read -r -a NODE_ADDRS <<<"$HODR_ADDRESSES"

log() { printf '%s hodr-provision[%s] %s\n' "$(date +%T)" "$HODR_NODE" "$*"; }
die() { log "ERROR: $*" >&2; exit 1; }

# wait_for SECONDS WHAT CMD...: poll CMD every 2 s; fail naming WHAT after SECONDS.
wait_for() {
  local limit=$1 what=$2 waited=0
  shift 2
  until "$@"; do
    ((waited >= limit)) && die "timed out after ${limit}s waiting for $what"
    ((waited % 30 == 0)) && log "waiting for $what"
    sleep 2
    waited=$((waited + 2))
  done
}

# address_of NODE: the node's address on the private network.
address_of() {
  local i
  for i in "${!NODE_NAMES[@]}"; do
    [[ ${NODE_NAMES[$i]} == "$1" ]] && { echo "${NODE_ADDRS[$i]}"; return 0; }
  done
  die "unknown node $1"
}

# hosts_file: /etc/hosts of every VM, line for line what hodr.lab's Topology.hosts_file() gives a
# lab node (no 127.0.1.1 line: node names must resolve to the replication addresses).
hosts_file() {
  local i
  printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n'
  for i in "${!NODE_NAMES[@]}"; do printf '%s\t%s\n' "${NODE_ADDRS[$i]}" "${NODE_NAMES[$i]}"; done
  printf '%s\tvip\n%s\tclient\n' "$HODR_VIP" "$HODR_CLIENT_ADDRESS"
}

# write_if_changed FILE MODE: stdin to FILE unless identical; returns 0 when FILE changed.
write_if_changed() {
  local file=$1 mode=$2 tmp
  tmp=$(mktemp)
  cat >"$tmp"
  if [[ -f $file ]] && cmp -s "$tmp" "$file"; then
    rm -f "$tmp"
    return 1
  fi
  install -m "$mode" "$tmp" "$file"
  rm -f "$tmp"
  return 0
}

psql_as_postgres() { runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCKET" "$@"; }
