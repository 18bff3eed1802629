"""The OCF kernel: codes, exit reasons, parameters, probes, deadlines, meta-data, dispatch."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hodr.takeover import ocf
from hodr.takeover.ocf import OCF, Action, AgentError, InvalidSetup, MetaData, Parameter
from tests.ocf_meta import RNG, xmllint_dtd, xmllint_rng


@pytest.fixture(autouse=True)
def clean_ocf_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no OCF environment, no current action and a fresh logger."""
    import os

    for key in list(os.environ):
        if key.startswith(("OCF_", "HA_", "__OCF")):
            monkeypatch.delenv(key)
    monkeypatch.setattr(ocf, "_current_action", "")
    monkeypatch.setattr(ocf, "_logger", None)


def test_codes_match_the_ocf_spec() -> None:
    assert [int(c) for c in OCF] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 190, 191]
    assert OCF.ERR_CONFIGURED == 6 and OCF.NOT_RUNNING == 7


def test_exit_reason_is_one_prefixed_line(capsys: pytest.CaptureFixture[str]) -> None:
    ocf.exit_reason("interface eth9\nis gone")
    assert capsys.readouterr().err == "ocf-exit-reason:interface eth9 is gone\n"


def test_params_and_meta_treat_empty_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCF_RESKEY_ip", "192.168.77.100")
    monkeypatch.setenv("OCF_RESKEY_nic", "")
    monkeypatch.setenv("OCF_RESKEY_CRM_meta_timeout", "20000")
    assert ocf.param("ip") == "192.168.77.100"
    assert ocf.param("nic", "dflt") == "dflt"
    assert ocf.param("absent") is None
    assert ocf.meta("timeout") == "20000"
    assert ocf.instance() == "unknown"
    monkeypatch.setenv("OCF_RESOURCE_INSTANCE", "vip")
    assert ocf.instance() == "vip"


@pytest.mark.parametrize(
    ("value", "true", "false"),
    [
        ("yes", True, False),
        ("TRUE", True, False),
        ("1", True, False),
        ("off", False, True),
        ("maybe", False, False),
    ],
)
def test_booleans(value: str, true: bool, false: bool) -> None:
    assert ocf.is_true(value) is true
    assert ocf.is_false(value) is false


@pytest.mark.parametrize(
    ("action", "interval", "probe"),
    [
        ("monitor", "0", True),
        ("monitor", None, True),  # no interval at all: treat as a probe
        ("monitor", "junk", True),
        ("monitor", "10000", False),
        ("start", "0", False),
    ],
)
def test_is_probe(monkeypatch: pytest.MonkeyPatch, action: str, interval: str | None, probe: bool) -> None:
    monkeypatch.setenv("__OCF_ACTION", action)
    if interval is not None:
        monkeypatch.setenv("OCF_RESKEY_CRM_meta_interval", interval)
    assert ocf.is_probe() is probe


def test_deadline_is_timeout_minus_margin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCF_RESKEY_CRM_meta_timeout", "20000")
    assert 17.5 < ocf.deadline(margin=2.0).remaining() <= 18.0
    monkeypatch.setenv("OCF_RESKEY_CRM_meta_timeout", "2000")
    assert 0.5 < ocf.deadline(margin=5.0).remaining() <= 1.0  # margin capped at half the timeout
    monkeypatch.delenv("OCF_RESKEY_CRM_meta_timeout")
    assert 17.5 < ocf.deadline(margin=2.0, default=20.0).remaining() <= 18.0


def test_deadline_caps_waits() -> None:
    dl = ocf.Deadline(time.monotonic() + 1.0)
    assert dl.cap(5.0) <= 1.0
    assert dl.cap(0.1) == pytest.approx(0.1)
    assert not dl.expired()
    assert ocf.Deadline(time.monotonic() - 1).remaining() == 0.0


@pytest.mark.parametrize(
    ("rc", "action", "probe", "expected"),
    [
        (OCF.ERR_CONFIGURED, "stop", False, OCF.SUCCESS),
        (OCF.ERR_ARGS, "stop", False, OCF.SUCCESS),
        (OCF.ERR_CONFIGURED, "monitor", True, OCF.NOT_RUNNING),
        (OCF.ERR_ARGS, "monitor", True, OCF.NOT_RUNNING),
        (OCF.ERR_CONFIGURED, "monitor", False, OCF.ERR_CONFIGURED),
        (OCF.ERR_INSTALLED, "monitor", False, OCF.ERR_INSTALLED),
        (OCF.ERR_ARGS, "monitor", False, OCF.ERR_GENERIC),
        (OCF.ERR_PERM, "monitor", False, OCF.ERR_GENERIC),
        (OCF.ERR_ARGS, "start", False, OCF.ERR_ARGS),
        (OCF.ERR_CONFIGURED, "validate-all", False, OCF.ERR_CONFIGURED),
    ],
)
def test_invalid_setup_discipline(rc: OCF, action: str, probe: bool, expected: OCF) -> None:
    assert ocf.rc_for_invalid(rc, action, probe) == expected


# ------------------------------------------------------------------------------------ run()


class Recorder:
    """A fake agent: records calls, its validate can be made to fail."""

    def __init__(self, invalid: InvalidSetup | None = None) -> None:
        self.calls: list[str] = []
        self.invalid = invalid

    def validate(self, level: int) -> None:
        self.calls.append(f"validate:{level}")
        if self.invalid:
            raise self.invalid

    def actions(self, **overrides: object) -> dict[str, object]:
        table = {name: self._action(name) for name in ("start", "stop", "monitor")}
        table.update(overrides)
        return table

    def _action(self, name: str) -> Callable[[], int]:
        def action() -> int:
            self.calls.append(name)
            return OCF.SUCCESS

        return action


def _meta() -> str:
    return "<resource-agent/>\n"


def test_meta_data_and_methods_need_no_environment(capsys: pytest.CaptureFixture[str]) -> None:
    agent = Recorder(InvalidSetup(OCF.ERR_CONFIGURED, "ip missing"))
    assert ocf.run(agent.actions(), _meta, agent.validate, ["x", "meta-data"]) == OCF.SUCCESS
    assert capsys.readouterr().out == "<resource-agent/>\n"
    assert ocf.run(agent.actions(), _meta, agent.validate, ["x", "methods"]) == OCF.SUCCESS
    assert capsys.readouterr().out.split() == [
        "meta-data",
        "methods",
        "monitor",
        "start",
        "stop",
        "usage",
        "validate-all",
    ]
    assert agent.calls == []


def test_unknown_action_is_unimplemented_before_validation(capsys: pytest.CaptureFixture[str]) -> None:
    agent = Recorder(InvalidSetup(OCF.ERR_CONFIGURED, "ip missing"))
    assert ocf.run(agent.actions(), _meta, agent.validate, ["x", "promote"]) == OCF.ERR_UNIMPLEMENTED
    assert "ocf-exit-reason:" in capsys.readouterr().err
    assert agent.calls == []


def test_missing_action_is_err_args() -> None:
    agent = Recorder()
    assert ocf.run(agent.actions(), _meta, agent.validate, ["x"]) == OCF.ERR_ARGS


def test_validate_gate_then_action() -> None:
    agent = Recorder()
    assert ocf.run(agent.actions(), _meta, agent.validate, ["x", "start"]) == OCF.SUCCESS
    assert agent.calls == ["validate:0", "start"]


def test_validate_all_uses_check_level(monkeypatch: pytest.MonkeyPatch) -> None:
    agent = Recorder()
    monkeypatch.setenv("OCF_CHECK_LEVEL", "10")
    assert ocf.run(agent.actions(), _meta, agent.validate, ["x", "validate-all"]) == OCF.SUCCESS
    assert agent.calls == ["validate:10"]


@pytest.mark.parametrize(
    ("action", "interval", "rc", "reason"),
    [
        ("start", None, OCF.ERR_CONFIGURED, True),
        ("validate-all", None, OCF.ERR_CONFIGURED, True),
        ("stop", None, OCF.SUCCESS, False),
        ("monitor", "0", OCF.NOT_RUNNING, False),
        ("monitor", "10000", OCF.ERR_CONFIGURED, True),
    ],
)
def test_invalid_parameters_per_action(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    action: str,
    interval: str | None,
    rc: OCF,
    reason: bool,
) -> None:
    if interval is not None:
        monkeypatch.setenv("OCF_RESKEY_CRM_meta_interval", interval)
    agent = Recorder(InvalidSetup(OCF.ERR_CONFIGURED, "parameter ip is required"))
    assert ocf.run(agent.actions(), _meta, agent.validate, ["x", action]) == rc
    err = capsys.readouterr().err
    assert ("ocf-exit-reason:parameter ip is required" in err) is reason


def test_invalid_setup_raised_by_an_action_is_downgraded_too(monkeypatch: pytest.MonkeyPatch) -> None:
    def gone() -> int:
        raise InvalidSetup(OCF.ERR_ARGS, "interface eth9 does not exist")

    agent = Recorder()
    monkeypatch.setenv("OCF_RESKEY_CRM_meta_interval", "10000")
    assert ocf.run(agent.actions(monitor=gone), _meta, agent.validate, ["x", "monitor"]) == OCF.ERR_GENERIC
    monkeypatch.setenv("OCF_RESKEY_CRM_meta_interval", "0")
    assert ocf.run(agent.actions(monitor=gone), _meta, agent.validate, ["x", "monitor"]) == OCF.NOT_RUNNING
    assert ocf.run(agent.actions(stop=gone), _meta, agent.validate, ["x", "stop"]) == OCF.SUCCESS
    assert ocf.run(agent.actions(start=gone), _meta, agent.validate, ["x", "start"]) == OCF.ERR_ARGS


def test_agent_error_is_returned_as_is_even_on_stop(capsys: pytest.CaptureFixture[str]) -> None:
    def stuck() -> int:
        raise AgentError(OCF.ERR_GENERIC, "address still present")

    agent = Recorder()
    assert ocf.run(agent.actions(stop=stuck), _meta, agent.validate, ["x", "stop"]) == OCF.ERR_GENERIC
    assert "ocf-exit-reason:address still present" in capsys.readouterr().err


def test_unexpected_exception_is_generic_with_reason(capsys: pytest.CaptureFixture[str]) -> None:
    def boom() -> int:
        raise RuntimeError("bug")

    agent = Recorder()
    assert ocf.run(agent.actions(start=boom), _meta, agent.validate, ["x", "start"]) == OCF.ERR_GENERIC
    assert "ocf-exit-reason:start: unexpected error: RuntimeError('bug')" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- logging


def test_log_goes_to_ha_logfile_with_instance_tag(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logfile = tmp_path / "agent.log"
    monkeypatch.setenv("HA_LOGFILE", str(logfile))
    monkeypatch.setenv("OCF_RESOURCE_INSTANCE", "vip")
    ocf.log().info("narrative")
    ocf.log().warning("attention")
    for handler in ocf.log().handlers:
        handler.flush()
    text = logfile.read_text()
    assert "(vip)[" in text and "INFO: narrative" in text and "WARNING: attention" in text
    err = capsys.readouterr().err
    assert "attention" in err and "narrative" not in err  # stderr only gets warnings then


def test_log_without_destination_uses_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    ocf.log().info("hello")
    assert "INFO: hello" in capsys.readouterr().err


# -------------------------------------------------------------------------------- meta-data


def _sample() -> MetaData:
    return MetaData(
        name="sample",
        version="1.2.3",
        shortdesc="Sample <agent>",
        longdesc='Escapes & "quotes" <ok>',
        parameters=(
            Parameter("ip", "Address", "The address", required=True, unique=True),
            Parameter("count", "Count", "How many", "integer", 5),
            Parameter("flag", "Flag", "On or off", "boolean", True),
        ),
        actions=(
            Action("start", "20s"),
            Action("stop", "20s"),
            Action("monitor", "20s", interval="10s", depth="0"),
            Action("monitor", "20s", interval="15s", role="Promoted"),
            Action("meta-data", "5s"),
            Action("validate-all", "20s"),
        ),
    )


def test_meta_data_layout() -> None:
    xml = _sample().to_xml()
    lines = xml.splitlines()
    assert lines[0] == '<?xml version="1.0"?>'
    assert lines[1] == '<!DOCTYPE resource-agent SYSTEM "ra-api-1.dtd">'
    assert '<resource-agent name="sample" version="1.2.3">' in xml
    order = [
        xml.index(tag)
        for tag in ("<version>1.1</version>", "<longdesc", "<shortdesc", "<parameters>", "<actions>")
    ]
    assert order == sorted(order)
    assert "&lt;agent&gt;" in xml and "&amp;" in xml
    assert '<content type="integer" default="5"/>' in xml
    assert '<content type="boolean" default="true"/>' in xml
    assert 'role="Promoted"' in xml


@pytest.mark.skipif(shutil.which("xmllint") is None, reason="xmllint not installed")
def test_meta_data_is_valid_against_the_dtd_and_rng() -> None:
    xml = _sample().to_xml()
    dtd = xmllint_dtd(xml)
    assert dtd.returncode == 0, dtd.stderr
    if RNG.exists():
        rng = xmllint_rng(xml)
        assert rng.returncode == 0, rng.stderr


def test_builder_refuses_what_the_dtd_refuses() -> None:
    with pytest.raises(ValueError, match="content type"):
        Parameter("mode", "Mode", "Mode", "select")
    with pytest.raises(ValueError, match="reload-agent"):
        Action("reload-agent", "20s")
    with pytest.raises(ValueError, match="Promoted"):
        Action("monitor", "20s", role="Master")
