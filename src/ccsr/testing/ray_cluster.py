"""A local multi-node Ray cluster for tests and benchmarks.

``ray.cluster_utils.Cluster`` runs a head and several "nodes" (each its own
raylet and object store) on this machine, which is how the Ray executor is
tested without GPUs: every worker node carries a custom resource
(:data:`WORKER_RESOURCE`) standing in for a GPU, and the actors ask for it.

Kept in the package (like :mod:`ccsr.testing`) so the test fixtures and
``benchmarks/bench_ray.py`` share one implementation. Importing this module
sets the environment Ray reads at import time, so import it before ``ray``.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator, Optional

# Ray reads these when it is first imported: keep every address on loopback
# (otherwise Ray swaps 127.0.0.1 for the machine's external address) and
# never phone home.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

#: The custom resource a worker node offers in place of a GPU.
WORKER_RESOURCE = "ccsr_worker"
#: Actor options that place one actor per worker node without GPUs.
TEST_ACTOR_OPTIONS = {"num_gpus": 0, "num_cpus": 0, "resources": {WORKER_RESOURCE: 1}}


class LocalCluster:
    """Head (no worker resource) plus ``nodes`` worker nodes on loopback."""

    def __init__(
        self,
        nodes: int = 2,
        *,
        env: Optional[dict] = None,
        health_check_period_ms: int = 500,
        object_store_mb: int = 80,
    ):
        from ray.cluster_utils import Cluster

        self._store = object_store_mb * 1024 * 1024
        # Actor processes inherit their raylet's environment, not the driver's:
        # ``env`` (e.g. CCSR_FAKE_STEP_SECONDS) is set while the nodes start.
        self.env = {k: str(v) for k, v in (env or {}).items()}
        system = {
            # Node loss becomes visible within a few seconds, not 30+.
            "health_check_period_ms": health_check_period_ms,
            "health_check_failure_threshold": 3,
        }
        self._head_args = {
            "num_cpus": 1,
            "node_ip_address": "127.0.0.1",
            "object_store_memory": self._store,
            "include_dashboard": False,
            "_system_config": system,
        }
        with self._environment():
            self.cluster = Cluster(initialize_head=True, head_node_args=self._head_args)
        self.workers: list = []
        for _ in range(nodes):
            self.add_node()

    @contextlib.contextmanager
    def _environment(self) -> Iterator[None]:
        old = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            yield
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    @property
    def address(self) -> str:
        """The GCS address (``host:port``) drivers pass to ``ray.init``."""
        return self.cluster.address

    def add_node(self):  # noqa: ANN201 - ray's Node
        """Start one more worker node (one unit of :data:`WORKER_RESOURCE`)."""
        with self._environment():
            node = self.cluster.add_node(
                num_cpus=1,
                node_ip_address="127.0.0.1",
                object_store_memory=self._store,
                resources={WORKER_RESOURCE: 1},
            )
        self.workers.append(node)
        return node

    def node_by_id(self, node_id: str):  # noqa: ANN201
        """The worker node whose Ray node id is ``node_id``."""
        return next(n for n in self.workers if n.node_id == node_id)

    def remove_node(self, node, allow_graceful: bool = False) -> None:  # noqa: ANN001
        self.cluster.remove_node(node, allow_graceful=allow_graceful)
        if node in self.workers:
            self.workers.remove(node)

    def kill_head(self) -> None:
        """Kill the head's processes (GCS, raylet) with SIGKILL, as a crash would."""
        self._port = int(self.address.rsplit(":", 1)[1])
        self.cluster.remove_node(self.cluster.head_node, allow_graceful=False)

    def restart_head(self, nodes: int = 2) -> None:
        """A new head on the killed one's GCS port (as ``ray start --head
        --port`` after a crash), and ``nodes`` fresh worker nodes: the old
        ones' raylets do not outlive their head (no GCS fault tolerance) and
        are removed."""
        for node in list(self.workers):
            try:
                self.remove_node(node, allow_graceful=False)
            except Exception:  # noqa: BLE001 - already gone with its head
                if node in self.workers:
                    self.workers.remove(node)
        with self._environment():
            self.cluster.add_node(gcs_server_port=self._port, **self._head_args)
        for _ in range(nodes):
            self.add_node()

    def shutdown(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        self.cluster.shutdown()


@contextlib.contextmanager
def local_cluster(nodes: int = 2, **kwargs) -> Iterator[LocalCluster]:
    """Start a :class:`LocalCluster`; always shut it down afterwards."""
    c = LocalCluster(nodes, **kwargs)
    try:
        yield c
    finally:
        c.shutdown()
