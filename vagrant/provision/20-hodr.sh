#!/usr/bin/env bash
# hodr on this node, the way the lab provides it (hodr/lab/lab.py _write_wrappers):
# - a node-local virtualenv with hodr's dependencies (from pyproject.toml) and the repository on
#   its sys.path (a .pth file: working-tree edits are live, nothing is written into the repo);
# - `hodr` in the venv (the replica agent runs the `hodr` next to its interpreter) and in
#   /usr/local/bin; `python3` in /usr/local/bin runs the venv's interpreter, so the agents'
#   `#!/usr/bin/env python3` finds PyYAML and pyroute2 on Pacemaker's PATH (Debian's own tools
#   name /usr/bin/python3 and are not affected);
# - the agents linked into /usr/lib/ocf/resource.d/hodr (docs/replica-agent.md, docs/vip.md);
# - /etc/hosts with the node names (Pacemaker names = hodr node names = replication addresses).
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

[[ -x $VENV/bin/python3 ]] || python3 -m venv "$VENV"
deps=$(python3 -c 'import tomllib, sys
print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]))' "$REPO/pyproject.toml")
if [[ $(cat "$VENV/.hodr-deps" 2>/dev/null) != "$deps" ]]; then
  log "hodr: installing dependencies into $VENV"
  mapfile -t reqs <<<"$deps"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${reqs[@]}"
  printf '%s\n' "$deps" >"$VENV/.hodr-deps"
fi
site=$("$VENV/bin/python3" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$REPO" | write_if_changed "$site/hodr-repo.pth" 0644 || true
write_if_changed "$VENV/bin/hodr" 0755 <<PY || true
#!$VENV/bin/python3
import sys

from hodr.cli import main

sys.exit(main())
PY
write_if_changed /usr/local/bin/python3 0755 <<SH || true
#!/bin/sh
exec $VENV/bin/python3 "\$@"
SH
ln -sfn "$VENV/bin/hodr" /usr/local/bin/hodr
/usr/local/bin/hodr --version >/dev/null || die "hodr does not run from $VENV"

install -d -m 0755 /usr/lib/ocf/resource.d/hodr
for agent in hodr-replica hodr-vip; do
  ln -sfn "$REPO/ocf/$agent" "/usr/lib/ocf/resource.d/hodr/$agent"
done
OCF_ROOT=/usr/lib/ocf /usr/lib/ocf/resource.d/hodr/hodr-replica meta-data >/dev/null \
  || die "ocf:hodr:hodr-replica meta-data failed"

hosts_file | write_if_changed /etc/hosts 0644 || true
log "hodr: $(/usr/local/bin/hodr --version), agents in /usr/lib/ocf/resource.d/hodr"
