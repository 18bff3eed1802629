#!/usr/bin/env bash
# Pacemaker/Corosync prerequisites on this node; 70-cluster.sh (on the last node) forms the cluster.
# - Debian's packages come with a one-node corosync.conf: `pcs cluster destroy` removes it (only
#   while this node is not yet in the hodr cluster), `pcs cluster setup` writes the real one.
# - hacluster's password (made once by node1 in the synced folder) for `pcs host auth`; pcsd on.
# - the fencing SSH key (made once by node1 in the synced folder; used only with fence_virsh or
#   fence_vbox, and only once you authorize it on the host: README "Fencing").
# - a marker in the synced folder saying this node is ready.
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

if [[ $HODR_NODE == "${NODE_NAMES[0]}" ]]; then
  install -d -m 0700 "$STATE" "$STATE/fence"
  if [[ ! -f $STATE/hacluster.pass ]]; then
    (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$STATE/hacluster.pass")
  fi
  if [[ ! -f $STATE/fence/id_ed25519 ]]; then
    ssh-keygen -q -t ed25519 -N '' -C "hodr-vagrant-fencing" -f "$STATE/fence/id_ed25519"
  fi
fi
wait_for 1800 "the hacluster password and fencing key from ${NODE_NAMES[0]}" \
  test -s "$STATE/hacluster.pass" -a -f "$STATE/fence/id_ed25519.pub"

if ! grep -qs "cluster_name: $CLUSTER_NAME\$" /etc/corosync/corosync.conf; then
  log "pacemaker: removing Debian's default one-node cluster configuration"
  pcs cluster destroy --force >/dev/null
fi
echo "hacluster:$(cat "$STATE/hacluster.pass")" | chpasswd
systemctl enable --quiet --now pcsd

install -d -m 0700 /etc/hodr/fence
install -m 0600 "$STATE/fence/id_ed25519" /etc/hodr/fence/id_ed25519
install -m 0644 "$STATE/fence/id_ed25519.pub" /etc/hodr/fence/id_ed25519.pub

install -d -m 0700 "$STATE/ready"
date -u +%FT%TZ >"$STATE/ready/$HODR_NODE"
log "pacemaker: pcsd running, ready for 70-cluster"
