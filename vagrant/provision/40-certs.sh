#!/usr/bin/env bash
# Mutual TLS certificates, made once on node1 with `hodr certs` (README "Transport security") in
# the synced folder (vagrant/.state/tls, which plays the admin machine: ca.key stays there), then
# each node copies ca.pem and its own NODE.pem/NODE.key into /etc/hodr/tls.
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

SHARED=$STATE/tls
if [[ $HODR_NODE == "${NODE_NAMES[0]}" ]]; then
  install -d -m 0700 "$SHARED"
  [[ -f $SHARED/ca.pem ]] || hodr certs init --dir "$SHARED"
  for n in "${NODE_NAMES[@]}"; do
    [[ -f $SHARED/$n.pem ]] || hodr certs issue "$n" --dir "$SHARED"
  done
fi
# certs.issue writes NODE.key first and NODE.pem last (each by rename): the .pem means both exist.
wait_for 1800 "certificates from ${NODE_NAMES[0]} in $SHARED" \
  test -f "$SHARED/ca.pem" -a -f "$SHARED/$HODR_NODE.pem"
install -d -m 0700 "$TLS"
install -m 0644 "$SHARED/ca.pem" "$TLS/ca.pem"
install -m 0644 "$SHARED/$HODR_NODE.pem" "$TLS/$HODR_NODE.pem"
install -m 0600 "$SHARED/$HODR_NODE.key" "$TLS/$HODR_NODE.key"
log "certs: $TLS/{ca.pem,$HODR_NODE.pem,$HODR_NODE.key}"
