"""vagrant/ stays in step with the lab and the docs, checked without Vagrant or VMs.

What can drift silently: the provisioning scripts' syntax (nothing runs them in CI), the node
addresses and VIP (hodr.lab's topology is the reference: the drills are the same on both paths),
/etc/hosts, the package list of ./run, and the pcs recipe, which exists twice — in
docs/replica-agent.md for readers and in vagrant/provision/70-cluster.sh for the VMs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from hodr.lab import Topology

ROOT = Path(__file__).resolve().parents[2]
VAGRANT = ROOT / "vagrant"
PROVISION = VAGRANT / "provision"
SCRIPTS = sorted(PROVISION.glob("*.sh"))
CLUSTER_SCRIPT = PROVISION / "70-cluster.sh"
DOC = ROOT / "docs" / "replica-agent.md"


def _vagrantfile() -> str:
    return (VAGRANT / "Vagrantfile").read_text()


def _ruby_string(name: str) -> str:
    m = re.search(rf'^{name}\s*=\s*"([^"]*)"', _vagrantfile(), re.M)
    assert m, f'{name} = "..." not found in vagrant/Vagrantfile'
    return m.group(1)


def _vagrant_nodes() -> dict[str, str]:
    block = re.search(r"^NODES\s*=\s*\{(.*?)\}", _vagrantfile(), re.M | re.S)
    assert block, "NODES = { ... } not found in vagrant/Vagrantfile"
    return dict(re.findall(r'"(\w+)"\s*=>\s*"([\d.]+)"', block.group(1)))


def _joined_commands(lines: list[str]) -> list[str]:
    """Shell lines with backslash continuations joined and whitespace collapsed; comments and
    blank lines dropped."""
    out: list[str] = []
    pending = ""
    for raw in lines:
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append(" ".join((pending + line).split()))
        pending = ""
    assert not pending, f"unterminated continuation: {pending!r}"
    return out


def _doc_pcs_recipe() -> list[str]:
    text = DOC.read_text()
    section = text.split("### pcs (0.11, Debian 12)", 1)
    assert len(section) == 2, "docs/replica-agent.md: no '### pcs (0.11, Debian 12)' section"
    block = re.search(r"^```\n(.*?)^```", section[1], re.M | re.S)
    assert block, "docs/replica-agent.md: no code block in the pcs section"
    return _joined_commands(block.group(1).splitlines())


def _vagrant_pcs_recipe() -> list[str]:
    text = CLUSTER_SCRIPT.read_text()
    m = re.search(r"# BEGIN docs/replica-agent.md pcs recipe\n(.*?)# END docs/replica-agent.md pcs recipe",
                  text, re.S)  # fmt: skip
    assert m, "70-cluster.sh: BEGIN/END markers of the pcs recipe not found"
    commands = _joined_commands(m.group(1).splitlines())
    # The VMs build the CIB offline and push it once: `pcs -f "$CIB" X` is the document's `pcs X`,
    # and the cib/cib-push plumbing is not part of the recipe.
    return [
        c.replace('pcs -f "$CIB" ', "pcs ", 1)
        for c in commands
        if not c.startswith(("pcs cluster cib ", "pcs cluster cib-push "))
    ]


# -- scripts ------------------------------------------------------------------------------------


def test_provisioning_scripts_are_there_and_strict() -> None:
    names = {p.name for p in SCRIPTS}
    vagrantfile = _vagrantfile()
    for step in re.findall(r"\b(\d\d-[a-z-]+)\b", vagrantfile):
        assert f"{step}.sh" in names, f"the Vagrantfile runs {step}.sh, which is missing"
    assert "client.sh" in names and "common.sh" in names
    for p in SCRIPTS:
        assert "set -euo pipefail" in p.read_text(), f"{p.name}: no 'set -euo pipefail'"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script: Path) -> None:
    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_shellcheck() -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed")
    r = subprocess.run(
        ["shellcheck", "-x", "-P", "SCRIPTDIR", *[p.name for p in SCRIPTS]],
        cwd=PROVISION,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_vagrantfile_is_ruby() -> None:
    if shutil.which("ruby") is None:
        pytest.skip("ruby not installed")
    r = subprocess.run(["ruby", "-c", str(VAGRANT / "Vagrantfile")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# -- topology -----------------------------------------------------------------------------------


def test_addresses_are_the_labs() -> None:
    topo = Topology(size=len(_vagrant_nodes()))
    assert topo.size == 3
    assert _vagrant_nodes() == {n: topo.address(n) for n in topo.nodes}
    assert _ruby_string("VIP") == topo.vip
    assert _ruby_string("CLIENT") == topo.client_address
    m = re.search(r"^PREFIX_LEN\s*=\s*(\d+)", _vagrantfile(), re.M)
    assert m and int(m.group(1)) == topo.prefixlen


def test_hosts_file_is_the_labs() -> None:
    """common.sh's hosts_file prints, from the Vagrantfile's values, what a lab node gets."""
    topo = Topology()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HODR_NODE": "node1",
        "HODR_NODES": " ".join(_vagrant_nodes()),
        "HODR_ADDRESSES": " ".join(_vagrant_nodes().values()),
        "HODR_VIP": _ruby_string("VIP"),
        "HODR_CLIENT_ADDRESS": _ruby_string("CLIENT"),
    }
    r = subprocess.run(
        ["bash", "-c", f'. "{PROVISION / "common.sh"}" && hosts_file'],
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == topo.hosts_file()


def test_packages_are_those_of_run() -> None:
    def packages(path: Path) -> list[str]:
        m = re.search(r"^APT_PACKAGES=\((.*?)\)", path.read_text(), re.M | re.S)
        assert m, f"{path}: APT_PACKAGES=( ... ) not found"
        return m.group(1).split()

    assert packages(PROVISION / "10-packages.sh") == packages(ROOT / "run")


# -- the pcs recipe -----------------------------------------------------------------------------


def test_pcs_recipe_is_the_documented_one() -> None:
    doc = _doc_pcs_recipe()
    assert doc and doc[0].startswith("pcs resource create hodr ocf:hodr:hodr-replica"), doc
    assert _vagrant_pcs_recipe() == doc


def test_recipe_extraction_sees_a_changed_word() -> None:
    """The comparison is word-exact: one changed value in the script is a difference."""
    changed = [c.replace("migration-threshold=3", "migration-threshold=4") for c in _vagrant_pcs_recipe()]
    assert changed != _doc_pcs_recipe()
