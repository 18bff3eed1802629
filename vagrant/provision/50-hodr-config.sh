#!/usr/bin/env bash
# /etc/hodr/hodr.yml of this node (README "Running it for real"): node1 says role: primary (it
# wins the bootstrap tie, its database is the one the others are seeded from), the others
# standby. Every node lists the other two as its standbys for when it is primary and accepts
# all three names as primary; standbys reach the primary through the VIP (the agent also tells
# them to `follow` the new primary by node name after every promotion).
# HODR_SYNC=1: sync: true with sync_quorum: 1 (a commit returns once one of the two standbys
# holds it durably, so losing any one node does not stop writes). services: the agent starts
# PostgreSQL before the daemon and stops it after (docs/replica-agent.md "Services").
# `hodr validate-config` checks the result (and the TLS files).
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

role=standby
[[ $HODR_NODE == "${NODE_NAMES[0]}" ]] && role=primary
sync=false
[[ $HODR_SYNC == 1 ]] && sync=true
standbys=""
for n in "${NODE_NAMES[@]}"; do
  [[ $n == "$HODR_NODE" ]] || standbys+="${standbys:+, }{name: $n}"
done
names=$(printf '%s, ' "${NODE_NAMES[@]}")
names=${names%, }
dsn="host=$PG_SOCKET dbname=$DB user=hodr"

install -d -m 0755 /etc/hodr
install -d -m 0700 /var/lib/hodr
{
  cat <<EOY
# managed by vagrant/provision/50-hodr-config.sh
node: $HODR_NODE
role: $role
sync: $sync
EOY
  [[ $sync == true ]] && echo "sync_quorum: 1"
  cat <<EOY
data_dir: /var/lib/hodr/main
run_dir: /run/hodr/main
source:
  dsn: "$dsn"
  slot: hodr
  publication: hodr
  tables: []
  application_name: hodr
target:
  dsn: "$dsn"
transport:
  listen_host: 0.0.0.0
  port: 5440
  primary_host: $HODR_VIP
  standbys: [$standbys]
  primary_name: [$names]
  tls_ca: $TLS/ca.pem
  tls_cert: $TLS/$HODR_NODE.pem
  tls_key: $TLS/$HODR_NODE.key
  compression: 3
services:
  - name: postgresql
    when: always
    start: systemctl start postgresql@$PG_VERSION-$PG_CLUSTER
    stop: systemctl stop postgresql@$PG_VERSION-$PG_CLUSTER
    ready: pg_isready -q -h $PG_SOCKET -p 5432
    timeout_s: 60
EOY
} | write_if_changed "$HODR_YML" 0640 || true
hodr validate-config "$HODR_YML"
