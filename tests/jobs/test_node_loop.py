"""The node loop talks to its scheduler through ccsr.jobs.cluster.NodeHost
only: a host offering exactly that (and nothing else) drives heartbeats,
cancels sent to another node, recovery of a dead node's jobs, refreshes and
late jobs, over a real job store. And the scheduler's timings and limits come
as one SchedulerConfig."""

from __future__ import annotations

import asyncio
import ast
import time
from pathlib import Path
from typing import Optional

import pytest

from ccsr.jobs.cluster import NodeHost, NodeLoop
from ccsr.jobs.config import SchedulerConfig
from ccsr.jobs.dbclock import DbClock
from ccsr.jobs.live import LiveJobs
from ccsr.jobs.queue_index import QueueIndex
from ccsr.jobs.store import JobStore
from ccsr.jobs.view import JobView
from ccsr.settings import Settings

APP = "some/app"
JOBS = Path(__file__).resolve().parents[2] / "src" / "ccsr" / "jobs"


class MinimalHost:
    """Exactly the members of NodeHost, recording what the loop asks for."""

    __slots__ = ("node", "store", "db_clock", "live", "queues", "cancelled", "expired", "wakes")

    def __init__(self, store: JobStore, node: str):
        self.node, self.store, self.live = node, store, LiveJobs()
        self.db_clock = DbClock(store.engine)
        self.queues = {APP: QueueIndex()}
        self.cancelled: list[str] = []
        self.expired: list[str] = []
        self.wakes = 0

    async def get(self, request_id: str) -> Optional[JobView]:
        view = self.live.get(request_id)
        if view is None:
            rec = self.store.get(request_id)
            view = JobView(rec) if rec else None
        return view

    async def expire(self, view: JobView) -> None:
        self.expired.append(view.request_id)

    def cancel_local_run(self, view: JobView) -> None:
        self.cancelled.append(view.request_id)

    def wake(self) -> None:
        self.wakes += 1


RECORDERS = {"cancelled", "expired", "wakes"}


def test_the_minimal_host_has_the_protocol_and_nothing_more():
    protocol = {n for n in vars(NodeHost) if not n.startswith("_")} | set(NodeHost.__annotations__)
    assert protocol == {"node", "store", "db_clock", "live", "queues", "get", "expire", "cancel_local_run", "wake"}
    host = {n for n in dir(MinimalHost) if not n.startswith("_")} | set(MinimalHost.__slots__)
    assert host - RECORDERS == protocol


@pytest.fixture
def store(tmp_path):
    s = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    s.create_all()
    yield s
    s.close()


def test_the_node_loop_runs_on_the_protocol_alone(store):
    host = MinimalHost(store, "node-a")
    loop = NodeLoop(host, lease=10.0, heartbeat_interval=1.0, poll_interval=0.1)
    for rid in ("mine", "dead", "late", "queued"):
        store.add(rid, {}, app_id=APP, start_deadline=time.time() - 1 if rid == "late" else None)
    # "mine" runs here; "dead" was claimed by a node whose lease has passed.
    mine = store.claim_next(app_id=APP, node="node-a", lease=10.0)
    assert store.claim_next(app_id=APP, node="node-gone", lease=10.0, now=time.time() - 60).request_id == "dead"
    view = JobView(mine)
    view.local_run = True
    host.live.add(view)
    store.request_cancel("mine")  # sent to another node

    async def steps() -> list[str]:
        assert abs(await loop.check_clock()) < 1  # one machine: the clocks agree
        await loop.heartbeat()
        recovered = await loop.recover()
        await loop.expire_late()
        await loop.refresh()
        return recovered

    recovered = asyncio.run(steps())
    assert host.cancelled == ["mine"] and view.cancel_requested  # the cancel reached this node's run
    assert recovered == ["dead"] and host.wakes == 1  # a dead node's job is queued again, dispatch woken
    assert store.get("mine").lease_until > time.time() + 5  # the lease was renewed
    assert host.expired == ["late"]
    assert host.queues[APP].ids() == ["dead", "late", "queued"]  # the queue order, from the store


def _private_uses(path: Path, owner: str) -> list[str]:
    """``<owner>._name`` attribute uses in ``path`` (owner: the variable or attribute name)."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            base = node.value
            name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", None)
            if name == owner:
                found.append(f"{owner}.{node.attr} (line {node.lineno})")
    return found


def test_no_private_attribute_crosses_the_boundary():
    assert _private_uses(JOBS / "cluster.py", "host") == []
    assert _private_uses(JOBS / "scheduler.py", "node_loop") == []


def test_scheduler_config_from_settings():
    settings = Settings(result_ttl=60, max_attempts=4, max_interruptions=2, node_id="n1", lease_seconds=9,
                        heartbeat_interval=3, poll_interval=0.25, log_flush_interval=0.1)
    config = SchedulerConfig.from_settings(settings, sweep_interval=0.2)
    assert (config.result_ttl, config.max_attempts, config.max_interruptions, config.node_id) == (60, 4, 2, "n1")
    assert (config.lease_seconds, config.heartbeat_interval, config.poll_interval) == (9, 3, 0.25)
    assert (config.log_flush_interval, config.sweep_interval) == (0.1, 0.2)
    assert SchedulerConfig().lease_seconds == Settings().lease_seconds  # the same defaults
    with pytest.raises(ValueError, match="lease_seconds"):
        SchedulerConfig(lease_seconds=5, heartbeat_interval=2)


def test_a_clock_off_from_the_databases_is_warned_about_once(store, caplog):
    host = MinimalHost(store, "node-a")
    host.db_clock = DbClock(store.engine, clock=lambda: time.time() + 12)  # this server's clock: 12 s ahead
    loop = NodeLoop(host, lease=10.0, heartbeat_interval=1.0, poll_interval=0.1)
    with caplog.at_level("WARNING", logger="ccsr.jobs.cluster"):
        offset = asyncio.run(loop.check_clock())
        asyncio.run(loop.check_clock())
    assert -13 < offset < -11 and abs(host.db_clock.now() - time.time()) < 1  # estimates the database's time
    warnings = [r.getMessage() for r in caplog.records if "clock" in r.getMessage()]
    assert len(warnings) == 1 and "12.0 s ahead of the database's" in warnings[0], warnings


def test_lease_seconds_is_capped():
    from ccsr.jobs.config import MAX_LEASE_SECONDS

    with pytest.raises(ValueError, match="lease_seconds"):
        Settings(lease_seconds=600)
    with pytest.raises(ValueError, match="lease_seconds"):
        SchedulerConfig(lease_seconds=MAX_LEASE_SECONDS + 1)
    assert Settings(lease_seconds=MAX_LEASE_SECONDS).lease_seconds == MAX_LEASE_SECONDS
