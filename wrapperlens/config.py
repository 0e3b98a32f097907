"""Frozen dataclass configs: (de)serialisation and `--section.key=value` overrides.

A run is described by a few named sections, each one frozen dataclass (`task`, `model`, `train`,
`finetune`). They are written to `config.json` beside every artifact and can be changed from the
command line or a JSON/TOML file. Unknown sections or keys, and values of the wrong type, are
errors that name the key; each dataclass's own `__post_init__` then validates the values.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "ConfigError",
    "to_dict",
    "from_dict",
    "replace",
    "parse_value",
    "apply_overrides",
    "sections_from_dict",
    "load_config_file",
    "split_override_args",
]


class ConfigError(ValueError):
    """A config key or value is invalid; the message names it."""


def to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass as a JSON-friendly dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, annotation: Any, key: str, strict: bool = False) -> Any:
    """Check / convert a JSON or string value to a field's annotated type.

    `strict` (a saved file): the JSON value must already have the type (an integer for an int,
    a list for a tuple, ...); otherwise strings from the command line are parsed too. A float
    must be finite either way.
    """
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:  # Optional[X] and X | None
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, strict)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if strict and isinstance(value, str) and annotation in (int, float, bool):
        raise ConfigError(f"{key}: expected a {annotation.__name__}, got the string {value!r}")
    if origin is tuple:
        if isinstance(value, str) and not strict:
            value = [v for v in (p.strip() for p in value.split(",")) if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        item = args[0] if args else str
        return tuple(_coerce(v, item, key, strict) for v in value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            return int(value)
        if isinstance(value, str):
            try:
                if not value.strip().lower().count("e"):
                    return int(value)
                number = float(value)  # "1e3"; "1e-3" is no integer
                if number.is_integer() and abs(number) < 2**53:
                    return int(number)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if annotation is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value) if abs(value) < 1e308 else math.inf
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None and math.isfinite(number):
            return number
        raise ConfigError(f"{key}: expected a finite number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


def parse_value(cls: type, name: str, raw: Any, section: str, strict: bool = False) -> Any:
    """Convert `raw` (string from the CLI, or JSON value) to the type of `cls.name`
    (`strict`: a value read from a saved file, which must have the type already)."""
    types = _field_types(cls)
    if not isinstance(name, str) or name not in types or name.startswith("_"):
        known = ", ".join(f.name for f in dataclasses.fields(cls))
        raise ConfigError(f"unknown key {section}.{name}; known keys of [{section}]: {known}")
    return _coerce(raw, types[name], f"{section}.{name}", strict)


def _build(cls: type, values: Mapping[str, Any], section: str):
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(f"[{section}] {e}") from e


def from_dict(cls: type, d: Any, section: str, saved: bool = False) -> Any:
    """Build a config from a dict, refusing unknown keys (the message names them).

    `saved` (a file wrapperlens wrote): every key must be there (a missing one is refused, not
    defaulted) and every value must have its field's JSON type (no string parsing).
    """
    if not isinstance(d, Mapping):
        raise ConfigError(f"[{section}] must be a table of keys, got {type(d).__name__}")
    values = {k: parse_value(cls, k, v, section, strict=saved) for k, v in d.items()}
    if saved:
        missing = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in d]
        if missing:
            raise ConfigError(f"[{section}] is missing keys {missing}")
    return _build(cls, values, section)


#: The top-level keys of a saved `config.json` besides its sections (experiment metadata):
#: strings, or null where a run has none (`parent` of a pretraining run).
SAVED_METADATA = {"experiment": (str,), "stage": (str,), "preset": (str, type(None)),
                  "parent": (str, type(None)), "prepared": (str, type(None)),
                  "tokenizer": (str, type(None)), "protocol": (str, type(None)),
                  "eta": (str, type(None))}
#: Metadata every saved `config.json` holds.
REQUIRED_METADATA = ("stage", "preset", "parent")


class SavedSections(dict):
    """The sections of a saved config; looking up one the file lacks names the file."""

    def __init__(self, values: Mapping[str, Any], source: str) -> None:
        super().__init__(values)
        self.source = source

    def __missing__(self, key: str) -> Any:
        raise ConfigError(f"{self.source}: missing section {key!r}")


def sections_from_dict(
    types: Mapping[str, type], d: Mapping[str, Any], source: str = "config", *,
    saved: bool = True,
) -> dict[str, Any]:
    """The config sections named in `types` that `d` (e.g. a saved `config.json`) holds, each
    validated by its dataclass; errors name `source` and the key (a `ConfigError`).

    `saved` (the default: a `config.json` wrapperlens wrote) refuses what a writer never
    produces: a section missing a key (it is not defaulted), a value of the wrong JSON type, a
    top-level key that is neither a section of `types` nor `SAVED_METADATA`, and metadata of the
    wrong type; a section the file lacks is refused when it is looked up (`SavedSections`).
    """
    if not isinstance(d, Mapping):
        raise ConfigError(f"{source}: expected a table of sections, got {type(d).__name__}")
    if saved:
        unknown = sorted(str(k) for k in d if k not in types and k not in SAVED_METADATA)
        if unknown:
            raise ConfigError(f"{source}: unknown top-level keys {unknown}")
        missing = [k for k in REQUIRED_METADATA if k not in d]
        if missing:
            raise ConfigError(f"{source}: missing keys {missing}")
        for key, allowed in SAVED_METADATA.items():
            if key in d and not isinstance(d[key], allowed):
                raise ConfigError(f"{source}: {key!r} must be "
                                  f"{' or '.join(t.__name__ for t in allowed)}, got {d[key]!r}")
    try:
        built = {name: from_dict(cls, d[name], name, saved=saved)
                 for name, cls in types.items() if name in d}
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from e
    return SavedSections(built, source) if saved else built


def replace(cfg: Any, section: str, **changes: Any) -> Any:
    """`dataclasses.replace` with type coercion and section-named errors."""
    values = {k: parse_value(type(cfg), k, v, section) for k, v in changes.items()}
    return _build(type(cfg), {**dataclasses.asdict(cfg), **values}, section)


def apply_overrides(configs: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Apply `{"section.key": value}` overrides to `{"section": config}`; returns a new dict."""
    by_section: dict[str, dict[str, Any]] = {}
    for dotted, value in overrides.items():
        section, sep, key = dotted.partition(".")
        if not sep or not key:
            raise ConfigError(f"override {dotted!r}: expected SECTION.KEY (e.g. train.lr)")
        if section not in configs or configs[section] is None:
            raise ConfigError(
                f"override {dotted!r}: unknown section {section!r}; sections here: "
                f"{', '.join(s for s, c in configs.items() if c is not None)}"
            )
        by_section.setdefault(section, {})[key] = value
    out = dict(configs)
    for section, changes in by_section.items():
        out[section] = replace(configs[section], section, **changes)
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or TOML file of `{section: {key: value}}` into flat `section.key` overrides."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_bytes().decode("utf-8")
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError,
            RecursionError) as e:
        raise ConfigError(f"{path}: cannot parse ({e})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a table of sections")
    flat: dict[str, Any] = {}
    for section, table in data.items():
        if section in ("stage", "parent", "preset"):
            continue  # run metadata written by wrapperlens itself
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: section {section!r} must be a table")
        for key, value in table.items():
            flat[f"{section}.{key}"] = value
    return flat


def split_override_args(extra: Sequence[str]) -> dict[str, str]:
    """Command-line leftovers `--a.b=1 --c.d 2` -> {"a.b": "1", "c.d": "2"}.

    Raises:
        ConfigError: an argument that is not an override, or an override without a value.
    """
    out: dict[str, str] = {}
    i = 0
    while i < len(extra):
        arg = extra[i]
        if not arg.startswith("--") or "." not in arg.split("=")[0]:
            raise ConfigError(
                f"unrecognized argument {arg!r} (config overrides look like --train.lr=1e-4)"
            )
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(extra):
                raise ConfigError(f"--{key} needs a value")
            value = extra[i + 1]
            i += 1
        out[key] = value
        i += 1
    return out
