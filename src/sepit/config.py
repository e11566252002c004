"""Typed configs: YAML files + ``key=value`` overrides → frozen-shape dataclasses; unknown keys are errors.

A config class is a plain ``@dataclass`` (nested dataclasses allowed). A YAML file may name its kind with a
top-level ``kind:`` key so ``sepit config validate FILE`` knows which class to check it against; classes declare
their kind with :func:`config_kind`.

    cfg = load_config("configs/train/stage1_tiny.yaml", TrainConfig, ["optim.lr=3e-4", "max_steps=10"])
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from sepit.errors import ConfigError

T = TypeVar("T")

_KINDS: dict[str, type] = {}
# Modules that define config kinds; imported lazily by `config_class_for_kind` (kept explicit, no scanning).
KIND_MODULES: tuple[str, ...] = (
    "sepit.model.config",
    "sepit.data.config",
    "sepit.train.config",
    "sepit.eval.config",
)


def config_kind(name: str):
    """Class decorator: register a dataclass as the config for YAML files with ``kind: <name>``."""

    def wrap(cls: type[T]) -> type[T]:
        _KINDS[name] = cls
        return cls

    return wrap


def config_class_for_kind(kind: str) -> type:
    """The dataclass registered for ``kind`` (imports the known config modules on first use)."""
    if kind not in _KINDS:
        for mod in KIND_MODULES:
            try:
                importlib.import_module(mod)
            except ModuleNotFoundError as e:
                if not e.name or not (mod == e.name or mod.startswith(e.name + ".")):
                    raise  # a real missing dependency inside an existing module
    if kind not in _KINDS:
        known = ", ".join(sorted(_KINDS)) or "none"
        raise ConfigError(f"unknown config kind {kind!r} (known kinds: {known})")
    return _KINDS[kind]


def _suggest(key: str, options: list[str]) -> str:
    close = difflib.get_close_matches(key, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (valid keys: {', '.join(options)})"


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert ``value`` to the annotated type ``tp``; raise ConfigError naming ``where``."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} is not a {_type_name(tp)}")
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(get_args(tp))}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return _from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = get_args(tp)
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = get_args(tp) or (Any, Any)
        return {_coerce(k, kt, where): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads "1e-5" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise ConfigError(f"{where}: expected a path, got {value!r}")
    return value


def _from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in fields:
            raise ConfigError(f"unknown key {path!r}{_suggest(str(key), sorted(fields))}")
        kwargs[key] = _coerce(value, hints[key], path)
    missing = [n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"missing required key(s): {', '.join(f'{where}.{m}' if where else m for m in missing)}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=1e-4`` → (["a", "b"], 1e-4). The value is read as YAML (numbers, booleans, lists)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Set dotted keys in a nested dict (a copy); unknown keys are caught later by the typed load."""
    out = yaml.safe_load(yaml.safe_dump(data)) if data else {}
    for text in overrides:
        keys, value = parse_override(text)
        node = out
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                node[k] = {} if node.get(k) is None else node[k]
            if not isinstance(node[k], dict):
                raise ConfigError(f"override {text!r}: {k!r} is not a section")
            node = node[k]
        node[keys[-1]] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a one-line ConfigError naming the file on any problem."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p}: is a folder, not a config file")
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text (byte {e.start}); a config is a YAML text file") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{p}: not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of keys at the top level")
    return data


def from_dict(cls: type[T], data: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> T:
    """Build a config dataclass from a dict plus ``key=value`` overrides (``kind`` keys are ignored)."""
    data = {k: v for k, v in apply_overrides(data, overrides).items() if k != "kind"}
    return _from_dict(cls, data)


def load_config(path: str | Path, cls: type[T] | None = None, overrides: list[str] | tuple[str, ...] = ()) -> T:
    """Load a YAML config into ``cls`` (or the class its ``kind:`` names), applying overrides.

    Errors are ConfigError with the file name and the offending key.
    """
    data = read_yaml(path)
    if cls is None:
        kind = data.get("kind")
        if not kind:
            raise ConfigError(f"{path}: no 'kind:' key, so the config type is unknown")
        cls = config_class_for_kind(str(kind))
    try:
        return from_dict(cls, data, overrides)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config dataclass as plain YAML/JSON-safe data (paths become strings)."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return conv(cfg)
