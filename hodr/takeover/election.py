"""hodr-replica's decisions, as pure functions: promotion scores, notify variables, the pre-promote
election and the rejoin guard.

Why pure: these decide which database becomes writable, so they must be testable without a
cluster, a daemon or a clock (Patroni's ``tests/test_ha.py`` shows what happens when a decision
engine calls adapters directly: dozens of mocks keyed on command text). The agent gathers facts
(status snapshot, node attributes, notify environment) and passes them in; these functions answer.

Positions are ``LogPosition`` values, compared epoch first (architecture I1), never anything that
resets when a process restarts (ClusterLabs/PAF#225, #228). Scores are small integers: Pacemaker
treats anything above 1,000,000 as INFINITY, and when every instance scores 0 nothing is promoted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from hodr.position import ZERO, LogPosition

PRIMARY_SCORE = 1001  # the running primary: above every standby, so the role does not bounce back
TOP_STANDBY_SCORE = 1000  # the most advanced standby
RANK_STEP = 10  # each rank further back loses this much
MIN_STANDBY_SCORE = 1  # a usable standby never drops to 0 or below, however many there are
OUT_OF_RACE_SCORE = -1000  # disconnected, detached, or further behind than max_lag
LOSER_SCORE = 1  # a promote target that found a better node: still usable, but last
DEMOTED_SCORE = TOP_STANDBY_SCORE  # a freshly demoted primary: below the new primary's 1001
HOLD_SCORE = -1  # standbys while a crashed primary that holds more data is restarted in place

ROLE_PRIMARY = "primary"
ROLE_STANDBY = "standby"
ROLE_FAILED = "failed"  # published by a crashed primary's cleanup, until it restarts or is given up
FAILED_HOLD_S = 120  # after this, a failed primary's claim no longer stops standbys scoring themselves


def parse_position(text: str | None) -> LogPosition:
    """A status or attribute position; empty means nothing received yet (``ZERO``).

    Raises ``ValueError`` on junk: a position nobody can read must not rank anywhere.
    """
    if text is None or not text.strip():
        return ZERO
    return LogPosition.parse(text.strip())


# ------------------------------------------------------------------------------------ scores


@dataclass(frozen=True)
class Standing:
    """One standby's claim to promotion, as its primary (or its own published position) shows it.

    ``hint`` breaks ties on a brand-new cluster: the node whose YAML says ``role: primary`` holds the
    data every other node is to be seeded from, so it must win a bootstrap with all positions zero.
    """

    node: str
    durable: LogPosition
    connected: bool = True
    lag_bytes: int = 0
    detached: bool = False
    hint: bool = False

    def key(self) -> tuple[LogPosition, bool]:
        return (self.durable, self.hint)


def standby_score(rank: int) -> int:
    """1000 for rank 1, 990 for rank 2, ... never below ``MIN_STANDBY_SCORE``."""
    return max(MIN_STANDBY_SCORE, TOP_STANDBY_SCORE - RANK_STEP * (rank - 1))


def eligible(standing: Standing, max_lag: int) -> bool:
    """In the race: connected, attached, and at most ``max_lag`` bytes behind (0: no limit)."""
    if not standing.connected or standing.detached:
        return False
    return max_lag <= 0 or standing.lag_bytes <= max_lag


def standby_scores(standings: Iterable[Standing], max_lag: int) -> dict[str, int]:
    """Promotion scores for standbys: dense rank by durable position (then the bootstrap hint).

    Equal positions get equal scores, so two standbys that hold the same data do not flip-flop
    between monitors; the most advanced eligible standby always holds ``TOP_STANDBY_SCORE``.
    """
    standings = list(standings)
    keys = sorted({s.key() for s in standings if eligible(s, max_lag)}, reverse=True)
    rank = {key: i + 1 for i, key in enumerate(keys)}
    return {
        s.node: standby_score(rank[s.key()]) if eligible(s, max_lag) else OUT_OF_RACE_SCORE for s in standings
    }


def hold_for_restart(capture: LogPosition, acked: Iterable[LogPosition]) -> bool:
    """Should the standbys wait while Pacemaker restarts a crashed primary in place?

    Yes when the primary holds commits no standby acknowledged: a standby promoted now would
    leave them behind. Pacemaker never promotes the failed instance itself in its recovery
    transition (lab), so without this it picks the best standby, whose election then refuses
    (a failed promote and a fail count on the best standby at every primary crash). With no
    standby known there is nothing to hold.
    """
    acked = list(acked)
    return bool(acked) and max(acked) < capture


# --------------------------------------------------------------------- published positions


@dataclass(frozen=True)
class Vote:
    """What a node publishes about itself: role, epoch, durable and applied position.

    Published as a private node attribute, both continuously (``hodr-<rsc>-pos``, so a standby can
    rank itself when there is no primary, and a promote outside a transition can see other
    instances) and in pre-promote (``hodr-<rsc>-elect``, the election). ``stamp`` is the writer's
    wall clock, only used to ignore values left over from an aborted election.
    """

    node: str
    role: str
    epoch: int
    durable: LogPosition
    applied: LogPosition = ZERO
    hint: bool = False
    stamp: int = 0

    def to_attr(self) -> str:
        return f"{self.role} {self.epoch} {self.durable} {self.applied} {int(self.hint)} {self.stamp}"

    @classmethod
    def from_attr(cls, node: str, text: str | None) -> Vote | None:
        """Parse an attribute value; ``None`` for an empty (deleted) or unreadable one."""
        fields = (text or "").split()
        if len(fields) != 6:
            return None
        role, epoch, durable, applied, hint, stamp = fields
        try:
            return cls(
                node=node,
                role=role,
                epoch=int(epoch),
                durable=parse_position(durable),
                applied=parse_position(applied),
                hint=hint == "1",
                stamp=int(stamp),
            )
        except ValueError:
            return None

    def standing(self) -> Standing:
        return Standing(self.node, self.durable, hint=self.hint)


def parse_votes(values: Mapping[str, str]) -> dict[str, Vote]:
    """Attribute values by node → the readable votes (empty and junk values are dropped)."""
    out = {}
    for node, text in values.items():
        vote = Vote.from_attr(node, text)
        if vote is not None:
            out[node] = vote
    return out


def published_primaries(votes: Mapping[str, Vote], me: str, since_epoch: int) -> list[Vote]:
    """The other nodes that publish themselves primary in ``since_epoch`` or later, newest
    epoch first: whom a disconnected standby should follow, and whom it is missing."""
    found = [v for v in votes.values() if v.role == ROLE_PRIMARY and v.node != me and v.epoch >= since_epoch]
    return sorted(found, key=lambda v: (-v.epoch, v.node))


def own_score_without_primary(
    me: str, votes: Mapping[str, Vote], now: float, bootstrap: bool = False
) -> int | None:
    """A standby's own score when no primary is running, from every published position.

    ``bootstrap``: nobody was ever promoted in this cluster (no cluster epoch record): a
    brand-new node that is not the configured primary then scores 0 (never promoted), so the
    YAML's primary becomes the first primary even when it starts last (CI, loaded machine: the
    configured primary's start was slow and Pacemaker promoted a standby that had published).

    ``None`` when some node still publishes itself as primary: scoring standbys is then that
    primary's job, and two writers would flip-flop the value. Also ``None`` while a crashed
    primary's cleanup claim (``failed``) is fresh: it may be holding the standbys below zero for
    its restart in place (``hold_for_restart``); a claim older than ``FAILED_HOLD_S`` is given up
    (the primary was banned or cannot come back) and the standbys score themselves again.
    """
    for node, v in votes.items():
        if node == me:
            continue
        if v.role == ROLE_PRIMARY or (v.role == ROLE_FAILED and now - v.stamp < FAILED_HOLD_S):
            return None
    standbys = [v.standing() for v in votes.values() if v.role == ROLE_STANDBY]
    mine = next((s for s in standbys if s.node == me), None)
    if mine is None:
        return None
    score = standby_scores(standbys, max_lag=0)[me]
    if mine.durable == ZERO and not mine.hint:
        # A brand-new node that is not the configured primary never takes the top score, even
        # while it is the only one that has published yet (lab: the first standby to score
        # itself was picked, and its election had to refuse: a failed action at bootstrap).
        score = 0 if bootstrap else min(score, standby_score(2))
    return score


# ---------------------------------------------------------------------------- notify variables

NOTIFY_LISTS = ("start", "stop", "active", "promote", "demote", "promoted", "unpromoted")
#: Pacemaker 2.1 still sets the deprecated names; older versions set only those.
DEPRECATED = {"promoted": "master", "unpromoted": "slave"}


@dataclass(frozen=True)
class Notification:
    """The notify environment of one notification (``OCF_RESKEY_CRM_meta_notify_*``).

    Lists are node names. Pacemaker separates them with blanks and writes an empty list as a single
    space, so they are split with ``str.split()`` and no argument (resource-agents#1706).
    """

    type: str = ""
    operation: str = ""
    start: frozenset[str] = frozenset()
    stop: frozenset[str] = frozenset()
    active: frozenset[str] = frozenset()
    promote: frozenset[str] = frozenset()
    demote: frozenset[str] = frozenset()
    promoted: frozenset[str] = frozenset()
    unpromoted: frozenset[str] = frozenset()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Notification:
        def names(what: str) -> frozenset[str]:
            key = f"OCF_RESKEY_CRM_meta_notify_{what}_uname"
            value = env.get(key)
            if value is None and what in DEPRECATED:
                value = env.get(f"OCF_RESKEY_CRM_meta_notify_{DEPRECATED[what]}_uname")
            return frozenset((value or "").split())

        return cls(
            type=(env.get("OCF_RESKEY_CRM_meta_notify_type") or "").strip(),
            operation=(env.get("OCF_RESKEY_CRM_meta_notify_operation") or "").strip(),
            **{what: names(what) for what in NOTIFY_LISTS},
        )

    def voters(self, me: str) -> tuple[str, ...]:
        """Who must publish a position before *me* may be promoted: every instance running once
        this transition's starts are done, apart from those it stops (a demoting primary votes:
        in a switchover it holds the most data)."""
        running = self.active | self.start | self.promoted | self.unpromoted | self.demote
        return tuple(sorted(running - self.stop - {me}))

    def current_primary(self) -> str | None:
        """The primary standbys should follow after this transition, if exactly one is known."""
        after = (self.promoted - self.demote - self.stop) | self.promote
        return next(iter(after)) if len(after) == 1 else None


# ---------------------------------------------------------------------------------- election


@dataclass(frozen=True)
class ElectionResult:
    """What promote does: go ahead, or refuse because ``winner`` holds more data."""

    promote: bool
    winner: str
    reason: str
    excluded: tuple[str, ...] = ()
    new_epoch: int = 1


def next_epoch(*epochs: int) -> int:
    """The epoch a promotion moves to: above every epoch anyone has seen (architecture I1)."""
    return max(epochs, default=0) + 1


def elect(
    me: Vote, voters: Sequence[str], votes: Mapping[str, Vote], cluster_epoch: int = 0
) -> ElectionResult:
    """Decide the pre-promote election on the promote target *me*.

    - A voter whose value never arrived is excluded deterministically and named (PAF#9, #131):
      waiting for it forever would block every promotion behind one lost attribute update.
    - Another voter strictly ahead by durable position (then the bootstrap hint) wins; among
      several, the most advanced, then the smallest node name — every node computes the same.
    - Equal positions keep the target: moving the promotion for nothing would only add a round.
    """
    present = {n: votes[n] for n in voters if n in votes and n != me.node}
    excluded = tuple(sorted(n for n in voters if n not in present and n != me.node))
    epoch = next_epoch(
        cluster_epoch,
        me.epoch,
        me.durable.epoch,
        *(v.epoch for v in present.values()),
        *(v.durable.epoch for v in present.values()),
    )
    mine = (me.durable, me.hint)
    ahead = [v for v in present.values() if (v.durable, v.hint) > mine]
    missing = f"; no position from {', '.join(excluded)} (excluded)" if excluded else ""
    if ahead:
        top = max((v.durable, v.hint) for v in ahead)
        best = min((v for v in ahead if (v.durable, v.hint) == top), key=lambda v: v.node)
        return ElectionResult(
            promote=False,
            winner=best.node,
            reason=(
                f"{best.node} is ahead of this node (durable {best.durable} vs {me.durable} here): "
                f"promotion moved to it{missing}"
            ),
            excluded=excluded,
            new_epoch=epoch,
        )
    compared = ", ".join(sorted(present)) or "no other node"
    return ElectionResult(
        promote=True,
        winner=me.node,
        reason=f"most advanced (durable {me.durable}; compared with {compared}){missing}",
        excluded=excluded,
        new_epoch=epoch,
    )


# ------------------------------------------------------------------------------- rejoin guard


@dataclass(frozen=True)
class PrimaryTerm:
    """An epoch this node was primary in, and its last durable position then (if known)."""

    epoch: int
    last: LogPosition | None = None


@dataclass(frozen=True)
class ClusterEpoch:
    """The cluster-wide record a promotion leaves: the new epoch, and where its history forks off
    (the new primary's durable position when it took over: everything up to it is shared).

    Stored as a cluster property ``hodr-<rsc>-epoch`` with the value ``EPOCH@POSITION``.
    """

    epoch: int
    fork: LogPosition | None = None

    def to_attr(self) -> str:
        return f"{self.epoch}@{self.fork}" if self.fork is not None else str(self.epoch)

    @classmethod
    def from_attr(cls, text: str | None) -> ClusterEpoch | None:
        text = (text or "").strip()
        if not text:
            return None
        epoch, _, fork = text.partition("@")
        try:
            return cls(int(epoch), LogPosition.parse(fork) if fork else None)
        except ValueError:
            return None


def parse_terms(raw: object) -> tuple[PrimaryTerm, ...]:
    """``status.extra["primary_epochs"]`` (a list of ``{epoch, last}``) → terms, oldest first.

    Raises ``ValueError`` on a malformed list: the guard must not read junk as "never primary".
    """
    if raw is None:
        return ()
    if not isinstance(raw, list | tuple):
        raise ValueError(f"primary_epochs: expected a list, got {raw!r}")
    terms = []
    for item in raw:
        if not isinstance(item, Mapping) or not isinstance(item.get("epoch"), int):
            raise ValueError(f"primary_epochs: expected {{epoch, last}}, got {item!r}")
        last = item.get("last")
        terms.append(PrimaryTerm(item["epoch"], parse_position(last) if last else None))
    return tuple(sorted(terms, key=lambda t: t.epoch))


@dataclass(frozen=True)
class GuardResult:
    ok: bool
    reason: str


def rejoin_guard(
    terms: Sequence[PrimaryTerm], diverged: bool | None, cluster: ClusterEpoch | None
) -> GuardResult:
    """May this node run as a standby (or be promoted) without an operator's decision?

    A node that was primary may hold transactions no other node received. It rejoins by itself
    only when that is provably not so:

    1. it was never primary and the daemon does not call it diverged;
    2. nobody was promoted after its last term (the cluster epoch is not newer): it is simply the
       most recent primary coming back, and the election will prefer it;
    3. the daemon says it did not diverge (sync mode, or its final marker was acked);
    4. the new history forked off at or after its last position in its last epoch.

    Otherwise it refuses, failing closed when a fact is missing (no cluster record, the daemon
    silent on divergence): a wrong "yes" silently streams from a diverged history (PAF#127).
    """
    if not terms:
        if diverged:
            return GuardResult(False, "the daemon reports this node's history as diverged: reseed it")
        return GuardResult(True, "never primary")
    last = terms[-1]
    where = f"primary in epoch {last.epoch}" + (f" up to {last.last}" if last.last is not None else "")
    if cluster is not None and cluster.epoch <= last.epoch:
        return GuardResult(True, f"{where}, and nobody was promoted since (cluster epoch {cluster.epoch})")
    if diverged is False:
        return GuardResult(True, f"{where}, provably not diverged (every commit reached a standby)")
    if (
        cluster is not None
        and cluster.fork is not None
        and last.last is not None
        and cluster.fork.epoch == last.epoch
        and last.last <= cluster.fork
    ):
        return GuardResult(True, f"{where}, contained in the new history (forked at {cluster.fork})")
    now = f"the cluster is at epoch {cluster.epoch}" if cluster else "the cluster's epoch is unknown"
    why = "may hold transactions no other node received" if diverged else "cannot tell whether it diverged"
    return GuardResult(
        False,
        f"this node was {where}; {now}; it {why}: it will not rejoin or be promoted by itself "
        "(reseed it, see docs/replica-agent.md)",
    )
