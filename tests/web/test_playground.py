"""The playground in real headless Chromium against a real server (tiny model):
schema-driven form, API key, upload, queue position, progress, logs, result,
download, history, snippets and errors next to the fields."""

from __future__ import annotations

import httpx
from PIL import Image

from ccsr.client import Client

READY = "body[data-ready=true]"


def _input_schema(server: str) -> dict:
    doc = httpx.get(server + "/openapi.json").json()
    body = doc["paths"]["/queue/fal-ai/ccsr"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    name = body["$ref"].rsplit("/", 1)[-1]
    return doc["components"]["schemas"][name]


def test_form_is_generated_from_the_openapi_schema(page, web_server):
    page.goto(web_server + "/")
    page.wait_for_selector(READY)
    props = _input_schema(web_server)["properties"]
    assert len(props) > 5
    for name, prop in props.items():
        control = page.locator(f"[name={name}]")
        assert control.count() == 1, f"no control named {name}"
        if name == "image_url":
            continue
        default = prop.get("default")
        if "enum" in prop:
            options = control.locator("option").evaluate_all("els => els.map(e => e.value)")
            assert options == prop["enum"]
            assert control.input_value() == default
        elif prop.get("type") == "boolean":
            assert control.is_checked() == bool(default)
        elif prop.get("type") in ("integer", "number"):
            assert control.get_attribute("type") == "number"
            if default is not None:
                assert float(control.input_value()) == float(default)
            if "maximum" in prop and prop["maximum"] < 1e15:
                assert float(control.get_attribute("max")) == float(prop["maximum"])
                assert page.locator(f'[data-field="{name}"] .hint').inner_text().find(str(prop["maximum"]).rstrip("0").rstrip(".")) >= 0
    assert page.js_errors == []


def test_upscale_end_to_end(page, web_server, web_key, web_photo, tmp_path, shots):
    page.goto(web_server + "/")
    page.wait_for_selector(READY)

    # Without the key the server answers 401: the page says so next to the key field.
    page.set_input_files("#image-file", str(web_photo))
    page.wait_for_selector("#input-preview:not([hidden])")
    assert "96×96" in page.inner_text("#input-meta")
    page.fill("[name=steps]", "3")
    page.fill("[name=seed]", "7")
    page.click("#submit")
    page.wait_for_selector("#api-key-error:not([hidden])")
    assert "API key" in page.inner_text("#api-key-error")
    page.fill("#api-key", web_key)
    shots(page, "playground-form")

    # Occupy the only worker so the page's request has to wait in the queue.
    with Client(web_server, web_key) as client:
        blocker = client.submit({"image_url": str(web_photo), "steps": 400})
        _wait_running(client, blocker.request_id)
        page.click("#submit")
        page.wait_for_selector("#queue-position:not([hidden])")
        assert page.get_attribute("#queue-position", "data-position") == "0"
        assert page.get_attribute("#run-status", "data-state") == "queued"
        shots(page, "playground-queued")
        assert client.cancel(blocker.request_id) == "CANCELLATION_REQUESTED"

        # Progress and live logs, then the result.
        page.wait_for_function(
            "document.querySelector('#run-status').dataset.state === 'running'"
            " && document.querySelector('#progress').value > 0", timeout=180_000)
        page.wait_for_selector("#logs .log")
        shots(page, "playground-running")
        page.wait_for_selector("#run-status[data-state=done]", timeout=180_000)
    assert page.inner_text("#result-size") == "192 × 192"
    assert page.inner_text("#result-seed") == "7"
    assert "step " in page.text_content("#logs")  # (collapsed once done)
    assert page.eval_on_selector("#progress", "p => p.value") == 1
    page.wait_for_function("document.querySelector('#after-image').complete && document.querySelector('#after-image').naturalWidth === 192")
    page.fill("#compare-split", "30")
    page.click("[data-zoom='2']")
    assert page.eval_on_selector("#compare-stage", "s => s.style.width") == "384px"
    page.click("[data-zoom='fit']")
    shots(page, "playground-result")

    # Download gives the PNG at the reported size.
    with page.expect_download() as info:
        page.click("#download")
    saved = tmp_path / "download.png"
    info.value.save_as(saved)
    assert Image.open(saved).size == (192, 192)

    # History keeps this browser's requests (the 401 one never got an id).
    items = page.locator("#history li")
    assert items.count() == 1
    assert "seed 7" in items.first.inner_text()

    # Snippets follow the form.
    page.click("[data-lang=python]")
    code = page.inner_text("#snippet")
    assert "fal_client" in code and '"steps": 3' in code and '"seed": 7' in code and web_server in code
    page.click("[data-lang=cli]")
    assert "--steps 3" in page.inner_text("#snippet")

    # A bad value: the server's 422 appears next to that field.
    page.fill("[name=scale]", "99")
    page.click("#submit")
    err = page.locator('.field-error[data-error-for="scale"]')
    err.wait_for(state="visible")
    assert "16" in err.inner_text()
    assert page.get_attribute("[name=scale]", "aria-invalid") == "true"
    shots(page, "playground-validation-error")

    # A cross-field rule the schema cannot express is also placed on its field.
    page.fill("[name=scale]", "2")
    page.fill("[name=t_min]", "0.9")
    page.click("#submit")
    page.locator('.field-error[data-error-for="t_min"]').wait_for(state="visible")
    assert page.js_errors == []


def test_history_survives_a_reload_and_reopens_a_result(page, web_server, web_key, web_photo):
    page.goto(web_server + "/")
    page.wait_for_selector(READY)
    page.fill("#api-key", web_key)
    with Client(web_server, web_key) as client:
        url = client.upload(web_photo)
    page.fill("#image_url", url)
    page.dispatch_event("#image_url", "change")
    page.fill("[name=steps]", "3")
    page.click("#submit")
    page.wait_for_selector("#run-status[data-state=done]", timeout=180_000)
    size = page.inner_text("#result-size")
    page.reload()
    page.wait_for_selector(READY)
    assert page.input_value("#api-key") == web_key  # remembered in this browser
    assert page.locator("#result").is_hidden()
    page.locator("#history li").first.click()
    page.wait_for_selector("#result:not([hidden])")
    assert page.inner_text("#result-size") == size
    assert page.input_value("[name=steps]") == "3"


def _wait_running(client: Client, request_id: str, timeout: float = 120.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.status(request_id).status == "IN_PROGRESS":
            return
        time.sleep(0.2)
    raise AssertionError("the blocking request never started")


def _file_in_page(page, path) -> None:
    """Make window.__file a File with the bytes of `path` (as a drop or paste would carry)."""
    import base64

    b64 = base64.b64encode(path.read_bytes()).decode()
    page.evaluate(
        """([b64, name]) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            window.__file = new File([bytes], name, { type: "image/png" });
        }""",
        [b64, path.name],
    )


def test_drop_and_paste_an_image_or_a_url(page, web_server, web_photo):
    page.goto(web_server + "/")
    page.wait_for_selector(READY)
    _file_in_page(page, web_photo)
    page.evaluate("""() => {
        const dt = new DataTransfer(); dt.items.add(window.__file);
        document.querySelector('#drop-zone').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
    }""")
    page.wait_for_function("document.querySelector('#input-meta').textContent.includes('96×96')")
    assert "upload of chelsea.png" in page.inner_text("#snippet")

    page.click("#clear-image")
    assert page.locator("#input-preview").is_hidden()
    page.evaluate("""() => {
        const dt = new DataTransfer(); dt.items.add(new File([window.__file], 'image.png', { type: 'image/png' }));
        document.body.dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true, cancelable: true }));
    }""")
    page.wait_for_function("document.querySelector('#input-meta').textContent.startsWith('pasted.png')")

    url = web_server + "/playground/no-such.png"
    page.evaluate("""(url) => {
        const dt = new DataTransfer(); dt.setData('text/plain', url);
        document.body.dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true, cancelable: true }));
    }""", url)
    assert page.input_value("#image_url") == url
    assert url in page.inner_text("#snippet")

    # Nothing chosen: the page asks for an image next to the field, without a request.
    page.click("#clear-image")
    page.click("#submit")
    assert "required" in page.inner_text('.field-error[data-error-for="image_url"]')
    assert page.js_errors == []
