"""fal-ai/ccsr's checks, at the service's two trust boundaries: at submit
(everything that needs no image, FastAPI's 422 naming the field, before any
request exists) and once the image is decoded (size limits, as the result)."""

from __future__ import annotations

import base64

import httpx
import pytest

from ccsr.models.ccsr_v1.app import CCSRApp
from ccsr.errors import InvalidParameter
from ccsr.executors.thread import ThreadExecutor
from ccsr.testing import FakeEngine
from ccsr.models.ccsr_v1.params import UpscaleParams, check_params, check_size
from ccsr.service.app import create_app
from ccsr.settings import Settings

from svc_helpers import png_data_uri, serve_app, wait_status

Q = "/queue/fal-ai/ccsr"


@pytest.fixture
def client(tmp_path):
    app = create_app(Settings(data_dir=tmp_path, max_output_pixels=64 * 64), executor=ThreadExecutor(FakeEngine(0.0)))
    with serve_app(app) as base, httpx.Client(base_url=base, timeout=30) as c:
        yield c, app


@pytest.mark.parametrize("fields, field", [
    ({"t_min": 0.7, "t_max": 0.6}, "t_min"),
    ({"steps": 2, "t_min": 0.5, "t_max": 0.6}, "steps"),
    ({"tile_diffusion": "mix", "tile_diffusion_size": 100}, "tile_diffusion_size"),
    ({"tile_diffusion": "mix", "tile_diffusion_size": 256, "tile_diffusion_stride": 512}, "tile_diffusion_stride"),
])
def test_cross_field_errors_come_back_at_submit(client, fields, field):
    c, app = client
    r = c.post(Q, json={"image_url": png_data_uri(), **fields})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail[0]["loc"] == ["body", field] and detail[0]["type"] == "value_error" and detail[0]["msg"]
    assert app.state.store.count_by_status() == {}  # rejected before a request existed
    r = c.post("/fal-ai/ccsr", json={"image_url": png_data_uri(), **fields})  # the sync route checks the same
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", field]


def test_size_limits_are_checked_once_the_image_is_decoded(client):
    c, app = client
    body = {"image_url": png_data_uri(40, 40), "scale": 2, "steps": 4}  # 80x80 > 64x64
    r = c.post(Q, json=body)  # a data URI's header is read at submit: refused at once
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "scale"], r.text
    stored = app.state.files.save(base64.b64decode(body["image_url"].split(",", 1)[1]), "image/png", "in.png")
    sub = c.post(Q, json={**body, "image_url": str(c.base_url).rstrip("/") + stored.url_path}).json()  # fetched later
    done = wait_status(c, sub["status_url"], "COMPLETED", logs="1")
    assert done["error_type"] == "validation_error"
    assert not any(l["message"].startswith("fake engine") for l in done["logs"])  # the worker never saw it
    r = c.get(sub["response_url"])
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "scale"]
    assert "max_output_pixels" in r.json()["detail"][0]["msg"]


def test_the_two_halves_split_check_request():
    app = CCSRApp()
    with pytest.raises(InvalidParameter) as err:
        app.check(UpscaleParams(t_min=0.5, t_max=0.4))
    assert err.value.field == "t_min"
    app.check(UpscaleParams())  # fine without any image
    # A very thin image: its diffusion image (short side enlarged to 512) is the problem.
    with pytest.raises(InvalidParameter) as err:
        check_size(UpscaleParams(scale=1), 4000, 2, 4096 * 4096)
    assert err.value.field == "scale" and "diffusion image" in err.value.message
    check_size(UpscaleParams(scale=2), 64, 64, 512 * 512)
    check_params(UpscaleParams(tile_diffusion="gaussian", tile_diffusion_size=512, tile_diffusion_stride=256))
