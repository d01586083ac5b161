"""`ccsr run|submit|status|result|cancel`: the client commands, against a remote server.

The request flags are generated from :class:`ccsr.models.ccsr_v1.params.UpscaleParams`, one
per field and named after it (``--scale``, ``--tile-diffusion`` ...), so the
commands cannot drift from the API. Only the flags a user gives are sent; the
server applies its defaults to the rest.
"""

from __future__ import annotations

import enum
import inspect
import json
import typing
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console

from ccsr.client import protocol as P
from ccsr.client.protocol import ClientError, Log, Progress, Status
from ccsr.client.sync import Client
from ccsr.models.ccsr_v1.params import UpscaleParams

err = Console(stderr=True, highlight=False)
out = Console(highlight=False)

SERVER_HELP = "Server base URL (env CCSR_SERVER)."
KEY_HELP = "API key, sent as 'Authorization: Key ...' (env CCSR_KEY or FAL_KEY)."


# ----------------------------------------------------------- flag generation


def _option_for(name: str, field: Any) -> tuple[Any, Any]:
    """(annotation, typer.Option) for one request field; default None = 'not given'."""
    ann = field.annotation
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    base = args[0] if typing.get_origin(ann) is typing.Union and len(args) == 1 else ann
    flag = "--" + name.replace("_", "-")
    default = field.default
    help_text = (field.description or "").rstrip(".") + (f". Default: {default}." if default is not None else ".")
    if typing.get_origin(base) is typing.Literal:
        choices = enum.Enum(f"{name}_choice", {v: v for v in typing.get_args(base)}, type=str)  # type: ignore[misc]
        return Optional[choices], typer.Option(None, flag, help=help_text, case_sensitive=False)
    if base is bool:
        return Optional[bool], typer.Option(None, f"{flag}/--no-{flag[2:]}", help=help_text, show_default=False)
    return Optional[base], typer.Option(None, flag, help=help_text, show_default=False)


def _field_params() -> list[inspect.Parameter]:
    params = []
    for name, field in UpscaleParams.model_fields.items():
        ann, opt = _option_for(name, field)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=ann))
    return params


def _connection_params() -> list[inspect.Parameter]:
    kw = inspect.Parameter.KEYWORD_ONLY
    return [
        inspect.Parameter("server", kw, annotation=str, default=typer.Option(P.DEFAULT_SERVER, "--server", envvar="CCSR_SERVER", help=SERVER_HELP)),
        inspect.Parameter("key", kw, annotation=Optional[str], default=typer.Option(None, "--key", envvar=["CCSR_KEY", "FAL_KEY"], help=KEY_HELP, show_default=False)),
    ]


def _with_params(func: Callable, params: list[inspect.Parameter]) -> Callable:
    """Give ``func(**kw)`` a signature typer can read, without writing each flag by hand."""
    func.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    func.__annotations__ = {}
    return func


def _request_fields(kw: dict) -> dict:
    """The request fields the user gave, checked locally so a typo fails before any upload."""
    from pydantic import ValidationError

    given = {}
    for name in UpscaleParams.model_fields:
        value = kw.get(name)
        if value is None:
            continue
        given[name] = value.value if isinstance(value, enum.Enum) else value
    try:
        UpscaleParams(**given)
    except ValidationError as exc:
        for e in exc.errors():
            flag = "--" + str(e["loc"][0]).replace("_", "-") if e["loc"] else "input"
            err.print(f"[red]error:[/] {flag}: {e['msg']}")
        raise typer.Exit(2)
    return given


# ----------------------------------------------------------- shared helpers


def _fail(exc: Exception) -> typer.Exit:
    """Print a client error as one clear message (field by field for 422)."""
    if isinstance(exc, P.ValidationError) and exc.field_errors:
        for name, msg in exc.field_errors.items():
            flag = "--" + name.replace("_", "-") if name in UpscaleParams.model_fields else name
            err.print(f"[red]error:[/] {flag}: {msg}")
    else:
        err.print(f"[red]error:[/] {exc}")
    return typer.Exit(1)


def _image_ref(client: Client, image: str) -> str:
    """A URL the server can read: URLs and data URIs as given, local files uploaded."""
    if P.is_remote(image):
        return image
    path = Path(image)
    if not path.is_file():
        err.print(f"[red]error:[/] IMAGE: no such file or URL: {image}")
        raise typer.Exit(2)
    with err.status(f"uploading {path.name}"):
        return client.upload(path)


def _default_output(image: str, scale: Optional[float]) -> Path:
    stem = Path(image.split("?")[0].rstrip("/")).stem if not image.startswith("data:") else "image"
    suffix = f"x{scale:g}" if scale else "ccsr"
    return Path(f"{stem or 'image'}_{suffix}.png")


def _save_result(client: Client, output: dict, dest: Path) -> None:
    image = output.get("image") or {}
    url = image.get("url")
    if not url:
        raise ClientError(f"the result has no image URL: {json.dumps(output)[:300]}")
    client.download(url, dest)
    size = f"{image.get('width')}x{image.get('height')}" if image.get("width") else "?"
    out.print(f"saved {dest} ({size}, seed {output.get('seed')})")


def _print_status(st: Status, with_logs: bool) -> None:
    line = st.status
    if st.queue_position is not None and st.status == "IN_QUEUE":
        line += f" (position {st.queue_position})"
    if st.progress is not None:
        line += f" {st.progress.step}/{st.progress.total}"
    if st.error:
        line += f" error: {P.format_detail(st.error)}"
        if st.error_type:
            line += f" [{st.error_type}]"
    out.print(line)
    if with_logs:
        for log in st.logs:
            out.print(f"{log.timestamp} {log.level:<6} {log.message}")


class _Bar:
    """A rich progress bar fed by the client's callbacks."""

    def __init__(self, quiet: bool, show_logs: bool):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn

        self.show_logs = show_logs
        self.bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err, disable=quiet)
        self.task = self.bar.add_task("submitting", total=None)

    def __enter__(self) -> "_Bar":
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)  # type: ignore[arg-type]

    def enqueued(self, request_id: str) -> None:
        self.bar.update(self.task, description=f"queued {request_id[:8]}")

    def update(self, st: Status) -> None:
        if st.status == "IN_QUEUE":
            self.bar.update(self.task, description=f"in queue, position {st.queue_position}")
        elif st.status == "IN_PROGRESS":
            self.bar.update(self.task, description="running")
        else:
            self.bar.update(self.task, description="failed" if st.error else "done")

    def progress(self, p: Progress) -> None:
        self.bar.update(self.task, completed=p.step, total=p.total)

    def log(self, log: Log) -> None:
        if self.show_logs:
            self.bar.console.print(f"[dim]{log.level:<6}[/] {log.message}")


# ----------------------------------------------------------- commands


def _run(**kw: Any) -> None:
    """Upscale an image on a remote server, following progress, and save the result."""
    fields = _request_fields(kw)
    image: str = kw["image"]
    dest: Path = kw["output"] or _default_output(image, fields.get("scale", 2.0))
    try:
        with Client(kw["server"], kw["key"]) as client:
            body = {"image_url": _image_ref(client, image), **fields}
            with _Bar(kw["quiet"], kw["logs"]) as bar:
                result = client.subscribe(
                    body, on_enqueue=bar.enqueued, on_queue_update=bar.update,
                    on_progress=bar.progress, on_log=bar.log, webhook_url=kw["webhook"],
                )
            if kw["json_out"]:
                out.print_json(data=result)
            _save_result(client, result, dest)
    except ClientError as exc:
        raise _fail(exc)


def _submit(**kw: Any) -> None:
    """Queue an image on a remote server and print the request id (does not wait)."""
    fields = _request_fields(kw)
    try:
        with Client(kw["server"], kw["key"]) as client:
            body = {"image_url": _image_ref(client, kw["image"]), **fields}
            handle = client.submit(body, webhook_url=kw["webhook"])
    except ClientError as exc:
        raise _fail(exc)
    if kw["json_out"]:
        out.print_json(data=handle.__dict__)
    else:
        out.print(handle.request_id)


def status(
    request_id: str = typer.Argument(..., help="Request id printed by `ccsr submit`."),
    logs: bool = typer.Option(False, "--logs", help="Also print the request's log lines."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep following until the request completes."),
    json_out: bool = typer.Option(False, "--json", help="Print the raw status JSON."),
    server: str = typer.Option(P.DEFAULT_SERVER, "--server", envvar="CCSR_SERVER", help=SERVER_HELP),
    key: Optional[str] = typer.Option(None, "--key", envvar=["CCSR_KEY", "FAL_KEY"], help=KEY_HELP, show_default=False),
) -> None:
    """Show where a request is: IN_QUEUE (with position), IN_PROGRESS or COMPLETED."""
    try:
        with Client(server, key) as client:
            if follow:
                with _Bar(False, logs) as bar:
                    report = P.Reporter(bar.update, bar.progress, bar.log)
                    last = None
                    for st in client.stream_status(request_id, logs=True):
                        report(st)
                        last = st
                if last is not None:
                    _print_status(last, False)
                return
            st = client.status(request_id, logs=logs)
    except ClientError as exc:
        raise _fail(exc)
    if json_out:
        out.print_json(data=st.raw)
    else:
        _print_status(st, logs)


def result(
    request_id: str = typer.Argument(..., help="Request id."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Also download the image to this file."),
    server: str = typer.Option(P.DEFAULT_SERVER, "--server", envvar="CCSR_SERVER", help=SERVER_HELP),
    key: Optional[str] = typer.Option(None, "--key", envvar=["CCSR_KEY", "FAL_KEY"], help=KEY_HELP, show_default=False),
) -> None:
    """Print a completed request's output JSON (and save its image with -o)."""
    try:
        with Client(server, key) as client:
            data = client.result(request_id)
            out.print_json(data=data)
            if output is not None:
                _save_result(client, data, output)
    except ClientError as exc:
        raise _fail(exc)


def cancel(
    request_id: str = typer.Argument(..., help="Request id."),
    server: str = typer.Option(P.DEFAULT_SERVER, "--server", envvar="CCSR_SERVER", help=SERVER_HELP),
    key: Optional[str] = typer.Option(None, "--key", envvar=["CCSR_KEY", "FAL_KEY"], help=KEY_HELP, show_default=False),
) -> None:
    """Cancel a queued or running request (a running one stops at its next step)."""
    try:
        with Client(server, key) as client:
            answer = client.cancel(request_id)
    except ClientError as exc:
        raise _fail(exc)
    out.print(answer)
    if answer == "ALREADY_COMPLETED":
        raise typer.Exit(1)


def _image_params(*, with_output: bool) -> list[inspect.Parameter]:
    kw = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter("image", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str,
                          default=typer.Argument(..., help="Local image file (uploaded first), http(s) URL or data: URI.")),
    ]
    if with_output:
        params.append(inspect.Parameter("output", kw, annotation=Optional[Path], default=typer.Option(
            None, "-o", "--output", help="Where to save the result (default: <image>_x<scale>.png here).", show_default=False)))
    params += _field_params()
    params.append(inspect.Parameter("webhook", kw, annotation=Optional[str], default=typer.Option(
        None, "--webhook", help="URL the server POSTs the result to when done.", show_default=False)))
    if with_output:
        params.append(inspect.Parameter("logs", kw, annotation=bool, default=typer.Option(False, "--logs", help="Print the request's log lines while it runs.")))
        params.append(inspect.Parameter("quiet", kw, annotation=bool, default=typer.Option(False, "--quiet", "-q", help="No progress bar.")))
    params.append(inspect.Parameter("json_out", kw, annotation=bool, default=typer.Option(False, "--json", help="Print the raw JSON answer.")))
    return params + _connection_params()


def register(app: typer.Typer) -> None:
    """Add the client commands to the `ccsr` app."""
    app.command("run")(_with_params(_wrap(_run, "run"), _image_params(with_output=True)))
    app.command("submit")(_with_params(_wrap(_submit, "submit"), _image_params(with_output=False)))
    app.command("status")(status)
    app.command("result")(result)
    app.command("cancel")(cancel)


def _wrap(impl: Callable[..., None], name: str) -> Callable[..., None]:
    """A fresh function per command (typer reads the signature and docstring from it)."""

    def command(**kw: Any) -> None:
        impl(**kw)

    command.__name__ = name
    command.__doc__ = impl.__doc__
    return command

