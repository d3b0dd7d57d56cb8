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
    origin: str  # "package DIST", or "register()" / what the registering code said
    dist: str | None = None  # the distribution that registered it, and its version (recorded in result files)
    version: str | None = None

    def load(self):
        module_name, _, attr = self.target.partition(":")
        if not attr:
            raise RegistryError(f"{self.name!r} ({self.origin}) points at {self.target!r}, which is not of the "
                                "form 'module:attr'")
        try:
            module = importlib.import_module(module_name)
        except Exception as e:  # a plug-in's SyntaxError or any error raised at its import: name who and where
            where = f" ({e.filename}, line {e.lineno})" if isinstance(e, SyntaxError) else ""
            raise RegistryError(f"{self.name!r} ({self.origin}) points at module {module_name!r}, "
                                f"which fails to import: {type(e).__name__}: {e}{where}; fix or uninstall "
                                f"{self.dist or 'it'}") from e
        try:
            return getattr(module, attr)
        except AttributeError:
            raise RegistryError(f"{self.name!r} ({self.origin}) points at {self.target!r}, "
                                f"but {module_name} has no attribute {attr!r}") from None

    def record(self) -> dict:
        """What a result file says about where this entry came from."""
        return {"name": self.name, "target": self.target, "distribution": self.dist, "version": self.version}

    def problem(self) -> str | None:
        """Why this entry cannot load, found without importing it (module missing, a syntax error), or None."""
        module_name, _, attr = self.target.partition(":")
        if not attr:
            return f"points at {self.target!r}, which is not of the form 'module:attr'"
        try:
            spec = importlib.util.find_spec(module_name)
        except Exception as e:  # a missing parent package, or one whose __init__ fails
            return f"module {module_name!r} cannot be found: {type(e).__name__}: {e}"
        if spec is None:
            return f"module {module_name!r} is not installed"
        if spec.origin and spec.origin.endswith(".py"):
            try:
                with open(spec.origin, encoding="utf-8") as f:
                    ast.parse(f.read(), filename=spec.origin)
            except SyntaxError as e:
                return f"syntax error in {e.filename}, line {e.lineno}: {e.msg}"
            except (OSError, UnicodeDecodeError) as e:
                return f"cannot read {spec.origin}: {e}"
        return None

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
        try:
            with open(spec.origin, encoding="utf-8") as f:
                tree = ast.parse(f.read())
        except (SyntaxError, OSError, UnicodeDecodeError):
            return ""  # `problem` says what is wrong
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
        self._clashes: dict[str, list[Entry]] = {}

    def register(self, name: str, target: str, origin: str | None = None) -> None:
        """Register `name` -> "module:attr" at run time (scripts, tests); duplicates raise."""
        entry = Entry(name, target, origin or "register()")
        existing = self.entries().get(name) or (self.clashes().get(name) or [None])[0]
        if existing is not None:
            raise RegistryError(self._duplicate_message([existing, entry]))
        self._extra[name] = entry
        self._cache = None

    def unregister(self, name: str) -> None:
        self._extra.pop(name, None)
        self._cache = None

    def entries(self) -> dict[str, Entry]:
        """Every usable name. A name registered by two different targets is refused (and left out here):
        `clashes` lists it with both origins, and every other name still works."""
        if self._cache is None:
            found: dict[str, list[Entry]] = {}
            for ep in entry_points(group=self.group):
                dist = ep.dist.name if ep.dist is not None else None
                version = ep.dist.version if ep.dist is not None else None
                entry = Entry(ep.name, ep.value, f"package {dist}" if dist else "an unnamed distribution",
                              dist, version)
                if all(e.target != entry.target for e in found.get(ep.name, [])):  # one package seen twice
                    found.setdefault(ep.name, []).append(entry)
            for name, entry in self._extra.items():
                found.setdefault(name, []).append(entry)
            self._clashes = {n: sorted(es, key=lambda e: (e.origin, e.target)) for n, es in sorted(found.items())
                             if len(es) > 1}
            self._cache = {n: es[0] for n, es in sorted(found.items()) if len(es) == 1}
        return self._cache

    def clashes(self) -> dict[str, list[Entry]]:
        """Names registered by more than one target: refused until one is renamed."""
        self.entries()
        return self._clashes

    def names(self) -> list[str]:
        return list(self.entries())

    def entry(self, name: str) -> Entry:
        entries = self.entries()
        if name in entries:
            return entries[name]
        if name in self._clashes:
            raise RegistryError(self._duplicate_message(self._clashes[name]))
        close = difflib.get_close_matches(name, entries, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise RegistryError(f"unknown {self.kind} {name!r}.{hint} Known: {', '.join(entries) or 'none'} "
                            f"(`clbench ls` lists them).")

    def get(self, name: str):
        return self.entry(name).load()

    def _duplicate_message(self, entries: list[Entry]) -> str:
        both = " and ".join(f"{e.target} ({e.origin})" for e in entries)
        return (f"{self.kind} {entries[0].name!r} is registered twice: {both}; it is refused until one of them is "
                "renamed (every other name works)")


strategies = Registry(STRATEGY_GROUP, "strategy")
streams = Registry(STREAM_GROUP, "stream")
modalities = Registry(MODALITY_GROUP, "modality")
