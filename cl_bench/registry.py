"""Lazy, loud registries of strategies and task streams.

A name maps to a "module:attr" string; nothing is imported until the object is asked
for, so listing names and their one-line descriptions never imports torch. Built-in
strategies and streams are registered exactly like third-party ones: as Python entry
points in the groups ``clbench.strategies``, ``clbench.streams`` and ``clbench.modalities``
(see pyproject.toml).
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
from dataclasses import dataclass
from importlib.metadata import entry_points

STRATEGY_GROUP = "clbench.strategies"
STREAM_GROUP = "clbench.streams"
MODALITY_GROUP = "clbench.modalities"


class RegistryError(LookupError):
    """A name is unknown, registered twice, or points at nothing importable."""


@dataclass(frozen=True)
class Entry:
    """One registered name: where it points and who registered it."""

    name: str
    target: str  # "package.module:attr"
    origin: str  # distribution name, or "register() in <module>"

    def load(self):
        module_name, _, attr = self.target.partition(":")
        if not attr:
            raise RegistryError(f"{self.name!r} points at {self.target!r}, which is not of the form 'module:attr'")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise RegistryError(f"{self.name!r} ({self.origin}) points at module {module_name!r}, "
                                f"which fails to import: {e}") from e
        try:
            return getattr(module, attr)
        except AttributeError:
            raise RegistryError(f"{self.name!r} ({self.origin}) points at {self.target!r}, "
                                f"but {module_name} has no attribute {attr!r}") from None

    def summary(self) -> str:
        """First line of the target's docstring (for an instance such as a Modality: its `data`
        argument), read from source without importing it."""
        module_name, _, attr = self.target.partition(":")
        try:
            spec = importlib.util.find_spec(module_name)
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            return ""
        with open(spec.origin, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in tree.body:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name == attr:
                doc = ast.get_docstring(node) or ""
                return doc.strip().splitlines()[0] if doc.strip() else ""
            if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == attr for t in node.targets)
                    and isinstance(node.value, ast.Call)):
                for kw in node.value.keywords:
                    if kw.arg == "data" and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str):
                        return kw.value.value
        return ""


class Registry:
    """Names -> lazily loaded objects, from entry points of one group plus explicit registrations."""

    def __init__(self, group: str, kind: str) -> None:
        self.group = group
        self.kind = kind  # "strategy", "stream" or "modality", for messages
        self._extra: dict[str, Entry] = {}
        self._cache: dict[str, Entry] | None = None

    def register(self, name: str, target: str, origin: str | None = None) -> None:
        """Register `name` -> "module:attr" at run time (scripts, tests); duplicates raise."""
        entry = Entry(name, target, origin or "register()")
        existing = self.entries().get(name)
        if existing is not None:
            raise RegistryError(self._duplicate_message(existing, entry))
        self._extra[name] = entry
        self._cache = None

    def unregister(self, name: str) -> None:
        self._extra.pop(name, None)
        self._cache = None

    def entries(self) -> dict[str, Entry]:
        if self._cache is None:
            found: dict[str, Entry] = {}
            for ep in entry_points(group=self.group):
                origin = f"package {ep.dist.name}" if ep.dist is not None else "an unnamed distribution"
                entry = Entry(ep.name, ep.value, origin)
                if ep.name in found and found[ep.name].target != entry.target:
                    raise RegistryError(self._duplicate_message(found[ep.name], entry))
                found[ep.name] = entry
            for name, entry in self._extra.items():
                if name in found:
                    raise RegistryError(self._duplicate_message(found[name], entry))
                found[name] = entry
            self._cache = dict(sorted(found.items()))
        return self._cache

    def names(self) -> list[str]:
        return list(self.entries())

    def entry(self, name: str) -> Entry:
        entries = self.entries()
        if name in entries:
            return entries[name]
        close = difflib.get_close_matches(name, entries, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise RegistryError(f"unknown {self.kind} {name!r}.{hint} Known: {', '.join(entries) or 'none'} "
                            f"(`clbench ls` lists them).")

    def get(self, name: str):
        return self.entry(name).load()

    def _duplicate_message(self, a: Entry, b: Entry) -> str:
        return (f"{self.kind} {a.name!r} is registered twice: {a.target} ({a.origin}) and {b.target} ({b.origin}); "
                f"rename one of them")


strategies = Registry(STRATEGY_GROUP, "strategy")
streams = Registry(STREAM_GROUP, "stream")
modalities = Registry(MODALITY_GROUP, "modality")
