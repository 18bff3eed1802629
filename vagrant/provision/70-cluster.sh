#!/usr/bin/env bash
# Runs on the last node once all nodes are provisioned: forms the cluster with pcs, configures
# fencing, then creates hodr's resources with the pcs recipe of docs/replica-agent.md.
# Idempotent: each part is skipped when the running cluster already has it.
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

pcsd_up() { timeout 3 bash -c "</dev/tcp/$1/2224" 2>/dev/null; }
for n in "${NODE_NAMES[@]}"; do
  wait_for 3600 "$n to be provisioned" test -f "$STATE/ready/$n"
  wait_for 600 "pcsd on $n" pcsd_up "$(address_of "$n")"
done

# --- cluster ------------------------------------------------------------------------------------
hosts=()
for n in "${NODE_NAMES[@]}"; do hosts+=("$n" "addr=$(address_of "$n")"); done
pcs host auth "${hosts[@]}" -u hacluster -p "$(cat "$STATE/hacluster.pass")"
if ! grep -qs "cluster_name: $CLUSTER_NAME\$" /etc/corosync/corosync.conf; then
  log "cluster: setting up $CLUSTER_NAME (knet, encrypted, corosync's default token)"
  pcs cluster setup "$CLUSTER_NAME" "${hosts[@]}" transport knet --enable
fi
pcs cluster start --all --wait=180 >/dev/null
# Cluster state is read with hodr.lab's crm_mon parser, as `hodr lab` and the cluster tests do.
view() {
  crm_mon -1 --output-as=xml 2>/dev/null | /usr/local/bin/python3 -c "import sys
from hodr.lab import cluster
v = cluster.parse(sys.stdin.read(), seen_from='$HODR_NODE')
sys.exit(0 if ($1) else 1)" 2>/dev/null
}
formed() { view "v.formed and len(v.nodes) == ${#NODE_NAMES[@]}"; }
wait_for 300 "all ${#NODE_NAMES[@]} nodes online with a quorate DC" formed

# --- fencing ------------------------------------------------------------------------------------
# A VM is fenced by its hypervisor: fence_virsh (libvirt) or fence_vbox (VirtualBox) log in to
# the host over SSH with the key from 60-pacemaker.sh and power the VM off and on (README
# "Fencing"). unsafe-off is stonith-enabled=false: for throwaway drills only, never with data
# you care about (a node that stops answering is then assumed dead, not made dead).
FENCE_DEVICE=fence-hodr
mode=$HODR_FENCE
if [[ $mode == auto ]]; then
  case $(systemd-detect-virt) in
    kvm | qemu) mode=virsh ;;
    oracle) mode=vbox ;;
    *) die "fencing: HODR_FENCE=auto cannot tell the hypervisor ($(systemd-detect-virt)); set HODR_FENCE" ;;
  esac
fi
if [[ $mode == unsafe-off ]]; then
  log "fencing: !!! UNSAFE: stonith-enabled=false (HODR_FENCE=unsafe-off) - throwaway drills only !!!"
  pcs property set stonith-enabled=false
elif pcs stonith config "$FENCE_DEVICE" >/dev/null 2>&1; then
  log "fencing: $FENCE_DEVICE exists"
else
  case $mode in
    virsh) agent=fence_virsh prefix=${HODR_FENCE_PLUG_PREFIX:-vagrant_} ;;
    vbox) agent=fence_vbox prefix=${HODR_FENCE_PLUG_PREFIX:-hodr-} ;;
    *) die "fencing: HODR_FENCE=$mode: expected auto, virsh, vbox or unsafe-off" ;;
  esac
  [[ -n ${HODR_FENCE_USER:-} ]] || die "fencing: set HODR_FENCE_USER (the host user $agent logs in as)"
  opts=(ip="$HODR_FENCE_HOST" username="$HODR_FENCE_USER" identity_file=/etc/hodr/fence/id_ed25519)
  [[ $HODR_FENCE_SUDO == 1 ]] && opts+=(use_sudo=1)
  map=""
  for n in "${NODE_NAMES[@]}"; do map+="${map:+;}$n:$prefix$n"; done
  # Prove the device works before relying on it: list the VMs the host knows.
  args=(--ip="$HODR_FENCE_HOST" --username="$HODR_FENCE_USER" --identity-file=/etc/hodr/fence/id_ed25519)
  [[ $HODR_FENCE_SUDO == 1 ]] && args+=(--use-sudo)
  if ! listing=$("$agent" "${args[@]}" --action=list 2>&1); then
    die "fencing: $agent cannot log in to $HODR_FENCE_USER@$HODR_FENCE_HOST: ${listing//$'\n'/ }
  Authorize the key on the host (README \"Fencing\"): cat vagrant/.state/fence/id_ed25519.pub >> ~/.ssh/authorized_keys
  then run: vagrant provision ${NODE_NAMES[-1]} --provision-with 70-cluster"
  fi
  for n in "${NODE_NAMES[@]}"; do
    grep -q "^$prefix$n\b" <<<"$listing" ||
      die "fencing: the host has no VM named $prefix$n (it lists: ${listing//$'\n'/ }); set HODR_FENCE_PLUG_PREFIX"
  done
  log "fencing: creating $FENCE_DEVICE ($agent via $HODR_FENCE_USER@$HODR_FENCE_HOST, $map)"
  pcs stonith create "$FENCE_DEVICE" "$agent" "${opts[@]}" pcmk_host_map="$map" op monitor interval=60s
  pcs property set stonith-enabled=true
fi

# --- hodr's resources: docs/replica-agent.md's pcs recipe --------------------------------------
# Built in a copy of the CIB and pushed once (pcs -f, then cib-push), so the VIP never starts
# before its colocation and orders exist. The commands between BEGIN and END are the document's,
# word for word apart from `-f "$CIB"`: tests/unit/test_vagrant_files.py compares them.
if pcs resource config hodr-clone >/dev/null 2>&1; then
  log "resources: hodr-clone exists"
else
  work=$(mktemp -d)
  CIB=$work/cib.xml
  pcs cluster cib "$work/orig.xml"
  cp "$work/orig.xml" "$CIB"
  # BEGIN docs/replica-agent.md pcs recipe
  pcs -f "$CIB" resource create hodr ocf:hodr:hodr-replica config=/etc/hodr/hodr.yml \
      op monitor interval=15s role=Promoted timeout=20s \
      op monitor interval=16s role=Unpromoted timeout=20s \
      promotable notify=true promoted-max=1 clone-node-max=1
  pcs -f "$CIB" resource meta hodr-clone migration-threshold=3
  pcs -f "$CIB" resource defaults update resource-stickiness=100
  pcs -f "$CIB" resource create hodr-vip ocf:hodr:hodr-vip ip=192.168.77.100 cidr_netmask=24 op monitor interval=10s --disabled
  pcs -f "$CIB" constraint colocation add hodr-vip with Promoted hodr-clone INFINITY
  # shellcheck disable=SC1010  # "then" is pcs syntax
  pcs -f "$CIB" constraint order promote hodr-clone then start hodr-vip symmetrical=false
  # shellcheck disable=SC1010  # "then" is pcs syntax
  pcs -f "$CIB" constraint order demote hodr-clone then stop hodr-vip symmetrical=false
  pcs -f "$CIB" resource enable hodr-vip
  pcs cluster cib-push "$CIB" diff-against="$work/orig.xml"
  crm_verify -L -V
  # END docs/replica-agent.md pcs recipe
  rm -rf "$work"
fi
crm_verify -L -V

promoted() { view "len(v.locate('hodr-clone', 'Promoted')) == 1"; }
vip_started() { view "len(v.locate('hodr-vip', 'Started')) == 1"; }
wait_for 600 "hodr to be promoted on one node" promoted
wait_for 120 "hodr-vip to start" vip_started
pcs status --full | sed -n '/^Node List/,$p'
log "cluster: ready. Check: vagrant ssh ${NODE_NAMES[0]} -c 'sudo pcs status; sudo hodr status $HODR_YML'"
