"""The server's side of the Ray executor, fed the Ray driver's messages by
hand (no Ray, no driver process: tests/executors/test_ray_apps.py runs the
real ones). What is checked is the bookkeeping the scheduler relies on:
which actor is free, one ending per submitted request, and what a lost
cluster does to running requests, /readyz and a start timeout's message."""

from __future__ import annotations

from ccsr.executors.base import Done, Interrupted, Progress, Task, WorkerState
from ccsr.executors.ray import RayExecutor


class FakeLink:
    lost_reason = ""

    def __init__(self):
        self.sent: list[tuple] = []

    def send(self, msg: tuple) -> None:
        self.sent.append(msg)


def slot(name: str, ready: bool = True, **extra) -> dict:
    return {"name": name, "executor": "ray", "state": "ready" if ready else "starting", "ready": ready,
            "busy": False, "pid": 100 + int(name[-1]), "node_id": f"node-{name[-1]}", **extra}


def executor() -> tuple[RayExecutor, list, FakeLink]:
    ex = RayExecutor({}, app_ref="m:App", app_id="fal-ai/x", actor_options={"num_gpus": 1})
    events: list = []
    ex._emit, ex._link = events.append, FakeLink()
    return ex, events, ex._link


def task(rid: str) -> Task:
    return Task(rid, "fal-ai/x", None, f"in/{rid}", f"out/{rid}")


def test_free_actors_are_the_ready_ones_without_a_request():
    ex, events, link = executor()
    ex.on_driver_message(("slots", ex.key, [slot("actor-0"), slot("actor-1", ready=False)]))
    assert ex.ready and ex.idle_slots() == 1 and ex.unavailable() is None
    ex.submit(task("a"))
    assert link.sent == [("submit", ex.key, "actor-0", task("a"))]
    assert ex.idle_slots() == 0 and ex.running() == {"a": 100} and ex.node_running("a") == "node-0"
    assert [w["busy"] for w in ex.describe()] == [True, False]
    # A snapshot of the driver never frees an actor: only the request's ending does.
    ex.on_driver_message(("slots", ex.key, [slot("actor-0"), slot("actor-1", ready=False)]))
    assert ex.idle_slots() == 0
    ex.on_driver_message(("event", ex.key, Progress("a", 1, 4, 0.0)))
    assert ex.idle_slots() == 0
    done = Done("a", "out/a", "image/png", ".png", 1, {}, 0.1, {})
    ex.on_driver_message(("event", ex.key, done))
    assert ex.idle_slots() == 1 and events == [Progress("a", 1, 4, 0.0), done]


def test_a_request_refused_by_the_driver_goes_back_to_the_queue():
    ex, events, _ = executor()
    ex.on_driver_message(("slots", ex.key, [slot("actor-0")]))
    ex.submit(task("a"))
    ex.on_driver_message(("rejected", ex.key, "a"))
    assert isinstance(events[-1], Interrupted) and events[-1].request_id == "a"
    assert ex.idle_slots() == 1


def test_a_lost_cluster_requeues_running_requests_and_says_why_until_reconnected():
    ex, events, _ = executor()
    ex.on_driver_message(("slots", ex.key, [slot("actor-0"), slot("actor-1")]))
    ex.submit(task("a"))
    ex.on_lost("the Ray head's GCS at 10.0.0.1:6379 stopped answering")
    interrupted = [e for e in events if isinstance(e, Interrupted)]
    assert [e.request_id for e in interrupted] == ["a"] and "back to the queue" in interrupted[0].message
    assert [e.ready for e in events if isinstance(e, WorkerState)] == [False, False]
    assert not ex.ready and ex.idle_slots() == 0 and ex.running() == {}
    assert {w["state"] for w in ex.describe()} == {"disconnected"}
    assert "10.0.0.1:6379" in ex.unavailable() and "reconnects" in ex.unavailable()
    ex.on_connected()
    assert not ex.ready and {w["state"] for w in ex.describe()} == {"starting"}
    ex.on_driver_message(("slots", ex.key, [slot("actor-0"), slot("actor-1")]))
    assert ex.ready and ex.idle_slots() == 2


def test_why_no_actor_is_ready():
    ex, _, _ = executor()
    ex.on_driver_message(("slots", ex.key, [slot("actor-0", ready=False, waiting_for="a node with GPU:1 free")]))
    why = ex.unavailable()
    assert "fal-ai/x" in why and "1 actor waiting for a node with GPU:1 free" in why
    ex.on_driver_message(("slots", ex.key, [slot("actor-0", ready=False, error="OSError: no weights")]))
    assert "could not load the model (OSError: no weights)" in ex.unavailable()
