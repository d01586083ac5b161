"""`ccsr run|submit|status|result|cancel`: the client commands, against a remote server.

``--app`` picks the app (default: the first registered, fal-ai/ccsr). The
request flags are generated from the registered apps' parameter models, one
per field and named after it (``--scale``, ``--tile-diffusion`` ...; see
:mod:`ccsr.commands.flags`), so the commands cannot drift from the API; a flag
of another app than the chosen one is a usage error. Only the flags a user
gives are sent; the server applies its defaults to the rest.
"""

from __future__ import annotations

import functools
import inspect
import json
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console

from ccsr.apps.base import App
from ccsr.apps.output import format_for_file
from ccsr.apps.registry import Registry
from ccsr.client import protocol as P
from ccsr.client.protocol import ClientError, Log, Progress, Status
from ccsr.client.sync import Client
from ccsr.commands.flags import USAGE_ERROR, FieldFlag, FlagError, command, field_flags, flag_of, given_fields, parameters, validation_lines, with_signature

err = Console(stderr=True, highlight=False)
out = Console(highlight=False)

SERVER_HELP = "Server base URL (env CCSR_SERVER)."
KEY_HELP = "API key, sent as 'Authorization: Key ...' (env CCSR_KEY or FAL_KEY)."


# ----------------------------------------------------------- flags


class _Requests:
    """The apps the request commands know and the flags made from their fields."""

    #: The commands' own keywords: a field of that name gets an app-prefixed flag.
    RESERVED = ("image", "output", "webhook", "logs", "quiet", "json_out", "server", "key", "app")

    def __init__(self, registry: Registry):
        self.registry = registry
        # Each app's request fields: its engine parameters and the output fields (--output-format, --sync-mode).
        self.flags: list[FieldFlag] = field_flags({a.app_id: a.request_model() for a in registry}, self.RESERVED)

    def app(self, app_id: str) -> App:
        found = self.registry.get(app_id)
        if found is None:
            err.print(f"[red]error:[/] --app: unknown app {app_id!r}; known: {', '.join(self.registry.ids())}")
            raise typer.Exit(USAGE_ERROR)
        return found

    def flag(self, app: App, field: str) -> str:
        return flag_of(self.flags, app.app_id, field) or field

    def fields(self, app: App, kw: dict) -> tuple[dict, Any]:
        """The request fields the user gave, checked locally so a typo fails before any upload."""
        from pydantic import ValidationError

        try:
            given = given_fields(kw, self.flags, app.app_id, "choose its app with --app")
            params = app.request_model()(**given)
        except FlagError as exc:
            for line in exc.lines:
                err.print(f"[red]error:[/] {line}")
            raise typer.Exit(USAGE_ERROR)
        except ValidationError as exc:
            for line in validation_lines(exc, lambda f: self.flag(app, f)):
                err.print(f"[red]error:[/] {line}")
            raise typer.Exit(USAGE_ERROR)
        return given, params

    def connection_params(self) -> list[inspect.Parameter]:
        kw = inspect.Parameter.KEYWORD_ONLY
        return [
            inspect.Parameter("app", kw, annotation=str, default=typer.Option(
                self.registry.ids()[0], "--app", help=f"The app to call: {', '.join(self.registry.ids())}; "
                "its fields are the flags above that belong to it.")),
            inspect.Parameter("server", kw, annotation=str, default=typer.Option(P.DEFAULT_SERVER, "--server", envvar="CCSR_SERVER", help=SERVER_HELP)),
            inspect.Parameter("key", kw, annotation=Optional[str], default=typer.Option(None, "--key", envvar=["CCSR_KEY", "FAL_KEY"], help=KEY_HELP, show_default=False)),
        ]


# ----------------------------------------------------------- shared helpers


def _fail(exc: Exception, flag: Callable[[str], str] = lambda name: name) -> typer.Exit:
    """Print a client error as one clear message (field by field for 422, each
    named by its flag where ``flag`` knows it)."""
    if isinstance(exc, P.ValidationError) and exc.field_errors:
        for name, msg in exc.field_errors.items():
            err.print(f"[red]error:[/] {flag(name)}: {msg}")
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


def _default_output(image: str, scale: Optional[float], file_name: str) -> Path:
    """<image>_x<scale> (or _ccsr when the app has no scale) with the result's extension, here."""
    stem = Path(image.split("?")[0].rstrip("/")).stem if not image.startswith("data:") else "image"
    suffix = f"x{scale:g}" if scale else "ccsr"
    return Path(f"{stem or 'image'}_{suffix}{Path(file_name).suffix or '.png'}")


def _save_result(client: Client, output: dict, dest: Path) -> None:
    image = output.get("image") or {}
    url = image.get("url")
    if not url:
        raise ClientError(f"the result has no image URL: {json.dumps(output)[:300]}")
    client.download(url, dest)
    facts = [f"{image.get('width')}x{image.get('height')}" if image.get("width") else "?"]
    # The app's other plain output fields (CCSR: the seed), as the output names them.
    facts += [f"{k} {v}" for k, v in output.items() if k != "image" and isinstance(v, (str, int, float))]
    out.print(f"saved {dest} ({', '.join(facts)})")


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


def _run(requests: _Requests, **kw: Any) -> None:
    """Upscale an image on a remote server, following progress, and save the result."""
    app = requests.app(kw["app"])
    fields, params = requests.fields(app, kw)
    if kw["output"] is not None:  # -o photo.webp asks for webp (and must agree with --output-format)
        try:
            fmt = format_for_file(kw["output"].suffix, fields.get("output_format"), app.output_formats)
        except ValueError as exc:
            err.print(f"[red]error:[/] {exc}")
            raise typer.Exit(USAGE_ERROR)
        if fmt:
            fields["output_format"] = fmt
    image: str = kw["image"]
    try:
        with Client(kw["server"], kw["key"], app=app.app_id) as client:
            body = {"image_url": _image_ref(client, image), **fields}
            with _Bar(kw["quiet"], kw["logs"]) as bar:
                result = client.subscribe(
                    body, on_enqueue=bar.enqueued, on_queue_update=bar.update,
                    on_progress=bar.progress, on_log=bar.log, webhook_url=kw["webhook"],
                )
            if kw["json_out"]:
                out.print_json(data=result)
            file_name = str((result.get("image") or {}).get("file_name") or "")
            _save_result(client, result, kw["output"] or _default_output(image, getattr(params, "scale", None), file_name))
    except ClientError as exc:
        raise _fail(exc, lambda f: requests.flag(app, f))


def _submit(requests: _Requests, **kw: Any) -> None:
    """Queue an image on a remote server and print the request id (does not wait)."""
    app = requests.app(kw["app"])
    fields, _ = requests.fields(app, kw)
    try:
        with Client(kw["server"], kw["key"], app=app.app_id) as client:
            body = {"image_url": _image_ref(client, kw["image"]), **fields}
            handle = client.submit(body, webhook_url=kw["webhook"])
    except ClientError as exc:
        raise _fail(exc, lambda f: requests.flag(app, f))
    if kw["json_out"]:
        out.print_json(data=handle.__dict__)
    else:
        out.print(handle.request_id)


APP_OPTION = typer.Option(P.DEFAULT_APP, "--app", help="The app the request was sent to.")


def status(
    request_id: str = typer.Argument(..., help="Request id printed by `ccsr submit`."),
    logs: bool = typer.Option(False, "--logs", help="Also print the request's log lines."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep following until the request completes."),
    json_out: bool = typer.Option(False, "--json", help="Print the raw status JSON."),
    app: str = APP_OPTION,
    server: str = typer.Option(P.DEFAULT_SERVER, "--server", envvar="CCSR_SERVER", help=SERVER_HELP),
    key: Optional[str] = typer.Option(None, "--key", envvar=["CCSR_KEY", "FAL_KEY"], help=KEY_HELP, show_default=False),
) -> None:
    """Show where a request is: IN_QUEUE (with position), IN_PROGRESS or COMPLETED."""
    try:
        with Client(server, key, app=app) as client:
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
    app: str = APP_OPTION,
    server: str = typer.Option(P.DEFAULT_SERVER, "--server", envvar="CCSR_SERVER", help=SERVER_HELP),
    key: Optional[str] = typer.Option(None, "--key", envvar=["CCSR_KEY", "FAL_KEY"], help=KEY_HELP, show_default=False),
) -> None:
    """Print a completed request's output JSON (and save its image with -o)."""
    try:
        with Client(server, key, app=app) as client:
            data = client.result(request_id)
            out.print_json(data=data)
            if output is not None:
                _save_result(client, data, output)
    except ClientError as exc:
        raise _fail(exc)


def cancel(
    request_id: str = typer.Argument(..., help="Request id."),
    app: str = APP_OPTION,
    server: str = typer.Option(P.DEFAULT_SERVER, "--server", envvar="CCSR_SERVER", help=SERVER_HELP),
    key: Optional[str] = typer.Option(None, "--key", envvar=["CCSR_KEY", "FAL_KEY"], help=KEY_HELP, show_default=False),
) -> None:
    """Cancel a queued or running request (a running one stops at its next step)."""
    try:
        with Client(server, key, app=app) as client:
            answer = client.cancel(request_id)
    except ClientError as exc:
        raise _fail(exc)
    out.print(answer)
    if answer == "ALREADY_COMPLETED":
        raise typer.Exit(1)


def _image_params(requests: _Requests, *, with_output: bool) -> list[inspect.Parameter]:
    kw = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter("image", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str,
                          default=typer.Argument(..., help="Local image file (uploaded first), http(s) URL or data: URI.")),
    ]
    if with_output:
        params.append(inspect.Parameter("output", kw, annotation=Optional[Path], default=typer.Option(
            None, "-o", "--output", help="Where to save the result (default: <image>_x<scale>.<format> here); "
            "its extension (.png, .jpg, .webp) asks for that output_format.", show_default=False)))
    params += parameters(requests.flags)
    params.append(inspect.Parameter("webhook", kw, annotation=Optional[str], default=typer.Option(
        None, "--webhook", help="URL the server POSTs the result to when done.", show_default=False)))
    if with_output:
        params.append(inspect.Parameter("logs", kw, annotation=bool, default=typer.Option(False, "--logs", help="Print the request's log lines while it runs.")))
        params.append(inspect.Parameter("quiet", kw, annotation=bool, default=typer.Option(False, "--quiet", "-q", help="No progress bar.")))
    params.append(inspect.Parameter("json_out", kw, annotation=bool, default=typer.Option(False, "--json", help="Print the raw JSON answer.")))
    return params + requests.connection_params()


def register(cli: typer.Typer, registry: Registry) -> None:
    """Add the client commands to the `ccsr` app; their request flags come from ``registry``'s apps."""
    requests = _Requests(registry)
    cli.command("run")(with_signature(command(functools.partial(_run, requests), "run", _run.__doc__),
                                      _image_params(requests, with_output=True)))
    cli.command("submit")(with_signature(command(functools.partial(_submit, requests), "submit", _submit.__doc__),
                                         _image_params(requests, with_output=False)))
    cli.command("status")(status)
    cli.command("result")(result)
    cli.command("cancel")(cancel)
