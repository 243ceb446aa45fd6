"""Render ``docs/configuration.md`` from :class:`app.settings.Settings` (``repic config docs``).

The settings classes are the one source of truth: every field, nested group, type, default and
description in the page comes from them, and ``tests/test_config_docs.py`` fails when the
committed page differs from what this module renders. Only class-level defaults are read,
never the environment, so the output is the same on every machine.
"""

from __future__ import annotations

import json
import types
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from app.settings import Settings

REGENERATE_COMMAND = "make docs-config"

_SCALAR_NAMES: dict[type, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    Path: "path",
}


@dataclass(frozen=True)
class SettingDoc:
    """One environment variable of the service."""

    env_var: str
    type_name: str
    default: str
    description: str


@dataclass(frozen=True)
class SectionDoc:
    """The variables of one settings group (``""`` = the top-level fields)."""

    group: str
    settings: tuple[SettingDoc, ...]


def _is_group(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def type_name(annotation: Any) -> str:
    """A reader's name for a field type: ``integer``, ``path or empty``, ``one of: `a`, `b```."""
    origin = get_origin(annotation)
    if origin is Literal:
        return "one of: " + ", ".join(f"`{value}`" for value in get_args(annotation))
    if origin in (Union, types.UnionType):
        args = get_args(annotation)
        named = [type_name(arg) for arg in args if arg is not type(None)]
        text = " or ".join(named)
        return f"{text} or empty" if len(named) < len(args) else text
    if origin in (list, tuple, set, frozenset):
        inner = get_args(annotation)
        item = type_name(inner[0]) if inner else "value"
        return f"list of {item}s (JSON list)"
    if origin is dict:
        return "JSON object"
    if isinstance(annotation, type):
        if issubclass(annotation, Enum):
            return "one of: " + ", ".join(f"`{member.value}`" for member in annotation)
        for base, name in _SCALAR_NAMES.items():
            if issubclass(annotation, base) and not (base is int and annotation is bool):
                return name
        return annotation.__name__
    return str(annotation)


def format_default(field: FieldInfo) -> str:
    """The default as it would be written in the environment; *(empty)* for None or ``""``."""
    value = field.get_default(call_default_factory=True)
    if value is None or value == "":
        return "*(empty)*"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, Path):
        text = str(value)
        if not value.is_absolute() and not text.startswith("."):
            text = f"./{text}"
        return f"`{text}`"
    if isinstance(value, Enum):
        return f"`{value.value}`"
    if isinstance(value, list | tuple | dict | set):
        return f"`{json.dumps(list(value) if isinstance(value, set | tuple) else value)}`"
    return f"`{value}`"


def _cell(text: str) -> str:
    """Table-safe text: one line, pipes escaped, ``<placeholders>`` outside code spans kept
    visible (a Markdown renderer would take them for HTML tags and drop them)."""
    parts = " ".join(text.split()).replace("|", "\\|").split("`")
    for i in range(0, len(parts), 2):  # even parts are outside `code spans`
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts)


def _walk(
    model: type[BaseModel], prefix: str
) -> Iterator[tuple[str, SettingDoc | type[BaseModel]]]:
    for name, field in model.model_fields.items():
        env_var = f"{prefix}{name.upper()}"
        if _is_group(field.annotation):
            yield env_var, field.annotation  # type: ignore[misc]
        else:
            yield env_var, SettingDoc(
                env_var=env_var,
                type_name=type_name(field.annotation),
                default=format_default(field),
                description=field.description or "",
            )


def collect_sections(settings_cls: type[BaseSettings] = Settings) -> list[SectionDoc]:
    """Every variable of ``settings_cls``: top-level fields first, then one section per group
    (nested groups get their own section, named with dots: ``group.sub``)."""
    prefix = str(settings_cls.model_config.get("env_prefix") or "")
    delimiter = str(settings_cls.model_config.get("env_nested_delimiter") or "__")
    sections: list[SectionDoc] = []

    def visit(model: type[BaseModel], group: str, env_prefix: str) -> None:
        own: list[SettingDoc] = []
        nested: list[tuple[str, str, type[BaseModel]]] = []
        for env_var, item in _walk(model, env_prefix):
            if isinstance(item, SettingDoc):
                own.append(item)
            else:
                sub_name = env_var[len(env_prefix):].lower()
                sub_group = f"{group}.{sub_name}" if group else sub_name
                nested.append((sub_group, env_var + delimiter, item))
        if own:
            sections.append(SectionDoc(group=group, settings=tuple(own)))
        for sub_group, sub_prefix, sub_model in nested:
            visit(sub_model, sub_group, sub_prefix)

    visit(settings_cls, "", prefix)
    return sections


def all_env_vars(settings_cls: type[BaseSettings] = Settings) -> list[str]:
    """The names of every environment variable ``settings_cls`` reads, in page order."""
    return [s.env_var for section in collect_sections(settings_cls) for s in section.settings]


def _header(settings_cls: type[BaseSettings]) -> list[str]:
    config = settings_cls.model_config
    prefix = str(config.get("env_prefix") or "")
    delimiter = str(config.get("env_nested_delimiter") or "__")
    env_file = config.get("env_file")
    lines = [
        "# Configuration",
        "",
        f"<!-- Generated from app/settings.py by `repic config docs` ({REGENERATE_COMMAND}). "
        "Do not edit by hand. -->",
        "",
        "Every setting of the service is read from the environment by one pydantic-settings "
        "object, `app.settings.Settings`; nothing else reads the environment.",
        "",
        f"- A top-level field `name` is the variable `{prefix}NAME` (e.g. `{prefix}PROFILE`).",
        f"- A field of a group joins group and field with `{delimiter}`: group `database`, "
        f"field `url` is `{prefix}DATABASE{delimiter}URL`.",
    ]
    if env_file:
        lines.append(
            f"- A `{env_file}` file in the working directory is read as well; variables set in "
            "the real environment win over it. A `REPIC_` name no setting reads is ignored, "
            "with a warning at start (app, worker, CLI) that names the closest setting."
        )
    lines += [
        "- Booleans accept `true`/`false`, `1`/`0`, `yes`/`no`; lists are JSON lists, e.g. "
        '`["http://vllm-a:8000", "http://vllm-b:8000"]`.',
        "- *(empty)* means unset: the description says what is used instead.",
        "- `repic config show` prints the effective values (secrets masked).",
        "- A value the service cannot run with (e.g. `REPIC_WORKER__MAX_ATTEMPTS=0`) stops the "
        "start with one line per problem, naming its variable.",
        "- With `REPIC_PROFILE=production` the service refuses to start while "
        "`REPIC_AUTH__SECRET_KEY` keeps its development default, and a configured model that "
        "cannot be loaded is a start-up error instead of a tiny stand-in.",
        "",
        "The production values used by `docker-compose.yml` are explained in "
        "[deployment.md](deployment.md).",
        "",
    ]
    return lines


def _section_lines(section: SectionDoc) -> list[str]:
    title = f"## `{section.group}`" if section.group else "## General"
    lines = [title, "", "| Variable | Type | Default | Description |", "|---|---|---|---|"]
    for item in section.settings:
        lines.append(
            f"| `{item.env_var}` | {_cell(item.type_name)} | {_cell(item.default)} | "
            f"{_cell(item.description)} |"
        )
    lines.append("")
    return lines


def render_configuration_markdown(settings_cls: type[BaseSettings] = Settings) -> str:
    """The whole ``docs/configuration.md`` page, ending with one newline."""
    lines = _header(settings_cls)
    for section in collect_sections(settings_cls):
        lines += _section_lines(section)
    return "\n".join(lines).rstrip("\n") + "\n"
