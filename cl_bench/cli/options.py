"""The commands' shared options, and options built from the config dataclasses' fields.

An option that sets a config field (RunConfig, Budget, PretrainConfig) is made by `field_option`: its default
and its help are the field's, so that each default is written once, on the field. A command whose default
differs (`clbench publish` runs at the published settings) says so where it declares the option.
"""

from __future__ import annotations

import dataclasses
import typing

import click

from cl_bench.config import Budget, PretrainConfig
from cl_bench.run.config import RunConfig

MAX_SEED = 2**31 - 1  # numpy's and torch's generators all take it
_MISSING = object()


def field_default(cls, name: str):
    """The default of field `name` of dataclass `cls`."""
    f = _field(cls, name)
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]


def _field(cls, name: str) -> dataclasses.Field:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def _help_and_none(text: str) -> tuple[str, str | None]:
    """A field's help split at "; None: ..." (what None means there: the option's default when it is None)."""
    head, sep, none = text.rpartition("; None: ")
    return (head, none.strip()) if sep else (text, None)


def field_option(cls, name: str, *decls: str, dest: str | None = None, default=_MISSING,
                 help: str | None = None, default_text: str | None = None, optional: bool = False,  # noqa: A002
                 **kwargs):
    """A click option setting field `name` of config dataclass `cls`, its default and help the field's.

    Args:
        decls: the option's names [default: --<field-name>].
        dest: the command function's parameter [default: the field's name].
        default: this command's own default, where it differs from the field's.
        help: this command's own help, where the field's does not say what the option means here.
        default_text: what "[default: ...]" says instead of the value (why this command's default is what it is).
        optional: the option defaults to None and shows the field's default: the command fills the value from
            elsewhere first (a grid file), the field's default last.
        kwargs: passed to click.option (type, metavar, callback, ...); the type is the field's otherwise.
    """
    f = _field(cls, name)
    value = field_default(cls, name) if default is _MISSING else default
    text, none = _help_and_none(f.metadata.get("help", ""))
    text = (help if help is not None else text).strip().rstrip(".")
    text = text[:1].upper() + text[1:]
    hint = typing.get_type_hints(cls)[name]
    base = next((a for a in typing.get_args(hint) if a is not type(None)), hint)  # X of X | None
    if base is bool:
        kwargs.setdefault("is_flag", True)
    elif base in (int, float, str):
        kwargs.setdefault("type", {int: click.INT, float: click.FLOAT, str: click.STRING}[base])
    if optional:  # None here; the field's default is what a run gets when nothing else gives a value
        shown, value = default_text or (none if value is None else str(value)), None
    else:
        shown = default_text or (none if value is None else None)
    if shown:
        text += f" [default: {shown}]"
    elif value is not None and not kwargs.get("is_flag"):
        kwargs.setdefault("show_default", True)
    return click.option(*(decls or (f"--{name.replace('_', '-')}",)), dest or name, default=value,
                        help=text + ".", **kwargs)


USER_RESULTS = field_default(RunConfig, "results_dir")  # `clbench run`'s: a user's runs, apart from results/


# The run settings, one decorator each: the same option in every command that takes it.
def stream(**kw):
    return field_option(RunConfig, "stream", **kw)


def model(**kw):
    return field_option(RunConfig, "model", **kw)


def steps(**kw):
    return field_option(Budget, "steps", type=click.IntRange(min=1), **kw)


def batch_size(**kw):
    return field_option(Budget, "batch_size", type=click.IntRange(min=1), **kw)


def pretrain_steps(**kw):
    return field_option(PretrainConfig, "steps", "--pretrain-steps", dest="pretrain_steps", type=click.IntRange(min=1),
                        **kw)


def base_seed(**kw):
    """--base-seed: which of a preset's bases (cl_bench/bases/ ships 0, 1 and 2 of the default preset)."""
    return field_option(PretrainConfig, "seed", "--base-seed", dest="base_seed", type=click.IntRange(min=0), **kw)


def eval_limit(**kw):
    return field_option(RunConfig, "eval_limit", type=click.IntRange(min=1), metavar="N", **kw)


def cache_dir(**kw):
    return field_option(RunConfig, "cache_dir", type=click.Path(file_okay=False), **kw)


def results_dir(**kw):
    return field_option(RunConfig, "results_dir", type=click.Path(file_okay=False), **kw)


def device(**kw):
    """--device, checked by click: an unknown name is a usage error (torch's own is a traceback)."""
    optional = kw.get("optional", False)
    return field_option(RunConfig, "device", callback=_check_optional_device if optional else _check_device, **kw)


def dtype(**kw):
    from cl_bench.run.device import DTYPES

    return field_option(RunConfig, "dtype", type=click.Choice(DTYPES), **kw)


def threads(**kw):
    """--threads: torch's CPU threads of each run (recorded, and part of a CPU run's key)."""
    return field_option(RunConfig, "threads", type=click.IntRange(min=1, max=1024), metavar="N", **kw)


def _check_device(ctx, param, value: str) -> str:
    from cl_bench.config import device_problem

    if device_problem(value):
        raise click.BadParameter(device_problem(value))
    return value


def _check_optional_device(ctx, param, value):
    return value if value is None else _check_device(ctx, param, value)


# Options that set no single field: parsed here into what the config takes.
def parse_pairs(pairs: tuple[str, ...], hint: str = "-o/--option", example: str = "-o lr=1e-4") -> dict[str, str]:
    """KEY=VALUE pairs as a dict; a usage error naming the option for a malformed or repeated key."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE (e.g. {example})", param_hint=hint)
        key = key.strip()
        if key.replace("-", "_") in {k.replace("-", "_") for k in out}:
            raise click.BadParameter(f"{key!r} is given twice; give it once", param_hint=hint)
        out[key] = value.strip()
    return out


def strategy_options(help: str | None = None):  # noqa: A002
    """-o/--option KEY=VALUE."""
    return click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
                        help=help or "A strategy option, e.g. -o lr=1e-4 (repeatable; `clbench ls -v` lists them).")


def stream_option(f):
    """-s/--stream-option."""
    return click.option("-s", "--stream-option", "stream_options", multiple=True, metavar="KEY=VALUE",
                        help="A stream option, e.g. -s train-speakers=40 (repeatable; `clbench ls -v` lists them).")(f)


def stream_opts(pairs) -> dict[str, str]:
    return parse_pairs(pairs, "-s/--stream-option", "-s train-speakers=40")


def stream_and_order(f):
    """--stream-option and --order: a stream's own options and the order of its new tasks."""
    f = field_option(RunConfig, "order", metavar="TASKS|random:SEED",
                     help="Order of the stream's new tasks: their names (e.g. --order audio,vision) or random:SEED "
                          "(a seeded shuffle); recorded in the result file and run key")(f)
    return stream_option(f)


encoder = click.option(
    "--encoder", "encoders", multiple=True, metavar="MODALITY=NAME",
    help="Encoder of a modality, e.g. --encoder image=patches (`clbench ls -v` lists each modality's), "
         "MODALITY=module:Class for an Encoder subclass of your own, or image=DIR / audio=DIR for a pretrained "
         "CLIP, SigLIP, Whisper or wav2vec2 model saved there (repeatable).")


encoder_option = click.option(
    "--encoder-option", "encoder_options", multiple=True, metavar="MODALITY.KEY=VALUE",
    help="An option of an encoder loaded from a directory: image.layer=-2, image.tokens=144 (the patch grid "
         "average-pooled to 12 x 12), audio.layer=-1, audio.tokens=N (repeatable).")


def encoders(pairs) -> dict[str, str]:
    from cl_bench.streams.modality import check_mapping

    out = parse_pairs(pairs, "--encoder", "--encoder image=patches")
    check_mapping(out)
    return out


def encoder_opts(pairs) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for key, value in parse_pairs(pairs, "--encoder-option", "--encoder-option image.tokens=144").items():
        modality, dot, name = key.partition(".")
        if not dot or not modality or not name:
            raise click.BadParameter(f"{key}={value}: write MODALITY.KEY=VALUE, e.g. image.tokens=144",
                                     param_hint="--encoder-option")
        out.setdefault(modality, {})[name] = value
    return out


def seed_list(text: str) -> tuple[int, ...]:
    """--seeds: comma-separated integers in [0, MAX_SEED]."""
    out = []
    for x in (x.strip() for x in text.split(",")):
        if not x:
            continue
        if not x.isdigit() or int(x) > MAX_SEED:
            raise click.BadParameter(f"{x!r} is not a seed: give comma-separated integers from 0 to {MAX_SEED}, "
                                     "e.g. --seeds 0,1,2", param_hint="--seeds")
        out.append(int(x))
    if not out:
        raise click.BadParameter("no seed given, e.g. --seeds 0,1,2", param_hint="--seeds")
    return tuple(out)


def names(text: str, every: list[str]) -> list[str]:
    """Comma-separated names, or all (`every`)."""
    return list(every) if text.strip() == "all" else [x.strip() for x in text.split(",") if x.strip()]


def check_stream(name: str) -> None:
    """A usage error for an unknown stream name, a PluginError for a broken stream plug-in."""
    from cl_bench.streams.resolve import stream_class

    stream_class(name)
