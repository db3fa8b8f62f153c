"""Training configs from defaults, named CLI options and ``--set KEY=VALUE``: every field of a trainer's config
(TRL's included) is reachable from the command line, and a wrong name or value is a clear error.

>>> from dataclasses import dataclass
>>> @dataclass
... class C:
...     lr: float = 1.0
...     steps: int | None = None
...     losses: list[str] | None = None
...     fast: bool = False
>>> parse_assignments(["lr=3e-5", "steps=none", "losses=sigmoid,ipo", "fast=true"], C)
{'lr': 3e-05, 'steps': None, 'losses': ['sigmoid', 'ipo'], 'fast': True}
>>> parse_assignments(["lr=fast"], C)  # the field names the type
Traceback (most recent call last):
pipeline.errors.UserError: --set lr=fast: lr takes a number, not 'fast'
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, fields
from typing import Any

from pipeline.errors import UserError

_TRUE, _FALSE = {"true", "yes", "1", "on"}, {"false", "no", "0", "off"}


def _convert(text: str, hint: Any, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        # null is None; so is none, except where text is allowed too (report_to=none is TrainingArguments' "none")
        if type(None) in args and (text.lower() == "null" or (text.lower() == "none" and str not in options)):
            return None
        if len(options) == 1:
            return _convert(text, options[0], key)
        for option in sorted(options, key=lambda a: a is str):  # a number or flag before falling back to text
            try:
                return _convert(text, option, key)
            except UserError:
                continue
        raise UserError(f"{key} takes one of {', '.join(_name(o) for o in options)}, not {text!r}")
    if origin is typing.Literal:
        for choice in args:
            if str(choice) == text:
                return choice
        raise UserError(f"{key} takes one of {', '.join(map(str, args))}, not {text!r}")
    if origin in (list, tuple, Sequence) or hint in (list, tuple):
        inner = args[0] if args else str
        items = [_convert(part.strip(), inner, key) for part in text.split(",") if part.strip()]
        return tuple(items) if origin is tuple or hint is tuple else items
    if origin is dict or hint is dict:
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = None
        if not isinstance(value, dict):
            raise UserError(f"{key} takes a JSON object, not {text!r}")
        return value
    if hint is bool:
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise UserError(f"{key} takes true or false, not {text!r}")
    if hint is int:
        try:
            return int(text)
        except ValueError:
            raise UserError(f"{key} takes a whole number, not {text!r}") from None
    if hint is float:
        try:
            return float(text)
        except ValueError:
            raise UserError(f"{key} takes a number, not {text!r}") from None
    if isinstance(hint, type) and issubclass(hint, str):
        return text
    if isinstance(hint, type) and hasattr(hint, "__members__"):  # an Enum: its value or its name
        for member in hint.__members__.values():
            if text in (str(member.value), member.name):
                return member
        raise UserError(f"{key} takes one of {', '.join(str(m.value) for m in hint.__members__.values())}, "
                        f"not {text!r}")
    return text  # a type with no text form of its own (callables and the like): passed on as written


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))


def parse_assignments(items: Sequence[str] | None, config_class: type) -> dict[str, Any]:
    """``["key=value", ...]`` -> ``{key: value}``, each value converted to the type of ``config_class``'s field."""
    hints = typing.get_type_hints(config_class)
    known = {f.name for f in fields(config_class)}
    values: dict[str, Any] = {}
    for item in items or ():
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UserError(f"--set {item}: write KEY=VALUE")
        if key not in known:
            raise UserError(f"--set {item}: {config_class.__name__} has no option {key!r}")
        if key in values:
            raise UserError(f"--set {item}: {key} is set twice")
        try:
            values[key] = _convert(text.strip(), hints.get(key, str), key)
        except UserError as exc:
            raise UserError(f"--set {item}: {exc}") from None
    return values


PER_RUN = ("output_dir", "logging_dir")  # one per run (under --out): a project-wide value would be shared by all


def file_settings(table: Mapping[str, Any], config_class: type, where: str,
                  only: Collection[str] | None = None) -> dict[str, Any]:
    """A project-file table (``[rm]``, ``[dpo]``, ...) -> ``{field: value}``, each value converted to its field's
    type as ``--set`` converts text (TOML's own numbers, flags, lists and tables are taken as written; a list
    item by item). A key the class lacks (or outside ``only``), a per-run key (``output_dir``) or a wrong value
    is a ``UserError`` that names ``where`` and the key.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class C:
    ...     lr: float = 1.0
    ...     losses: list[str] | None = None
    >>> file_settings({"lr": 3, "losses": ["sigmoid", "a,b"]}, C, "rlhf.toml [x]")
    {'lr': 3.0, 'losses': ['sigmoid', 'a,b']}
    >>> file_settings({"lr": "fast"}, C, "rlhf.toml [x]")
    Traceback (most recent call last):
    pipeline.errors.UserError: rlhf.toml [x]: lr takes a number, not 'fast'
    >>> file_settings({"lr": [1, 2]}, C, "rlhf.toml [x]")
    Traceback (most recent call last):
    pipeline.errors.UserError: rlhf.toml [x]: lr takes one value, not a list
    """
    hints = typing.get_type_hints(config_class)
    known = {f.name for f in fields(config_class)} if only is None else set(only)
    values: dict[str, Any] = {}
    for raw_key, value in table.items():
        key = raw_key.replace("-", "_")
        if key in PER_RUN:
            raise UserError(f"{where}: {raw_key} is per run (under each command's --out); it cannot be set for the "
                            "whole project")
        if key not in known:
            options = "any field of " + config_class.__name__ if only is None else ", ".join(sorted(known))
            raise UserError(f"{where}: no option {raw_key!r} (the options are {options})")
        if key in values:
            raise UserError(f"{where}: {key} is set twice")
        try:
            values[key] = _from_toml(value, hints.get(key, str), key)
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None
    return values


def _from_toml(value: Any, hint: Any, key: str) -> Any:
    """A TOML value converted to ``hint``: a list item by item, anything else through its ``--set`` text."""
    if isinstance(value, list):
        options = [a for a in typing.get_args(hint) if a is not type(None)] \
            if typing.get_origin(hint) in (typing.Union, types.UnionType) else [hint]
        for option in options:
            origin = typing.get_origin(option)
            if origin in (list, tuple, Sequence) or option in (list, tuple):
                inner = (typing.get_args(option) or (str,))[0]
                items = [_from_toml(item, inner, key) for item in value]
                return tuple(items) if origin is tuple or option is tuple else items
        if any(typing.get_origin(o) is dict or o is dict for o in options):
            raise UserError(f"{key} takes a table, not a list")
        raise UserError(f"{key} takes one value, not a list")
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, dict):
        text = json.dumps(value, default=str)
    else:
        text = str(value)
    return _convert(text, hint, key)


def make_config(config_class: type, defaults: Mapping[str, Any], options: Mapping[str, Any] | None = None,
                assignments: Mapping[str, Any] | None = None, *, what: str = "training",
                file_values: Mapping[str, Any] | None = None) -> Any:
    """``config_class`` from ``defaults``, then the project file's ``file_values`` (its ``[rm]``, ``[dpo]``, ...
    section), then the named ``options`` that were given (not None), then the ``--set`` ``assignments``. A name
    the class lacks, or one given both as an option and with ``--set``, is a ``UserError``; so is a value the
    class's own checks reject."""
    given = {k: v for k, v in (options or {}).items() if v is not None}
    assignments = dict(assignments or {})
    twice = sorted(set(given) & set(assignments))
    if twice:
        raise UserError(f"{', '.join(twice)}: given both as an option and with --set; keep one")
    values = {**defaults, **(file_values or {}), **given, **assignments}
    unknown = set(values) - {f.name for f in fields(config_class)}
    if unknown:
        raise UserError(f"unknown {what} option(s): {', '.join(sorted(unknown))}")
    try:
        return config_class(**values)
    except (ValueError, TypeError) as exc:
        also = f" (the project file set {', '.join(sorted(file_values))})" if file_values else ""
        raise UserError(f"{what} options: {exc}{also}") from exc


_SECRET = ("hub_token", "push_to_hub_token")


def settings_of(config: Any) -> dict[str, Any]:
    """Every JSON-able field of a config, for the run record (so an option given with ``--set`` is on record
    too); hub tokens left out."""
    out = {}
    for key, value in asdict(config).items():
        if key in _SECRET:
            continue
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue
        out[key] = value
    return out
