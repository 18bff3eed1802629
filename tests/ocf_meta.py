"""What the OCF agents' tests share: checking meta-data with xmllint against resource-agents'
ra-api-1.dtd and metadata.rng, and the result of one agent invocation."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

DTD_DIR = Path("/usr/share/resource-agents")
RNG = DTD_DIR / "metadata.rng"


def xmllint_dtd(xml: str) -> subprocess.CompletedProcess[str]:
    """``xmllint --valid`` (run where ra-api-1.dtd lives, as ocf-tester does)."""
    return subprocess.run(
        ["xmllint", "--noout", "--valid", "-"], input=xml, text=True, capture_output=True, cwd=DTD_DIR
    )


def xmllint_rng(xml: str) -> subprocess.CompletedProcess[str]:
    """``xmllint --relaxng`` against resource-agents' metadata.rng."""
    return subprocess.run(
        ["xmllint", "--noout", "--relaxng", str(RNG), "-"], input=xml, text=True, capture_output=True
    )


@dataclass(frozen=True)
class AgentResult:
    """What one agent invocation returned."""

    rc: int
    stdout: str
    stderr: str

    @property
    def reasons(self) -> list[str]:
        return [
            line.split(":", 1)[1] for line in self.stderr.splitlines() if line.startswith("ocf-exit-reason:")
        ]
