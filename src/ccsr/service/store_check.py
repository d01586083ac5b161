"""One blob store per database: servers sharing a database must share their
blob store, or a request submitted to one fails on the other (its input and
results live in the first one's store), blamed on the client.

Each server, at start, writes a marker of its own into its blob store
(``servers/<token>``, :func:`ccsr.storage.keys.server_marker`) and then
records the token in the database (``ccsr_servers``), renewing the record's
``last_seen`` while it runs and removing both at a clean stop. It then looks
for the markers of the other live servers (seen within ``lease_seconds``, the
time after which their jobs are taken for dead too) in its own store: a
missing one means another store, and the server refuses to start, naming both
stores and the way out. Refusing rather than warning: the mismatch fails
nearly every request, and nothing it could serve meanwhile would work.

A store that does not answer at start (an S3 outage) is not checked (a
warning says so): the server starts as it does without this check. Times are
the database's (:mod:`ccsr.jobs.dbclock`). No HTTP here; the app calls
:func:`join` before its scheduler starts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import uuid
from typing import Optional

from sqlalchemy import Float, String, Text, delete, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, mapped_column

from ccsr.jobs.db import Base
from ccsr.jobs.dbclock import db_now, now_sql
from ccsr.storage import keys
from ccsr.storage.base import BlobStore

log = logging.getLogger("ccsr.service.store_check")

#: Records not renewed for this long are of servers long gone: deleted at start.
FORGET_AFTER = 24 * 3600.0


class ServerRecord(Base):
    """A running server: its marker's token, its node id and the store it uses."""

    __tablename__ = "ccsr_servers"

    token: Mapped[str] = mapped_column(String(32), primary_key=True)
    node: Mapped[str] = mapped_column(String(128))
    host: Mapped[str] = mapped_column(String(255))
    store: Mapped[str] = mapped_column(Text)  # described for people: never credentials
    started_at: Mapped[float] = mapped_column(Float)
    last_seen: Mapped[float] = mapped_column(Float, index=True)


class StoreMismatch(RuntimeError):
    """Another live server on this database uses another blob store."""


def describe(blobs: BlobStore) -> str:
    """The store in words, from its spec (bucket or directory; no secrets)."""
    spec = blobs.spec()
    if spec.get("kind") == "local":
        return f"local directory {spec.get('root')}"
    if spec.get("kind") == "s3":
        where = spec.get("endpoint_url") or "AWS"
        prefix = spec.get("prefix") or ""
        return f"S3 bucket {spec.get('bucket')}{'/' + prefix if prefix else ''} at {where}"
    return str(spec.get("kind", "unknown store"))


class StorePresence:
    """This server's marker and record; :meth:`run` keeps the record alive."""

    def __init__(self, engine: Engine, blobs: BlobStore, node: str, token: Optional[str]):
        self.engine = engine
        self.blobs = blobs
        self.node = node
        self.token = token  # None: the store did not answer at start, nothing recorded

    def touch(self) -> None:
        if self.token is None:
            return
        with self.engine.begin() as conn:
            conn.execute(update(ServerRecord).where(ServerRecord.token == self.token)
                         .values(last_seen=now_sql(conn.dialect.name)))

    async def run(self, interval: float) -> None:
        """Renew the record every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.touch)
            except Exception:  # noqa: BLE001 - a database hiccup: the next renewal may work
                log.warning("renewing this server's record failed", exc_info=True)

    def leave(self) -> None:
        """Remove the record and the marker (a clean stop)."""
        if self.token is None:
            return
        try:
            with self.engine.begin() as conn:
                conn.execute(delete(ServerRecord).where(ServerRecord.token == self.token))
            self.blobs.delete(keys.server_marker(self.token))
        except Exception:  # noqa: BLE001 - left behind, forgotten after FORGET_AFTER
            log.warning("removing this server's record failed", exc_info=True)


def join(engine: Engine, blobs: BlobStore, node: str, live_window: float) -> StorePresence:
    """Write this server's marker and record, then check that every other live
    server's marker is in this store; :class:`StoreMismatch` if one is not."""
    with engine.begin() as conn:
        Base.metadata.create_all(conn, tables=[ServerRecord.__table__])
    token = uuid.uuid4().hex
    store = describe(blobs)
    host = socket.gethostname()[:255]
    try:  # the marker first: whoever reads the record may look for it at once
        blobs.put(keys.server_marker(token), json.dumps({"node": node, "host": host}).encode(),
                  content_type="application/json")
    except Exception as exc:  # noqa: BLE001 - an outage must not keep the server down
        log.warning("the blob store (%s) did not answer at start (%s): not checked whether the other servers on "
                    "this database use it too", store, type(exc).__name__)
        return StorePresence(engine, blobs, node, None)
    with engine.begin() as conn:
        now = db_now(conn)
        gone = list(conn.scalars(select(ServerRecord.token).where(ServerRecord.last_seen < now - FORGET_AFTER)))
        if gone:
            conn.execute(delete(ServerRecord).where(ServerRecord.token.in_(gone)))
        # Recorded before looking: two servers starting together with different
        # stores then both see the other and both refuse (never both start).
        conn.execute(ServerRecord.__table__.insert().values(token=token, node=node[:128], host=host, store=store,
                                                            started_at=now, last_seen=now))
    with engine.connect() as conn:
        now = db_now(conn)
        others = conn.execute(select(ServerRecord).where(ServerRecord.token != token,
                                                         ServerRecord.last_seen >= now - live_window)).all()
    presence = StorePresence(engine, blobs, node, token)
    for marker in gone:
        _quietly(blobs.delete, keys.server_marker(marker))
    for other in others:
        try:
            seen = blobs.stat(keys.server_marker(other.token)) is not None
        except Exception:  # noqa: BLE001 - unknown is not a mismatch
            log.warning("could not look for the marker of server %s in the blob store", other.node, exc_info=True)
            continue
        if not seen:
            presence.leave()
            raise StoreMismatch(
                f"server {other.node} on {other.host} uses the same database with another blob store "
                f"({other.store}; this server: {store}), seen {max(0.0, now - other.last_seen):.1f} s ago. "
                "Requests submitted to one server would fail on the other. Give every server sharing a database "
                "the same storage: one S3 bucket (blob_store=s3 with the same s3_bucket and s3_prefix) or one "
                "directory on a shared filesystem (data_dir). Refusing to start.")
    return presence


def _quietly(fn, *args) -> None:  # noqa: ANN001
    try:
        fn(*args)
    except Exception:  # noqa: BLE001
        pass
