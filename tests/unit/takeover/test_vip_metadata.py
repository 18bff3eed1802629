"""hodr-vip's meta-data, produced by the real shim in a subprocess, against ra-api-1.dtd.

Also: the cheap actions stay cheap (meta-data and validate-all never import pyroute2), and the shim
works from a clean environment and as ``nobody`` (ocf-tester runs meta-data that way).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import hodr
from tests.ocf_meta import RNG, xmllint_dtd, xmllint_rng

REPO = Path(__file__).resolve().parents[3]
AGENT = REPO / "ocf" / "hodr-vip"

needs_xmllint = pytest.mark.skipif(shutil.which("xmllint") is None, reason="xmllint not installed")


def run_shim(
    *args: str, env: dict[str, str] | None = None, python_flags: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Run the shim from / with only PATH set, like Pacemaker's clean environment."""
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
    base.update(env or {})
    cmd = [str(AGENT), *args]
    if python_flags:
        cmd = [shutil.which("python3") or "python3", *python_flags, *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, env=base, cwd="/", timeout=60)


@pytest.fixture(scope="module")
def meta_xml() -> str:
    proc = run_shim("meta-data")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_shim_is_executable_with_python_shebang() -> None:
    assert os.stat(AGENT).st_mode & 0o777 == 0o755
    assert AGENT.read_text().startswith("#!/usr/bin/env python3\n")


@needs_xmllint
def test_meta_data_is_valid_against_the_dtd(meta_xml: str) -> None:
    proc = xmllint_dtd(meta_xml)
    assert proc.returncode == 0, proc.stderr


@needs_xmllint
@pytest.mark.skipif(not RNG.exists(), reason="resource-agents metadata.rng not installed")
def test_meta_data_is_valid_against_the_relaxng_schema(meta_xml: str) -> None:
    proc = xmllint_rng(meta_xml)
    assert proc.returncode == 0, proc.stderr


def test_meta_data_header_and_version(meta_xml: str) -> None:
    assert meta_xml.splitlines()[1] == '<!DOCTYPE resource-agent SYSTEM "ra-api-1.dtd">'
    root = ET.fromstring(meta_xml.split("\n", 2)[2])
    assert root.get("name") == "hodr-vip"
    assert root.get("version") == hodr.__version__
    assert [child.tag for child in root] == ["version", "longdesc", "shortdesc", "parameters", "actions"]
    assert root.findtext("version") == "1.1"


def test_meta_data_parameters(meta_xml: str) -> None:
    root = ET.fromstring(meta_xml.split("\n", 2)[2])
    params = {p.get("name"): p for p in root.iter("parameter")}
    assert set(params) == {
        "ip",
        "cidr_netmask",
        "nic",
        "arp_count",
        "arp_interval",
        "arp_mode",
        "check_link_status",
        "dad_timeout",
        "nodad",
    }
    assert params["ip"].get("required") == "1" and params["ip"].get("unique") == "1"
    defaults = {name: p.find("content").get("default") for name, p in params.items()}  # type: ignore[union-attr]
    assert defaults["arp_count"] == "5"
    assert defaults["arp_interval"] == "200"
    assert defaults["arp_mode"] == "both"
    assert defaults["check_link_status"] == "true"
    assert defaults["nodad"] == "false"
    assert defaults["nic"] is None  # discovered from the route, never a guessed eth0
    for p in params.values():
        assert p.find("content").get("type") in ("string", "integer", "boolean", "time")  # type: ignore[union-attr]
        assert p.get("reloadable") is None


def test_meta_data_actions(meta_xml: str) -> None:
    root = ET.fromstring(meta_xml.split("\n", 2)[2])
    actions = {a.get("name"): a for a in root.iter("action")}
    assert set(actions) == {"start", "stop", "monitor", "validate-all", "meta-data", "methods"}
    assert actions["monitor"].get("interval") == "10s"
    assert all(a.get("timeout") for a in actions.values())


def test_methods_lists_the_actions() -> None:
    proc = run_shim("methods")
    assert proc.returncode == 0
    assert {"start", "stop", "monitor", "validate-all", "meta-data"} <= set(proc.stdout.split())


@pytest.mark.parametrize(
    ("action", "env"),
    [
        ("meta-data", {}),
        ("validate-all", {"OCF_RESKEY_ip": "192.0.2.10", "OCF_RESKEY_cidr_netmask": "24"}),
        ("validate-all", {"OCF_RESKEY_ip": "2001:db8::10", "OCF_RESKEY_cidr_netmask": "64"}),
    ],
)
def test_cheap_actions_do_not_import_pyroute2(action: str, env: dict[str, str]) -> None:
    proc = run_shim(action, env=env, python_flags=("-X", "importtime"))
    assert proc.returncode == 0, proc.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line]
    assert "hodr.takeover.vip_agent" in imported
    assert not [m for m in imported if m.startswith(("pyroute2", "asyncio"))]


def test_validate_all_level_0_rejects_inherently_invalid_values() -> None:
    proc = run_shim("validate-all", env={"OCF_RESKEY_ip": "192.168.77.300"})
    assert proc.returncode == 6
    assert "ocf-exit-reason:" in proc.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to nobody")
def test_meta_data_as_nobody() -> None:
    proc = subprocess.run(
        ["su", "nobody", "-s", "/bin/sh", "-c", f"{AGENT} meta-data"],
        capture_output=True,
        text=True,
        cwd="/",
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "<resource-agent" in proc.stdout
