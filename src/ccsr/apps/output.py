"""The request fields every app has about its result, declared once.

``output_format`` (png, the default, as the hosted fal-ai/ccsr returns;
jpeg; webp) and ``sync_mode`` (the image returned inline as a data URI and
not kept) are added to each app's input by
:func:`ccsr.apps.base.image_input_model`; an app whose hosted schema lists
other formats passes ``output_formats``. They are not the engine's
parameters: :meth:`ccsr.apps.base.App.params_of` strips them, the service
reads them from the stored input (:meth:`OutputSpec.of_request`), and the
worker's output stage (:mod:`ccsr.apps.finish`) writes the file they ask
for. No model and no pixel library is imported here (the HTTP process loads it).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal, Optional

from pydantic import Field
from pydantic.fields import FieldInfo

#: Every format the output stage writes (see :mod:`ccsr.engine.images` for how).
OUTPUT_FORMATS: tuple[str, ...] = ("png", "jpeg", "webp")
#: The request fields declared here (never an engine parameter).
OUTPUT_FIELDS: tuple[str, ...] = ("output_format", "sync_mode")
#: The format each output file extension means (the command line's ``-o``).
SUFFIXES = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}
#: The media type and file extension of each format's result file.
CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}

FORMAT_DOC = (
    "The format of the result: png (lossless, the default), jpeg (quality 95, 4:4:4 chroma; a transparent "
    "input is flattened onto white) or webp (lossless, keeps transparency)."
)
SYNC_MODE_DOC = (
    "If true, the image is returned inline in the result as a data URI and not stored: a later request for "
    "the result answers that it was returned inline. Results larger than the server's max_sync_mode_bytes "
    "are refused."
)


def output_fields(formats: tuple[str, ...] = OUTPUT_FORMATS) -> dict[str, tuple[Any, FieldInfo]]:
    """The pydantic field definitions of the output fields, the format enum
    restricted to ``formats`` (each one of :data:`OUTPUT_FORMATS`)."""
    unknown = [f for f in formats if f not in OUTPUT_FORMATS]
    if not formats or unknown:
        raise ValueError(f"output_formats: each must be one of {OUTPUT_FORMATS}, got {formats!r}")
    return {
        "output_format": (Literal[tuple(formats)], Field(default_format(formats), description=FORMAT_DOC)),  # type: ignore[misc]
        "sync_mode": (bool, Field(False, description=SYNC_MODE_DOC)),
    }


def default_format(formats: tuple[str, ...]) -> str:
    """An app's default format: png when it writes png (the hosted default), else its first."""
    return "png" if "png" in formats else formats[0]


def formats_of(field: Optional[FieldInfo]) -> tuple[str, ...]:
    """The formats an input model's ``output_format`` field allows (png when it has none)."""
    return tuple(typing.get_args(field.annotation)) if field is not None else ("png",)


def sync_mode_of(stored_input: Optional[dict]) -> bool:
    """Whether a stored request asked for its image inline (``sync_mode``)."""
    return bool((stored_input or {}).get("sync_mode"))


@dataclasses.dataclass(frozen=True)
class OutputSpec:
    """How a worker writes one request's result: the format, and whether the
    PNG carries the provenance chunk (the server's ``provenance`` setting).
    It crosses to the worker as a plain dict (``Task.output``)."""

    format: str = "png"
    provenance: bool = True

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Optional[dict]) -> "OutputSpec":
        return cls(**{k: v for k, v in (data or {}).items() if k in cls.__dataclass_fields__})

    @classmethod
    def of_request(cls, stored_input: Optional[dict], provenance: bool) -> "OutputSpec":
        """The spec of a stored request (its ``output_format``, png when absent)."""
        return cls(str((stored_input or {}).get("output_format") or "png"), bool(provenance))


def format_for_file(suffix: str, given: Optional[str], allowed: tuple[str, ...]) -> Optional[str]:
    """The result format of a command writing a file with ``suffix`` ("" for
    none) when ``--output-format`` is ``given`` (None: not given): the flag,
    else the suffix's, else None (the app's default). Raises ValueError with a
    message naming the flag when the suffix is unknown, when the two disagree,
    or when the app does not write the format."""
    suffix = suffix.lower()
    if suffix and suffix not in SUFFIXES:
        raise ValueError(f"--output: cannot write {suffix} files; use one of {', '.join(sorted(SUFFIXES))} "
                         "(or a folder name without a suffix)")
    by_name = SUFFIXES.get(suffix)
    if given and by_name and given != by_name:
        raise ValueError(f"--output-format {given} does not match the --output file name (a {by_name} name)")
    fmt = given or by_name
    if fmt is not None and fmt not in allowed:
        raise ValueError(f"--output-format: this app writes {', '.join(allowed)}, not {fmt}")
    return fmt
