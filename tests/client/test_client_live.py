"""ccsr.client against a real server running the tiny model."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from ccsr.client import AsyncClient, AuthError, Client, HTTPError, RequestFailed, ValidationError

API_KEY = "client-test-key"  # the key the `server` fixture accepts
FAST = {"steps": 3, "scale": 2}  # 2 network evaluations, 64x64 -> 128x128


def test_upload_subscribe_download(server, photo, tmp_path):
    statuses, logs, progress, ids = [], [], [], []
    with Client(server, API_KEY) as c:
        url = c.upload(photo)
        assert url.startswith(server + "/")
        out = c.subscribe(
            {"image_url": url, **FAST, "seed": 5},
            on_enqueue=ids.append, on_queue_update=statuses.append,
            on_log=logs.append, on_progress=progress.append,
        )
        assert out["seed"] == 5
        assert (out["image"]["width"], out["image"]["height"]) == (128, 128)
        dest = tmp_path / "out.png"
        data = c.download(out["image"]["url"], dest)
        assert dest.read_bytes() == data
        assert Image.open(io.BytesIO(data)).size == (128, 128)
        assert {"IN_PROGRESS", "COMPLETED"} <= {s.status for s in statuses}
        assert progress and progress[-1].step == progress[-1].total
        assert any(l.message.startswith("step ") for l in logs)
        # A finished request keeps answering status and result.
        st = c.status(ids[0], logs=True)
        assert st.done and st.error is None and st.logs
        assert c.result(ids[0])["seed"] == 5
        assert c.cancel(ids[0]) == "ALREADY_COMPLETED"


@pytest.mark.asyncio
async def test_async_submit_stream_result(server, photo):
    async with AsyncClient(server, API_KEY) as c:
        handle = await c.submit({"image_url": str(photo), **FAST})  # a local path is uploaded first
        assert handle.status_url.startswith(server)
        seen = [st async for st in c.stream_status(handle.request_id)]
        assert seen[-1].status == "COMPLETED" and seen[-1].error is None
        out = await c.result(handle.request_id)
        assert (out["image"]["width"], out["image"]["height"]) == (128, 128)


def test_cancel_makes_subscribe_fail(server, photo):
    with Client(server, API_KEY) as c:
        answers = []
        with pytest.raises(RequestFailed) as info:
            # Cancel as soon as it is queued; a long request so it cannot finish first.
            c.subscribe({"image_url": photo, "steps": 200}, on_enqueue=lambda rid: answers.append(c.cancel(rid)))
        assert answers == ["CANCELLATION_REQUESTED"]
        assert info.value.request_id
        with pytest.raises(HTTPError):
            c.result(info.value.request_id)


def test_validation_errors_name_the_field(server):
    with Client(server, API_KEY) as c:
        with pytest.raises(ValidationError) as info:
            c.submit({"image_url": "https://example.com/a.png", "scale": 99})
        assert "scale" in info.value.field_errors and "16" in info.value.field_errors["scale"]
        with pytest.raises(ValidationError) as info:
            c.submit({"image_url": "https://example.com/a.png", "t_min": 0.9, "t_max": 0.5})
        assert "t_min" in info.value.field_errors


def test_keys_are_checked(server):
    with Client(server, key=None) as c:
        with pytest.raises(AuthError):
            c.submit({"image_url": "https://example.com/a.png"})
    with Client(server, key="wrong") as c:
        with pytest.raises(AuthError, match="CCSR_KEY"):
            c.status("nope")
    with Client(server, API_KEY) as c:
        with pytest.raises(HTTPError) as info:
            c.status("no-such-request")
        assert info.value.status_code == 404
