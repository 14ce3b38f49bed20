"""Loading a config: YAML (bounded: size, aliases), `a.b=value` overrides, and one `ConfigError` naming the
file or override and the dotted field of every problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from axpo_core.config.checks import (
    Config,
    ConfigProblems,
    _loc,
    _pydantic_message,
    environment_problems,
    short,
)

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"
MAX_CONFIG_BYTES = 1 << 20  # a config is a few KB; more is a mistake (or an attack)
MAX_CONFIG_VALUES = 20_000  # values after YAML aliases are expanded (an alias bomb expands to billions)
MAX_ERROR_CHARS = 2000  # the whole message
_MAX_PROBLEMS_SHOWN = 8


class ConfigError(ValueError):
    """A config file or override that does not validate; the message names the file and the field."""


def _yaml_message(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return short(f"{exc.problem} (line {mark.line + 1}, column {mark.column + 1})")
    return short(exc)


def _count_values(data: Any) -> int:
    """The number of values in `data` with aliases expanded, counting at most MAX_CONFIG_VALUES + 1."""
    count, stack = 0, [data]
    while stack and count <= MAX_CONFIG_VALUES:
        node = stack.pop()
        count += 1
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list | tuple | set):
            stack.extend(node)
    return count


def _read_yaml(source: Path) -> Any:
    where = str(source)
    try:
        if source.is_dir():
            raise ConfigError(f"{where}: is a folder, not a config file")
        with source.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such config file") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read it: {short(exc.strerror or str(exc))}") from None
    except ConfigError:
        raise
    except ValueError as exc:  # e.g. a NUL byte in the path
        raise ConfigError(f"{where}: not a usable path: {short(exc)}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{where}: larger than {MAX_CONFIG_BYTES} bytes; not a config file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{where}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        ) from None
    return _parse_yaml(text, where)


def _parse_yaml(text: str, where: str) -> Any:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {_yaml_message(exc)}") from None
    except RecursionError:
        raise ConfigError(f"{where}: not valid YAML: nested too deeply") from None
    if _count_values(data) > MAX_CONFIG_VALUES:
        raise ConfigError(
            f"{where}: expands to more than {MAX_CONFIG_VALUES} values (YAML aliases?); not a config"
        )
    return data


@dataclass(frozen=True)
class _Override:
    text: str  # as given, `a.b=value`
    key: str

    def covers(self, field: str) -> bool:
        return field == self.key or field.startswith(self.key + ".") or self.key.startswith(field + ".")


def _apply_override(data: dict[str, Any], text: str) -> _Override:
    where = f"--set {short(text)}"
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep:
        raise ConfigError(f"{where}: expected key=value")
    parts = key.split(".")
    if not all(part.strip() for part in parts):
        raise ConfigError(
            f"{where}: the key {short(key)!r} has an empty part (expected e.g. rollout.group_size)"
        )
    value = _parse_yaml(raw, where)
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{where}: {'.'.join(parts[: i + 1])} is not a section")
        node = child
    node[parts[-1]] = value
    return _Override(text, key)


def _origin(fields: tuple[str, ...], overrides: list[_Override], source: str) -> str:
    for override in reversed(overrides):  # the last override of a field is the one that counts
        if any(override.covers(f) for f in fields):
            return f"--set {short(override.text)}"
    return source


def _format(problems: list[tuple[str, str]]) -> str:
    """`origin: field: why` per problem; an origin is not repeated for the problems that follow it."""
    parts, last = [], None
    for origin, text in problems[:_MAX_PROBLEMS_SHOWN]:
        parts.append(text if origin == last else f"{origin}: {text}")
        last = origin
    if len(problems) > _MAX_PROBLEMS_SHOWN:
        parts.append(f"... and {len(problems) - _MAX_PROBLEMS_SHOWN} more")
    return short("; ".join(parts), MAX_ERROR_CHARS)


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, check_environment: bool = True
) -> Config:
    """Load a YAML config (the embedded tiny default when `path` is None) with `a.b=value` overrides.

    Every problem fails here, in one `ConfigError` naming the file or the `--set` override and the field:
    YAML and types, unknown names and crossed bounds (`config_problems`) and, unless `check_environment`
    is off, what this machine lacks (`environment_problems`: folders, vLLM/CUDA, task-runner extras).
    """
    source = Path(path) if path is not None else DEFAULT_CONFIG
    where = short(str(source))
    data = _read_yaml(source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the top level must be a mapping, got {type(data).__name__}")
    applied = [_apply_override(data, text) for text in overrides or []]
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        found: list[tuple[str, str]] = []
        for err in exc.errors():
            error = (err.get("ctx") or {}).get("error")
            if isinstance(error, ConfigProblems):
                found += [
                    (_origin(p.fields, applied, where), f"{p.fields[0]}: {p.message}") for p in error.problems
                ]
            else:
                field = _loc(err["loc"])
                found.append((_origin((field,), applied, where), f"{field}: {_pydantic_message(err)}"))
        raise ConfigError(_format(found)) from None
    if check_environment:
        problems = environment_problems(config)
        if problems:
            raise ConfigError(
                _format(
                    [(_origin(p.fields, applied, where), f"{p.fields[0]}: {p.message}") for p in problems]
                )
            )
    return config
