"""What one app is: the seam between the generic queue and one model.

An app (in the spirit of Cog's ``Predictor``) is a small class whose module
says everything specific to one endpoint: its id (``fal-ai/ccsr``), the input
and output models, the checks of an input (without the image at submit, with
its size once decoded), how the engine is built in a worker process and run
on one image, the out-of-memory advice, and how an engine result becomes the
output JSON. The service generates queue, sync-run, SSE and OpenAPI routes
from it, and the scheduler routes each job to its app's executor; neither
knows any app by name.

Apps are stateless and built with no arguments, so a worker process (or a
machine elsewhere) rebuilds one from :attr:`App.ref` alone. Each app is one
model's front: it lives in that model's folder (``ccsr/models/<name>/app.py``)
with the model's settings section (:attr:`App.Settings`), its weights status
and, optionally, its own commands (:meth:`App.register_cli`); docs/design.md,
"How to add a model".
"""

from __future__ import annotations

import dataclasses
import importlib
import secrets
import string
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Hashable, Optional

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from ccsr.apps.output import OUTPUT_FIELDS, OUTPUT_FORMATS, formats_of, output_fields
from ccsr.settings import ModelSettings

if TYPE_CHECKING:  # typer is imported by the CLI only
    import typer

ProgressFn = Callable[[int, int], None]
#: log(message, level="INFO"): a line for the request's log.
LogFn = Callable[..., None]

IMAGE_URL_DOC = (
    "URL of the image to process: an http(s) URL, a data: URI (base64), or a URL of this server's "
    "file storage."
)


@dataclasses.dataclass
class Produced:
    """What a run made of one task: the picture and the fields the output JSON
    needs besides the file (seed, width, height...).

    An app returns the model's output as ``image`` (PIL, RGB; see
    :meth:`Produced.of_image`); the worker's output stage
    (:func:`ccsr.apps.finish.finish`) attaches the alpha, restores grey, and
    encodes it as the request asks, filling ``data``, ``content_type`` and
    ``extension``. An app that returns encoded bytes instead still gets all
    of that (the bytes are decoded first)."""

    data: bytes = b""
    content_type: str = ""
    extension: str = ""
    fields: dict = dataclasses.field(default_factory=dict)
    timings: dict = dataclasses.field(default_factory=dict)
    image: Any = None

    @classmethod
    def of_image(cls, image: Any, fields: dict, timings: Optional[dict] = None) -> "Produced":
        """An app's result: the model's output picture (not encoded yet)."""
        return cls(fields=fields, timings=dict(timings or {}), image=image)


@dataclasses.dataclass(frozen=True)
class WeightsStatus:
    """What a model's engine will load, as the server and the CLI say it: the
    file (for people), whether it holds random weights (results then show the
    pipeline working, not a real upscale; None: cannot tell) and what to run
    for real ones."""

    weights: Optional[str] = None
    random: Optional[bool] = None
    advice: str = ""


class FileInfo(BaseModel):
    """A stored result file as the output JSON describes it (fal's ``File``)."""

    url: str = Field(..., description="The URL where the file can be downloaded from.")
    content_type: Optional[str] = Field(None, description="The mime type of the file.")
    file_name: Optional[str] = Field(None, description="The name of the file. It will be auto-generated if not provided.")
    file_size: Optional[int] = Field(None, description="The size of the file in bytes.")


class Image(FileInfo):
    width: Optional[int] = Field(None, description="The width of the image in pixels.")
    height: Optional[int] = Field(None, description="The height of the image in pixels.")


def _check_image_url(cls, v: str) -> str:  # noqa: ANN001
    s = v.strip()
    head = s[:8].lower()
    if not (head.startswith("http://") or head.startswith("https://") or head.startswith("data:")):
        raise ValueError("must be an http(s) URL or a data: URI")
    return s


def image_input_model(name: str, params: type[BaseModel], doc: str, example_url: str,
                      output_formats: tuple[str, ...] = OUTPUT_FORMATS) -> type[BaseModel]:
    """The HTTP input of an image app: ``image_url``, every field of
    ``params`` (field by field, so names, defaults and enums cannot drift from
    the engine's own model) and the output fields every app has
    (:mod:`ccsr.apps.output`: ``output_format``, its enum ``output_formats``,
    and ``sync_mode``). Unknown fields are ignored, as the hosted API does.
    Types are strict: ``"scale": "2"`` or ``true`` is refused naming the field,
    not coerced (an int is still a valid float)."""
    clash = sorted(set(params.model_fields) & set(OUTPUT_FIELDS))
    if clash:
        raise ValueError(f"{params.__name__} declares {', '.join(clash)}: every app has them "
                         "(ccsr.apps.output); pass output_formats to image_input_model instead")
    model = create_model(  # type: ignore[call-overload]
        name,
        __config__=ConfigDict(extra="ignore", strict=True, json_schema_extra={"examples": [{"image_url": example_url}]}),
        __validators__={"image_url_scheme": field_validator("image_url")(_check_image_url)},
        image_url=(str, Field(..., min_length=1, description=IMAGE_URL_DOC)),
        **{n: (f.annotation, f) for n, f in params.model_fields.items()},
        **output_fields(output_formats),
    )
    model.__doc__ = doc
    return model


def random_file_name(ext: str) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(12)) + "." + ext


class App:
    """One endpoint. Subclasses set the class attributes and override the
    methods marked so; everything else has a sensible default."""

    #: The endpoint id, as in ``POST /queue/<app_id>``.
    app_id: ClassVar[str]
    #: One line for people (the playground's app list, OpenAPI tags).
    title: ClassVar[str] = ""
    #: The engine's parameters (everything but ``image_url``), typed.
    Params: ClassVar[type[BaseModel]]
    #: The HTTP body: ``image_url`` plus :attr:`Params` (see :func:`image_input_model`).
    Input: ClassVar[type[BaseModel]]
    #: The output JSON's model (documentation and OpenAPI).
    Output: ClassVar[type[BaseModel]]
    #: The model's name on the command line (``ccsr upscale --model NAME``) and
    #: its settings section's key (``settings.models[NAME]``).
    name: ClassVar[str]
    #: The model's settings section (its weights, its engine knobs).
    Settings: ClassVar[type[ModelSettings]] = ModelSettings

    @property
    def ref(self) -> str:
        """"module:Class", from which a worker process rebuilds this app."""
        cls = type(self)
        return f"{cls.__module__}:{cls.__qualname__}"

    # --- the HTTP process (no torch) -----------------------------------------------
    def params_of(self, inp: BaseModel) -> BaseModel:
        """The typed engine parameters of a validated input (``image_url`` and
        the output fields stripped, once)."""
        return self.params_from(inp.model_dump())

    def params_from(self, stored_input: dict) -> BaseModel:
        """The typed engine parameters of an input as the job row stores it
        (raises pydantic's ValidationError)."""
        skip = ("image_url", *OUTPUT_FIELDS)
        return self.Params.model_validate({k: v for k, v in stored_input.items() if k not in skip})

    @property
    def output_formats(self) -> tuple[str, ...]:
        """The result formats this app's input allows (``output_format``'s enum)."""
        return formats_of(self.Input.model_fields.get("output_format"))

    @classmethod
    def request_model(cls) -> type[BaseModel]:
        """The request fields but ``image_url``: the engine's :attr:`Params` and
        the output fields, as one model (the client commands' flags and checks)."""
        cached = cls.__dict__.get("_request_model")
        if cached is None or cached[0] is not cls.Input:
            fields = {n: (f.annotation, f) for n, f in cls.Input.model_fields.items() if n != "image_url"}
            model = create_model(f"{cls.Input.__name__}Fields", __config__=ConfigDict(extra="forbid"), **fields)
            cached = (cls.Input, model)
            cls._request_model = cached  # type: ignore[attr-defined]
        return cached[1]

    def check(self, params: BaseModel) -> None:
        """First trust boundary, at submit: rules that need no image (cross-field
        rules). Raise :class:`ccsr.errors.InvalidParameter` naming the field."""

    def check_image(self, params: BaseModel, width: int, height: int, settings: Any) -> None:
        """Second trust boundary, once the image is decoded: size limits.
        Raise :class:`ccsr.errors.InvalidParameter` naming the field."""

    def render(self, fields: dict, file: FileInfo) -> dict:
        """The output JSON of a finished run: ``fields`` as the worker reported
        them (:attr:`Produced.fields`), ``file`` the stored result file."""
        return {"image": {**file.model_dump(), **{k: fields[k] for k in ("width", "height") if k in fields}}}

    def summary(self, fields: dict) -> str:
        """A few words about a result for the request's log ("output 64x64")."""
        if "width" in fields and "height" in fields:
            return f"output {fields['width']}x{fields['height']}"
        return ""

    def weights_status(self, section: ModelSettings) -> Optional[WeightsStatus]:
        """What the engine will load, read without loading it (no torch: the
        HTTP process asks at start for ``/readyz`` and the playground). None:
        nothing to say. Raise :class:`ccsr.errors.WeightsNotFound` (saying how to
        get them) when there are none."""
        return None

    def worker_settings(self, settings: Any) -> dict:
        """What a worker process gets to build the engine: the shared engine
        options (:data:`ccsr.settings.ENGINE_FIELDS`) and this model's section
        under ``"section"``, as plain values (they cross a process or machine)."""
        section = settings.section(self).model_dump(mode="json", exclude=set(ModelSettings.PLACEMENT_FIELDS))
        return {**settings.engine_settings(), "section": section}

    def section(self, worker_settings: dict) -> ModelSettings:
        """This model's section as a worker received it (:meth:`worker_settings`);
        the environment is not read again: the server's values are the truth."""
        return self.Settings.model_validate(worker_settings.get("section") or {})

    def serve_by_default(self, section: ModelSettings) -> bool:
        """Whether a server that is not told its apps (``CCSR_APPS`` unset) serves
        this one. True, the default; a model whose weights are a large optional
        download (CCSR-v2) answers whether they are found, so a fresh server does
        not start a worker that cannot load."""
        return True

    # --- the command line (optional) --------------------------------------------------
    def register_cli(self, cli: "typer.Typer") -> None:
        """Add this model's own commands to ``ccsr`` (e.g. ``ccsr esrgan ...``, or
        commands in the ``ccsr weights`` group). Import typer and the model's
        CLI module inside: the HTTP process never calls this."""

    def weights_names(self) -> tuple[str, ...]:
        """Names ``ccsr weights download --model NAME`` accepts for this model's
        weights besides :attr:`name` (e.g. one per released network)."""
        return ()

    def download_weights(self, name: Optional[str], *, dest: Optional[Path], force: bool, timeout: Optional[float],
                         url: Optional[str]) -> Optional[Path]:
        """Fetch this model's weights (``name``: one of :meth:`weights_names`, None
        its default) into ``dest`` (None: its own cache; ``timeout`` None: its own
        default) and return the file; raise :class:`ccsr.errors.CCSRError` saying
        why not. Not overridden: this model has nothing to download."""
        return None

    def write_random_weights(self, output: Path, *, seed: int, dtype: str, arch: str, config: Optional[Path]) -> str:
        """Write random weights of this model's architecture (``arch``: tiny or
        full; ``config``: a model-specific architecture file) to ``output``,
        marked as random, for tests and demos (``ccsr weights random --model``);
        return a line for people. Raise :class:`ccsr.errors.CCSRError` saying why not."""
        from ccsr.errors import CCSRError

        raise CCSRError(f"{self.name} has no random weights to write")

    def convert_weights(self, source: Path, output: Path, *, dtype: str, allow_pickle: bool,
                        progress: Optional[Callable[[int, int], None]]) -> str:
        """Write a copy of this model's weights ``source`` in another precision
        (``ccsr weights convert --model``), so loading in that precision maps
        the files instead of converting them; return a line for people. Raise
        :class:`ccsr.errors.CCSRError` saying why not."""
        from ccsr.errors import CCSRError

        raise CCSRError(f"{self.name} has no weights converter")

    # --- the worker process ----------------------------------------------------------
    def load_engine(self, settings: dict, device: str) -> Any:
        """Build the engine once per worker process (``settings``: what
        :meth:`worker_settings` made; :meth:`section` reads this model's part)."""
        raise NotImplementedError

    def run(self, engine: Any, image: Any, params: BaseModel, *, progress: ProgressFn,
            cancel: threading.Event, log: LogFn) -> Produced:
        """Run the engine on one decoded image (PIL, RGB: an alpha channel and
        grey are the output stage's) and return :meth:`Produced.of_image`; raise
        :class:`ccsr.errors.Cancelled` when ``cancel`` is set,
        :class:`ccsr.errors.OutOfMemory` when the device is full."""
        raise NotImplementedError

    def upscale_alpha(self, engine: Any, alpha: Any, size: tuple[int, int], params: BaseModel, *,
                      cancel: threading.Event, log: LogFn) -> Any:
        """The input's alpha channel (PIL, L) upscaled to ``size`` by the model,
        for a model that can (Real-ESRGAN runs it as a grey image, as its own
        inference does); None, the default, leaves it to a bicubic resize
        (:func:`ccsr.engine.images.resize_alpha`)."""
        return None

    def batch_key(self, params: BaseModel, width: int, height: int) -> Optional[Hashable]:
        """Requests whose keys are equal (and not None) may go through the network
        together (:meth:`run_batch`) when a worker takes several from the queue at
        once (``batch_size``). None, the default: this request runs by itself."""
        return None

    @property
    def batches(self) -> bool:
        """True when the app can run requests batched (it overrides :meth:`batch_key`)."""
        return type(self).batch_key is not App.batch_key

    def run_batch(self, engine: Any, images: list, params: list, *, progress: ProgressFn,
                  cancel: Any, log: LogFn) -> list[Produced]:
        """Run requests of one :meth:`batch_key` together, one :class:`Produced` per
        image, in order. ``progress``, ``cancel`` (``is_set()`` is true once every
        request of the batch is cancelled) and ``log`` are the batch's; the worker
        fans them out to each request."""
        raise NotImplementedError

    def oom_advice(self, params: BaseModel, detail: str) -> str:
        """What a person can change when the device ran out of memory."""
        return f"The device ran out of memory ({detail}). Send a smaller image."


def encode_png(image: Any) -> bytes:
    """PNG bytes of a PIL image, for an app that returns encoded bytes
    (:class:`Produced` ``data``); returning :meth:`Produced.of_image` instead
    saves the output stage a decode."""
    from ccsr.engine.images import encode_image

    return encode_image(image, "png")


def resolve(ref: str) -> Any:
    """The object named by "module:attr" (dotted attributes allowed)."""
    module, _, name = ref.partition(":")
    obj: Any = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def load_app(ref: str) -> App:
    """Rebuild an app from its :attr:`App.ref` (in a worker process)."""
    obj = resolve(ref)
    return obj() if isinstance(obj, type) else obj
