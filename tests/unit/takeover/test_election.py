"""hodr-replica's decisions as pure functions: scores, notify variables, election, rejoin guard.

Also the exact command lines ``attrs`` sends to Pacemaker's tools (through an injected runner) and
how it reads their answers, since the election fails closed on those answers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest

from hodr.position import ZERO, LogPosition
from hodr.takeover.attrs import Attributes, AttrUnavailable, Completed, base_resource, run_tool
from hodr.takeover.daemonctl import COMMAND_ENV, PACKAGE_ROOT, daemon_command, is_hodr_run
from hodr.takeover.election import (
    FAILED_HOLD_S,
    LOSER_SCORE,
    OUT_OF_RACE_SCORE,
    PRIMARY_SCORE,
    TOP_STANDBY_SCORE,
    ClusterEpoch,
    Notification,
    PrimaryTerm,
    Standing,
    Vote,
    elect,
    hold_for_restart,
    next_epoch,
    own_score_without_primary,
    parse_position,
    parse_terms,
    parse_votes,
    published_primaries,
    rejoin_guard,
    standby_score,
    standby_scores,
)
from hodr.takeover.ocf import Deadline


def pos(text: str) -> LogPosition:
    return LogPosition.parse(text)


def vote(node: str, durable: str, role: str = "standby", epoch: int = 3, hint: bool = False) -> Vote:
    return Vote(node, role, epoch, pos(durable), pos(durable), hint, int(time.time()))


# ------------------------------------------------------------------------------------ scores


def test_published_primaries_are_other_nodes_from_an_epoch_on_newest_first() -> None:
    votes = {
        "n1": vote("n1", "3:0/100", role="primary", epoch=3),
        "n2": vote("n2", "4:0/100", role="primary", epoch=4),
        "n3": vote("n3", "4:0/100", role="primary", epoch=4),  # me
        "n4": vote("n4", "4:0/200", role="standby", epoch=4),
        "n5": vote("n5", "2:0/100", role="primary", epoch=2),
    }
    assert [v.node for v in published_primaries(votes, "n3", 3)] == ["n2", "n1"]
    assert [v.node for v in published_primaries(votes, "n3", 4)] == ["n2"]
    assert published_primaries(votes, "n3", 5) == []


def test_score_constants_stay_small_and_ordered() -> None:
    assert PRIMARY_SCORE > TOP_STANDBY_SCORE > LOSER_SCORE > 0 > OUT_OF_RACE_SCORE
    assert PRIMARY_SCORE < 1_000_000  # above that Pacemaker reads INFINITY


def test_standby_score_by_rank_never_reaches_zero() -> None:
    assert [standby_score(r) for r in (1, 2, 3)] == [1000, 990, 980]
    assert standby_score(100) == 10
    assert standby_score(500) == 1


def test_most_advanced_standby_holds_the_top_score() -> None:
    scores = standby_scores(
        [
            Standing("b", pos("3:0/900")),
            Standing("a", pos("3:0/1000")),
            Standing("c", pos("2:0/FFFF")),  # a higher LSN in an older epoch is behind
        ],
        max_lag=0,
    )
    assert scores == {"a": 1000, "b": 990, "c": 980}


def test_equal_positions_share_a_rank() -> None:
    scores = standby_scores(
        [Standing("a", pos("3:0/10")), Standing("b", pos("3:0/10")), Standing("c", pos("3:0/5"))], 0
    )
    assert scores == {"a": 1000, "b": 1000, "c": 990}


def test_disconnected_detached_and_lagging_standbys_are_out_of_the_race() -> None:
    scores = standby_scores(
        [
            Standing("ok", pos("3:0/10"), lag_bytes=100),
            Standing("far", pos("3:0/20"), lag_bytes=5000),
            Standing("gone", pos("3:0/30"), connected=False),
            Standing("cut", pos("3:0/30"), detached=True),
        ],
        max_lag=1000,
    )
    assert scores == {
        "ok": 1000,
        "far": OUT_OF_RACE_SCORE,
        "gone": OUT_OF_RACE_SCORE,
        "cut": OUT_OF_RACE_SCORE,
    }
    assert standby_scores([Standing("far", pos("3:0/20"), lag_bytes=5000)], max_lag=0) == {"far": 1000}


def test_bootstrap_hint_breaks_a_tie_of_empty_positions() -> None:
    scores = standby_scores([Standing("a", ZERO), Standing("seed", ZERO, hint=True)], 0)
    assert scores == {"seed": 1000, "a": 990}


def test_standby_scores_itself_only_without_a_primary() -> None:
    votes = {"n1": vote("n1", "3:0/10"), "n2": vote("n2", "3:0/20")}
    now = time.time()
    assert own_score_without_primary("n1", votes, now) == 990
    assert own_score_without_primary("n2", votes, now) == 1000
    with_primary = {**votes, "n3": vote("n3", "3:0/30", role="primary")}
    assert own_score_without_primary("n1", with_primary, now) is None
    assert own_score_without_primary("n9", votes, now) is None


def test_a_new_node_that_is_not_the_configured_primary_never_scores_itself_top() -> None:
    """Bootstrap: the first standby to publish must not take 1000 before the configured primary
    (the hinted node) has published; the hinted node does."""
    now = time.time()
    alone = {"n3": Vote("n3", "standby", 1, ZERO, ZERO, False, int(now))}
    assert own_score_without_primary("n3", alone, now) == 990
    both = {**alone, "n1": Vote("n1", "standby", 1, ZERO, ZERO, True, int(now))}
    assert own_score_without_primary("n1", both, now) == 1000
    assert own_score_without_primary("n3", both, now) == 990
    # before the cluster's first promotion it is not promotable at all (0), however long the
    # configured primary takes to start; the configured primary itself is unaffected
    assert own_score_without_primary("n3", alone, now, bootstrap=True) == 0
    assert own_score_without_primary("n1", both, now, bootstrap=True) == 1000


def test_a_fresh_failed_primary_claim_keeps_standbys_from_scoring_themselves() -> None:
    votes = {"n1": vote("n1", "3:0/10"), "n3": vote("n3", "3:0/30", role="failed")}
    now = time.time()
    assert own_score_without_primary("n1", votes, now) is None  # it may be holding us for a restart
    assert own_score_without_primary("n1", votes, now + FAILED_HOLD_S + 1) == 1000  # given up


def test_hold_standbys_only_for_a_primary_ahead_of_all_of_them() -> None:
    assert hold_for_restart(pos("3:0/30"), [pos("3:0/10"), pos("3:0/20")])
    assert not hold_for_restart(pos("3:0/30"), [pos("3:0/10"), pos("3:0/30")])  # one has it all
    assert not hold_for_restart(pos("3:0/30"), [])  # no standby known


def test_parse_position() -> None:
    assert parse_position("") == ZERO and parse_position(None) == ZERO
    assert parse_position(" 2:1/FF ") == LogPosition(2, (1 << 32) | 0xFF)
    with pytest.raises(ValueError):
        parse_position("junk")


# ------------------------------------------------------------------------------------- votes


def test_vote_round_trip_and_junk() -> None:
    v = Vote("n1", "standby", 4, pos("4:0/10"), pos("4:0/8"), True, 1700000000)
    assert v.to_attr() == "standby 4 4:0/10 4:0/8 1 1700000000"
    assert Vote.from_attr("n1", v.to_attr()) == v
    for junk in ("", " ", "standby 4 4:0/10", "standby x 4:0/10 4:0/8 0 1", "standby 4 bad 4:0/8 0 1", None):
        assert Vote.from_attr("n1", junk) is None
    assert parse_votes({"a": v.to_attr(), "b": "", "c": "junk"}) == {"a": Vote.from_attr("a", v.to_attr())}


# ---------------------------------------------------------------------------------- notify


def notify_env(**lists: str) -> dict[str, str]:
    env = {
        "OCF_RESKEY_CRM_meta_notify_type": lists.pop("type", "pre"),
        "OCF_RESKEY_CRM_meta_notify_operation": lists.pop("operation", "promote"),
    }
    env.update({f"OCF_RESKEY_CRM_meta_notify_{k}_uname": v for k, v in lists.items()})
    return env


def test_notification_lists_split_on_any_whitespace_and_a_lone_space_is_empty() -> None:
    n = Notification.from_env(
        notify_env(active="node1  node2\tnode3 ", promote="node2", stop=" ", promoted=" ", unpromoted="")
    )
    assert (n.type, n.operation) == ("pre", "promote")
    assert n.active == {"node1", "node2", "node3"}
    assert n.promote == {"node2"}
    assert n.stop == frozenset() and n.promoted == frozenset() and n.unpromoted == frozenset()


def test_notification_falls_back_to_master_slave_names() -> None:
    env = {
        "OCF_RESKEY_CRM_meta_notify_master_uname": "node1",
        "OCF_RESKEY_CRM_meta_notify_slave_uname": "node2 node3",
    }
    n = Notification.from_env(env)
    assert n.promoted == {"node1"} and n.unpromoted == {"node2", "node3"}
    assert Notification.from_env({}).type == "" and Notification.from_env({}).voters("x") == ()


def test_voters_are_everyone_running_after_the_transition_but_the_target() -> None:
    n = Notification.from_env(
        notify_env(active="n1 n2 n3", start="n4", stop="n3", demote="n1", promoted="n1", promote="n2")
    )
    assert n.voters("n2") == ("n1", "n4")  # the demoting old primary votes; n3 is stopping


@pytest.mark.parametrize(
    ("lists", "expected"),
    [
        ({"promoted": "n1"}, "n1"),
        ({"promoted": "n1", "demote": "n1", "promote": "n2"}, "n2"),
        ({"promote": "n2"}, "n2"),
        ({"promoted": " "}, None),
        ({"promoted": "n1", "stop": "n1"}, None),
    ],
)
def test_current_primary(lists: dict[str, str], expected: str | None) -> None:
    assert Notification.from_env(notify_env(**lists)).current_primary() == expected


# -------------------------------------------------------------------------------- election


def test_election_promotes_the_most_advanced_target() -> None:
    me = vote("n1", "3:0/30")
    result = elect(me, ["n2", "n3"], {"n2": vote("n2", "3:0/20"), "n3": vote("n3", "3:0/30")})
    assert result.promote and result.winner == "n1" and result.excluded == ()
    assert result.new_epoch == 4


def test_election_refuses_when_another_node_is_ahead_and_names_it() -> None:
    me = vote("n1", "3:0/10")
    votes = {"n2": vote("n2", "3:0/30"), "n3": vote("n3", "3:0/30"), "n4": vote("n4", "3:0/20")}
    result = elect(me, ["n4", "n3", "n2"], votes)
    assert not result.promote
    assert result.winner == "n2"  # tie between n2 and n3: the smallest name, on every node alike
    assert "n2 is ahead" in result.reason and "3:0/30" in result.reason


def test_election_compares_epoch_before_lsn() -> None:
    result = elect(vote("n1", "3:0/FFFF"), ["n2"], {"n2": vote("n2", "4:0/1", epoch=4)})
    assert not result.promote and result.winner == "n2"


def test_election_excludes_missing_voters_deterministically() -> None:
    result = elect(vote("n1", "3:0/10"), ["n2", "n3"], {"n2": vote("n2", "3:0/5")})
    assert result.promote and result.excluded == ("n3",)
    assert "n3" in result.reason and "excluded" in result.reason


def test_new_epoch_is_above_everything_seen() -> None:
    me = vote("n1", "3:0/10", epoch=3)
    assert elect(me, [], {}, cluster_epoch=7).new_epoch == 8
    assert elect(me, ["n2"], {"n2": vote("n2", "3:0/1", epoch=5)}).new_epoch == 6
    assert next_epoch() == 1 and next_epoch(0, 2, 1) == 3


def test_bootstrap_hint_wins_an_election_of_empty_nodes() -> None:
    me = Vote("n1", "standby", 0, ZERO)
    seed = Vote("n2", "standby", 0, ZERO, hint=True)
    result = elect(me, ["n2"], {"n2": seed})
    assert not result.promote and result.winner == "n2"


# ---------------------------------------------------------------------------- rejoin guard


def test_cluster_epoch_attribute() -> None:
    assert ClusterEpoch(5, pos("4:0/10")).to_attr() == "5@4:0/10"
    assert ClusterEpoch.from_attr("5@4:0/10") == ClusterEpoch(5, pos("4:0/10"))
    assert ClusterEpoch.from_attr("5") == ClusterEpoch(5, None)
    assert ClusterEpoch.from_attr("") is None and ClusterEpoch.from_attr("x@y") is None


def test_parse_terms() -> None:
    raw = [{"epoch": 5, "last": "5:0/10"}, {"epoch": 2, "last": None}]
    assert parse_terms(raw) == (PrimaryTerm(2, None), PrimaryTerm(5, pos("5:0/10")))
    assert parse_terms(None) == () and parse_terms([]) == ()
    for junk in ("x", [{"epoch": "5"}], [5], [{"last": "1:0/1"}]):
        with pytest.raises(ValueError):
            parse_terms(junk)


TERM = (PrimaryTerm(3, pos("3:0/500")),)


@pytest.mark.parametrize(
    ("terms", "diverged", "cluster", "ok", "words"),
    [
        ((), False, None, True, "never primary"),
        ((), True, None, False, "diverged"),
        (TERM, True, ClusterEpoch(3), True, "nobody was promoted since"),  # the last primary returns
        (TERM, False, ClusterEpoch(4, pos("3:0/100")), True, "provably not diverged"),
        (TERM, True, ClusterEpoch(4, pos("3:0/600")), True, "contained in the new history"),
        (TERM, True, ClusterEpoch(4, pos("3:0/500")), True, "contained"),
        (TERM, True, ClusterEpoch(4, pos("3:0/400")), False, "may hold transactions"),
        (TERM, True, ClusterEpoch(5, pos("4:0/900")), False, "epoch 5"),  # fork of a later epoch
        (TERM, True, None, False, "unknown"),  # no cluster record: fail closed
        (TERM, None, ClusterEpoch(4), False, "cannot tell"),  # daemon silent: fail closed
        ((PrimaryTerm(3, None),), True, ClusterEpoch(4, pos("3:0/600")), False, "epoch 3"),
    ],
)
def test_rejoin_guard(
    terms: Sequence[PrimaryTerm], diverged: bool | None, cluster: ClusterEpoch | None, ok: bool, words: str
) -> None:
    result = rejoin_guard(terms, diverged, cluster)
    assert result.ok is ok and words in result.reason


def test_rejoin_guard_uses_the_latest_term() -> None:
    terms = (PrimaryTerm(2, pos("2:0/1")), PrimaryTerm(6, pos("6:0/1")))
    assert rejoin_guard(terms, True, ClusterEpoch(6)).ok
    assert not rejoin_guard(terms, True, ClusterEpoch(7)).ok


# ------------------------------------------------------------------------ attribute commands


class FakeRunner:
    """Records command lines; answers from a queue of ``Completed`` (default: success, no output)."""

    def __init__(self, *answers: Completed) -> None:
        self.calls: list[list[str]] = []
        self.answers = list(answers)

    def __call__(self, argv: Sequence[str], timeout: float) -> Completed:
        self.calls.append(list(argv))
        return self.answers.pop(0) if self.answers else Completed(0, "", "")


NOT_CONNECTED = Completed(
    102, "", "crm_attribute: Could not connect to the CIB: Transport endpoint is not connected"
)


def test_attribute_names_carry_the_resource_without_the_clone_suffix() -> None:
    a = Attributes("pg:1", FakeRunner())
    assert base_resource("pg:1") == "pg" and a.resource == "pg"
    assert (a.position_name, a.election_name, a.epoch_name) == (
        "hodr-pg-pos",
        "hodr-pg-elect",
        "hodr-pg-epoch",
    )


def test_promotion_score_commands() -> None:
    run = FakeRunner(Completed(0, "", ""), Completed(0, "1000\n", ""), Completed(105, "", "No such device"))
    a = Attributes("hodr", run)
    a.set_score(1000, "node2")
    assert a.score() == 1000
    assert a.score("node3") is None
    assert run.calls == [
        ["crm_attribute", "--promotion", "-v", "1000", "-N", "node2"],
        ["crm_attribute", "--promotion", "-G", "-q"],
        ["crm_attribute", "--promotion", "-G", "-q", "-N", "node3"],
    ]


def test_set_score_polls_until_visible() -> None:
    run = FakeRunner(Completed(0, "", ""), Completed(0, "5\n", ""), Completed(0, "7\n", ""))
    Attributes("hodr", run).set_score(7, wait=Deadline(time.monotonic() + 5))
    assert len(run.calls) == 3


def test_set_score_gives_up_at_the_deadline() -> None:
    run = FakeRunner(Completed(0, "", ""), *[Completed(0, "5\n", "")] * 50)
    with pytest.raises(AttrUnavailable, match="not visible"):
        Attributes("hodr", run).set_score(7, wait=Deadline(time.monotonic() + 0.3))


def test_delete_of_an_absent_attribute_is_fine_but_no_cluster_is_not() -> None:
    Attributes("hodr", FakeRunner(Completed(105, "", "No such device or address"))).delete_score()
    with pytest.raises(AttrUnavailable, match="Could not connect"):
        Attributes("hodr", FakeRunner(NOT_CONNECTED)).set_score(1)
    with pytest.raises(AttrUnavailable):
        Attributes("hodr", FakeRunner(NOT_CONNECTED)).score()


def test_private_attributes() -> None:
    listing = 'name="hodr-hodr-pos" host="node1" value="a b"\nname="hodr-hodr-pos" host="node2" value=""\n'
    run = FakeRunner(
        Completed(0, "", ""),
        Completed(0, listing, ""),
        Completed(78, "", "Could not query value of hodr-hodr-pos: attribute does not exist"),
    )
    a = Attributes("hodr", run)
    a.set_private(a.position_name, "a b")
    assert a.private_all(a.position_name) == {"node1": "a b"}  # deleted = empty value = absent
    assert a.private_all(a.position_name) == {}
    assert run.calls[0] == ["attrd_updater", "-p", "-n", "hodr-hodr-pos", "-U", "a b"]
    assert run.calls[1] == ["attrd_updater", "-Q", "-A", "-n", "hodr-hodr-pos"]


def test_wait_private_all_returns_what_arrived_by_the_deadline() -> None:
    one = Completed(0, 'name="e" host="n1" value="x"\n', "")
    run = FakeRunner(*[one] * 100)
    got = Attributes("hodr", run).wait_private_all("e", ["n1", "n2"], Deadline(time.monotonic() + 0.3))
    assert got == {"n1": "x"} and len(run.calls) >= 2


def test_cluster_property_commands() -> None:
    run = FakeRunner(Completed(0, "5@4:0/10\n", ""), Completed(0, "", ""))
    a = Attributes("hodr", run)
    assert a.cluster_property(a.epoch_name) == "5@4:0/10"
    a.set_cluster_property(a.epoch_name, "6@5:0/1")
    assert run.calls[1] == [
        "crm_attribute",
        "--type",
        "crm_config",
        "--name",
        "hodr-hodr-epoch",
        "--update",
        "6@5:0/1",
    ]


def test_a_missing_tool_or_a_timeout_is_unavailable() -> None:
    for answer in (Completed(127, "", "crm_attribute: not installed"), Completed(124, "", "no answer")):
        with pytest.raises(AttrUnavailable):
            Attributes("hodr", FakeRunner(answer)).cluster_property("x")


# ---------------------------------------------------------------------- daemon identification


def test_only_hodr_run_of_this_config_counts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "hodr.yml"
    config.write_text("")
    link = tmp_path / "link.yml"
    link.symlink_to(config)
    c = str(config)
    assert is_hodr_run(["/venv/bin/python", "-m", "hodr", "run", "--role", "standby", c], c)
    assert is_hodr_run(["/usr/bin/hodr", "run", str(link)], c)
    assert not is_hodr_run(["/usr/bin/hodr", "status", c], c)
    assert not is_hodr_run(["/usr/bin/hodr", "run", str(tmp_path / "other.yml")], c)
    assert not is_hodr_run(["/usr/bin/postgres", "run", c], c)
    assert not is_hodr_run([], c)


def test_daemon_command_override() -> None:
    assert daemon_command({COMMAND_ENV: "python3 /x/fake_hodr.py"}) == ["python3", "/x/fake_hodr.py"]
    assert daemon_command({})[-1].endswith("hodr")


def test_daemon_command_prefers_the_repository_venv_over_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent may run on the distribution's python3; the daemon needs the .venv's drivers."""
    venv_hodr = PACKAGE_ROOT / ".venv" / "bin" / "hodr"
    if not venv_hodr.exists():
        pytest.skip("no repository .venv")
    monkeypatch.setattr("sys.executable", "/nonexistent/bin/python3")
    assert daemon_command({}) == [str(venv_hodr)]


def test_queries_over_all_nodes_drop_pacemakers_node_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``OCF_RESKEY_CRM_meta_on_node`` set, Pacemaker 2.1.5's ``attrd_updater -Q -A`` answers
    for that node only (lab); the election would then see no other node's position."""
    monkeypatch.setenv("OCF_RESKEY_CRM_meta_on_node", "node1")
    script = 'echo "${OCF_RESKEY_CRM_meta_on_node:-unset} $LC_ALL"'
    assert run_tool(["sh", "-c", script, "-A"], 5).stdout.split() == ["unset", "C"]
    assert run_tool(["sh", "-c", script, "-Q"], 5).stdout.split() == ["node1", "C"]
