"""Modalities: an open set, registered like strategies and streams.

A modality is a kind of input: what one raw item of it is, and the frozen encoders that
read it (an Encoder subclass each, named; one is the default). Built-in modalities are
registered by entry points in the group ``clbench.modalities`` (pyproject.toml), and a
plug-in package adds its own the same way. "text" is the base modality: it has no encoder
and is not registered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cl_bench.errors import PluginError, UsageError

TEXT = "text"


@dataclass(frozen=True)
class Modality:
    """A kind of input and the frozen encoders that read it.

    `encoders` maps an encoder name to "module:Class" (an Encoder subclass constructed
    without arguments); targets are imported only when an encoder is built, so listing
    modalities imports no torch.
    """

    name: str
    data: str  # what one raw input is, in words ("8x8 grey-scale image, float array")
    encoders: Mapping[str, str] = field(default_factory=dict)
    default_encoder: str = ""

    def __post_init__(self) -> None:
        if not self.name or self.name == TEXT or not self.name.replace("-", "").isalnum():
            raise ValueError(f"modality name {self.name!r} must be letters, digits and '-', and not {TEXT!r}")
        if not self.encoders:
            raise ValueError(f"modality {self.name!r} declares no encoder")
        if self.default_encoder not in self.encoders:
            raise ValueError(f"modality {self.name!r}: default encoder {self.default_encoder!r} is not one of "
                             f"its encoders ({', '.join(self.encoders)})")
        for name, target in self.encoders.items():
            if ":" not in target:
                raise ValueError(f"modality {self.name!r}: encoder {name!r} points at {target!r}, "
                                 "which is not of the form 'module:Class'")

    def encoder_target(self, name: str | None = None) -> str:
        """The "module:Class" of encoder `name` (its default when None): one of `encoders`, or "module:Class"
        itself; nothing is imported (cl_bench.models.encoders.encoder_class loads and checks it)."""
        name = name or self.default_encoder
        if ":" in name:
            return name
        if name in self.encoders:
            return self.encoders[name]
        raise UsageError(f"no encoder {name!r} for modality {self.name!r}; known: {', '.join(self.encoders)}, "
                         "module:Class naming an Encoder subclass, or a directory with a saved model "
                         "(config.json: CLIP or SigLIP for image, Whisper or wav2vec2 for audio)")


def get(name: str) -> Modality:
    """The registered modality `name`, checked; a clear error if it is unknown or not a Modality."""
    from cl_bench import registry

    m = registry.modalities.get(name)
    if not isinstance(m, Modality):
        raise PluginError(registry.modalities.label(name), f"registered as {m!r}, not a cl_bench.Modality")
    if m.name != name:
        raise PluginError(registry.modalities.label(name), f"registered as {name!r}, it calls itself {m.name!r}; "
                          "register it under its own name")
    return m


def known() -> list[str]:
    """Every modality a task may have: text and the registered ones."""
    from cl_bench import registry

    return [TEXT, *registry.modalities.names()]


def check_mapping(encoders: Mapping[str, str]) -> None:
    """Raise if `encoders` (modality -> encoder name) names an unknown modality."""
    names = set(known())
    for m in encoders:
        if m not in names:
            raise UsageError(f"--encoder {m}=...: no modality {m!r}; known: {', '.join(sorted(names - {TEXT}))}")
