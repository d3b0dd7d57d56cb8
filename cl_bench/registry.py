"""Lazy, loud registries of strategies and task streams.

A name maps to a "module:attr" string; nothing is imported until the object is asked
for, so listing names and their one-line descriptions never imports torch. Built-in
strategies and streams are registered exactly like third-party ones: as Python entry
points in the groups ``clbench.strategies``, ``clbench.streams`` and ``clbench.modalities``
(see pyproject.toml), told apart from a plug-in's by their distribution's name: a plug-in that
reuses a built-in's name is refused alone, and the built-in keeps its name.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
from dataclasses import dataclass
from importlib.metadata import entry_points

from cl_bench.errors import EnvironmentProblem, PluginError, UsageError

STRATEGY_GROUP = "clbench.strategies"
STREAM_GROUP = "clbench.streams"
MODALITY_GROUP = "clbench.modalities"
BUILTIN_DIST = "clbench"  # the distribution whose entry points are the built-ins


class RegistryError(LookupError):
    """A name is unknown, registered twice, or points at nothing importable (each its own kind below)."""


class UnknownName(RegistryError, UsageError):
    """A name nothing registers: the user's typo (exit 2)."""


class Clash(RegistryError, EnvironmentProblem):
    """A name two installed packages register: the environment's conflict, until one is renamed."""


class BrokenEntry(RegistryError, PluginError):
    """An entry that points at nothing importable: its plug-in's bug (the message names who, and the fix)."""

    def __init__(self, plugin: str, message: str) -> None:
        Exception.__init__(self, message)  # the message names the entry and its origin already
        self.plugin = plugin


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
            raise BrokenEntry(self.label(), f"{self.name!r} ({self.origin}) points at {self.target!r}, which is "
                              "not of the form 'module:attr'")
        try:
            module = importlib.import_module(module_name)
        except Exception as e:  # a plug-in's SyntaxError or any error raised at its import: name who and where
            where = f" ({e.filename}, line {e.lineno})" if isinstance(e, SyntaxError) else ""
            raise BrokenEntry(self.label(), f"{self.name!r} ({self.origin}) points at module {module_name!r}, "
                              f"which fails to import: {type(e).__name__}: {e}{where}; fix or uninstall "
                              f"{self.dist or 'it'}") from e
        try:
            return getattr(module, attr)
        except AttributeError:
            raise BrokenEntry(self.label(), f"{self.name!r} ({self.origin}) points at {self.target!r}, "
                              f"but {module_name} has no attribute {attr!r}") from None

    def who(self) -> str:
        """Who registered this entry, in words: "my-plugin 0.1", or its origin where no distribution did."""
        return f"{self.dist} {self.version}" if self.dist else self.origin

    def label(self) -> str:
        """Who registered this entry, for a plug-in's error: "o-lora (my-package 0.1)"."""
        return f"{self.name} ({self.dist} {self.version})" if self.dist else f"{self.name} ({self.origin})"

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
        except Exception as e:  # noqa: BLE001 - a missing parent package, or one whose __init__ fails
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
        self._refused: dict[str, list[Entry]] = {}

    def register(self, name: str, target: str, origin: str | None = None) -> None:
        """Register `name` -> "module:attr" at run time (scripts, tests); duplicates raise."""
        entry = Entry(name, target, origin or "register()")
        existing = self.entries().get(name) or (self.clashes().get(name) or [None])[0]
        if existing is not None:
            raise Clash(self._duplicate_message([existing, entry]))
        self._extra[name] = entry
        self._cache = None

    def unregister(self, name: str) -> None:
        self._extra.pop(name, None)
        self._cache = None

    def entries(self) -> dict[str, Entry]:
        """Every usable name. A plug-in that registers a built-in's name is refused alone (`refused` lists it) and
        the built-in keeps the name; a name two plug-ins register is refused (and left out here): `clashes` lists it
        with both origins, and every other name still works."""
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
            self._cache, self._clashes, self._refused = resolve_names(found)
        return self._cache

    def clashes(self) -> dict[str, list[Entry]]:
        """Names registered by more than one plug-in (and no built-in): refused until one is renamed."""
        self.entries()
        return self._clashes

    def refused(self) -> dict[str, list[Entry]]:
        """Plug-in entries refused because they reuse a built-in's name (the name is the built-in's)."""
        self.entries()
        return self._refused

    def refusal(self, entry: Entry) -> str:
        """Why `entry`, a plug-in's, is refused: it reuses a built-in's name."""
        return (f"{self.kind} {entry.name!r} from {entry.who()} clashes with clbench's built-in {entry.name!r}; "
                "rename it in your entry points")

    def names(self) -> list[str]:
        return list(self.entries())

    def entry(self, name: str) -> Entry:
        entries = self.entries()
        if name in entries:
            return entries[name]
        if name in self._clashes:
            raise Clash(self._duplicate_message(self._clashes[name]))
        close = difflib.get_close_matches(name, entries, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownName(f"unknown {self.kind} {name!r}.{hint} Known: {', '.join(entries) or 'none'} "
                          f"(`clbench ls` lists them).")

    def get(self, name: str):
        return self.entry(name).load()

    def label(self, name: str) -> str:
        """The plug-in `name` for an error naming it as the culprit: "strategy o-lora (my-package 0.1)"."""
        return f"{self.kind} {self.entry(name).label()}"

    def _duplicate_message(self, entries: list[Entry]) -> str:
        every = " and ".join(f"{e.target} ({e.origin})" for e in entries)
        times, renamed = (("twice", "one of them is") if len(entries) == 2
                          else (f"{len(entries)} times", "all but one of them are"))
        return (f"{self.kind} {entries[0].name!r} is registered {times}: {every}; it is refused until {renamed} "
                "renamed (every other name works)")


def resolve_names(found: dict[str, list[Entry]]) -> tuple[dict[str, Entry], dict[str, list[Entry]],
                                                           dict[str, list[Entry]]]:
    """Each name's registrations -> (usable name -> entry, name -> clashing entries refused together,
    name -> plug-in entries refused alone because a built-in has the name).

    A name with one registration is usable; a built-in keeps its name against any number of plug-ins, which are
    refused alone; two or more registrations with no built-in among them (or two built-ins) refuse the name.
    """
    usable: dict[str, Entry] = {}
    clashes: dict[str, list[Entry]] = {}
    refused: dict[str, list[Entry]] = {}
    for name, found_here in sorted(found.items()):
        builtins = [e for e in found_here if e.dist == BUILTIN_DIST]
        if len(found_here) == 1:
            usable[name] = found_here[0]
        elif len(builtins) == 1:
            usable[name] = builtins[0]
            refused[name] = sorted((e for e in found_here if e is not builtins[0]), key=lambda e: (e.origin, e.target))
        else:
            clashes[name] = sorted(found_here, key=lambda e: (e.origin, e.target))
    return usable, clashes, refused


strategies = Registry(STRATEGY_GROUP, "strategy")
streams = Registry(STREAM_GROUP, "stream")
modalities = Registry(MODALITY_GROUP, "modality")


def plugin_of(module: str, qualname: str = "") -> str | None:
    """The plug-in whose code module `module` is, as "strategy name (distribution version)", or None (clbench's
    core, a library, or code nothing registers).

    A third-party entry point owns its whole top-level package; a built-in (cl_bench.strategies.*,
    cl_bench.task_streams.*) owns its own module or package only, so that the core is nobody's plug-in. Where one
    package registers several names, the one whose class `qualname` (the frame's "Class.method") names wins;
    otherwise all of them are named.
    """
    found: list[tuple[int, Registry, Entry]] = []
    for reg in (strategies, streams, modalities):
        for entry in reg.entries().values():
            target_module = entry.target.partition(":")[0]
            home = target_module if target_module.split(".")[0] == "cl_bench" else target_module.split(".")[0]
            if module == home or module.startswith(home + "."):
                found.append((len(home), reg, entry))
    if not found:
        return None
    longest = max(n for n, _, _ in found)
    found = [(reg, e) for n, reg, e in found if n == longest]
    named = [(reg, e) for reg, e in found if e.target.partition(":")[2] == qualname.split(".")[0]]
    found = named or found
    if len(found) == 1:
        return f"{found[0][0].kind} {found[0][1].label()}"
    entry = found[0][1]
    kinds = {reg.kind for reg, _ in found}
    who = (f"{found[0][0].kind} " + " or ".join(e.name for _, e in found) if len(kinds) == 1
           else " or ".join(f"{reg.kind} {e.name}" for reg, e in found))
    return f"{who} ({entry.dist} {entry.version})" if entry.dist else f"{who} ({entry.origin})"
