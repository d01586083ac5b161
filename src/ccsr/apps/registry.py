"""The apps a server serves.

:data:`BUILTIN` names the apps that ship with the package ("module:Class",
strings: nothing here imports a model); :func:`default_registry` builds them.
The service iterates a registry to make each app's routes and executor, the
settings build each model's section from it, the CLI its flags and each
model's commands; tests add apps of their own with :meth:`Registry.with_app`.
Adding a model is one folder under ``ccsr/models/`` and one line here
(docs/design.md, "How to add a model").
"""

from __future__ import annotations

from typing import Iterable, Iterator, Optional

from ccsr.apps.base import App, load_app, resolve

#: The apps that ship with the package, in the order the playground lists them.
BUILTIN: tuple[str, ...] = (
    "ccsr.models.ccsr_v1.app:CCSRApp",
    "ccsr.models.esrgan.app:ESRGANApp",
    "ccsr.models.ccsr_v2.app:V2App",
)


class Registry:
    """Apps by id, in registration order."""

    def __init__(self, apps: Iterable[App] = ()):
        self._apps: dict[str, App] = {}
        for app in apps:
            self.register(app)

    def register(self, app: App) -> App:
        if app.app_id in self._apps:
            raise ValueError(f"app {app.app_id!r} is registered twice")
        self._apps[app.app_id] = app
        return app

    def with_app(self, app: App) -> "Registry":
        """A copy with one more app (the original is left as it is)."""
        return Registry([*self._apps.values(), app])

    def get(self, app_id: str) -> Optional[App]:
        return self._apps.get(app_id)

    def __getitem__(self, app_id: str) -> App:
        return self._apps[app_id]

    def __iter__(self) -> Iterator[App]:
        return iter(list(self._apps.values()))

    def __len__(self) -> int:
        return len(self._apps)

    def ids(self) -> list[str]:
        return list(self._apps)

    def by_name(self, name: str) -> Optional[App]:
        """The app of the model called ``name`` (:attr:`App.name`, e.g. ``ccsr upscale --model NAME``)."""
        return next((a for a in self._apps.values() if a.name == name), None)

    def names(self) -> list[str]:
        return [a.name for a in self._apps.values()]


def builtin_classes() -> list[type[App]]:
    """The built-in app classes (not built: their class attributes suffice for
    the settings sections and the CLI's flags)."""
    return [resolve(ref) for ref in BUILTIN]


def default_registry() -> Registry:
    """A fresh registry of the built-in apps."""
    return Registry(load_app(ref) for ref in BUILTIN)
