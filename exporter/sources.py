"""Where a setting came from: the flag, `file:line` of the YAML file, the environment variable
or the secrets file; one line per invalid setting that names it; warnings for unknown
`ZOOM_EXPORTER_*` names with the closest known one.

Nothing here shows a value: only names, paths, line numbers and pydantic's messages (read
without their input).
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

Loc = tuple[int | str, ...]


def dotted(loc: Sequence[int | str]) -> str:
    """('accounts', 1, 'plan') -> "accounts[1].plan"."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def looks_like_credential(text: str) -> bool:
    """Long, with upper- and lower-case letters and digits: what Zoom's account ids, client
    ids and secrets look like, and names (of settings, variables, files) seldom do."""
    return (
        len(text) >= 16
        and any(c.isupper() for c in text)
        and any(c.islower() for c in text)
        and any(c.isdigit() for c in text)
    )


def _shown(name: str) -> str:
    """A key as written, if it looks like a name (a stray value pasted as a key is not shown)."""
    plain = name.replace("-", "_").replace(".", "_")
    if plain.isidentifier() and len(name) <= 64 and not looks_like_credential(name):
        return name
    return "a key"


@dataclass(frozen=True)
class YamlLines:
    """A YAML file composed with its marks: the line of any key or item, at any depth."""

    path: Path
    root: Any  # yaml.Node | None

    @classmethod
    def read(cls, path: Path) -> YamlLines:
        import yaml

        try:
            root = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            root = None  # the settings report this file's own errors
        return cls(path, root)

    def line(self, loc: Sequence[int | str]) -> int | None:
        """The 1-based line of the value at `loc` (of its key, in a mapping); when the path
        goes further than the file (a missing key), the line of the deepest node found."""
        import yaml

        node = self.root
        if node is None:
            return None
        line: int = node.start_mark.line + 1
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                found = _key(node, part)
                if found is None:
                    break
                key, node = found
                line = key.start_mark.line + 1
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if not 0 <= part < len(node.value):
                    break
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                break
        return line

    def variables(self, prefix: str) -> set[str]:
        """`<prefix>*` names the file gives as values at any depth: variables it refers to
        (an account's secret given as the name of a variable, say), so not typos."""
        import yaml

        found: set[str] = set()
        pending = [self.root] if self.root is not None else []
        while pending:
            node = pending.pop()
            if isinstance(node, yaml.ScalarNode):
                text = str(node.value)
                if text.upper().startswith(prefix) and text.replace("_", "").isalnum():
                    found.add(text.upper())
            elif isinstance(node, yaml.SequenceNode):
                pending.extend(node.value)
            elif isinstance(node, yaml.MappingNode):
                pending.extend(value for _, value in node.value)
        return found

    def has(self, name: str) -> bool:
        import yaml

        return isinstance(self.root, yaml.MappingNode) and _key(self.root, name) is not None


def _key(node: Any, part: int | str) -> tuple[Any, Any] | None:
    """The (key, value) nodes of a mapping whose key is `part` (exactly, else ignoring case)."""
    wanted = str(part)
    pairs = [(k, v) for k, v in node.value if isinstance(k.value, str)]
    for key, value in pairs:
        if key.value == wanted:
            return key, value
    for key, value in pairs:
        if key.value.lower() == wanted.lower():
            return key, value
    return None


@dataclass(frozen=True)
class Origins:
    """Where each top-level setting's value came from, highest precedence first: an override
    (a flag, when `flags` names it), the environment, the secrets directory, the YAML file."""

    prefix: str
    overrides: frozenset[str] = frozenset()
    flags: Mapping[str, str] = field(default_factory=dict)  # setting -> "--poll.interval"
    environ: Mapping[str, str] = field(default_factory=dict)  # setting -> the variable as set
    secrets: Mapping[str, str] = field(default_factory=dict)  # setting -> the file's name
    yaml: YamlLines | None = None

    @classmethod
    def gather(
        cls,
        prefix: str,
        names: Iterable[str],
        *,
        overrides: Iterable[str] = (),
        flags: Mapping[str, str] | None = None,
        environ: Mapping[str, str] | None = None,
        secrets_dir: Path | None = None,
        config_file: Path | None = None,
    ) -> Origins:
        known = {f"{prefix}{name}".lower(): name for name in names}
        env = {
            known[var.lower()]: var for var in (environ or {}) if var.lower() in known
        }  # case-insensitive, as the settings read them
        secrets: dict[str, str] = {}
        if secrets_dir is not None:
            try:
                files = sorted(p.name for p in secrets_dir.iterdir() if p.is_file())
            except OSError:
                files = []
            secrets = {known[n.lower()]: n for n in files if n.lower() in known}
        return cls(
            prefix,
            frozenset(overrides),
            dict(flags or {}),
            env,
            secrets,
            YamlLines.read(config_file) if config_file is not None else None,
        )

    def where(self, loc: Loc) -> str:
        """The place to fix: "--poll.interval", "config.yml:7: accounts[1].plan",
        "ZOOM_EXPORTER_PLAN" or "--secrets.dir: zoom_exporter_client_secret"."""
        name = str(loc[0])
        rest = dotted(loc[1:])
        inner = f": {rest.lstrip('.')}" if rest else ""
        if name in self.overrides:
            flag = self.flags.get(name)
            return f"{flag}{inner}" if flag else f"{self.prefix}{name.upper()}{inner}"
        if name in self.environ:
            return f"{self.environ[name]}{inner}"
        if name in self.secrets:
            return f"--secrets.dir: {self.secrets[name]}{inner}"
        if self.yaml is not None and self.yaml.has(name):
            shown = tuple(p if isinstance(p, int) else _shown(p) for p in loc)
            return f"{self.yaml.path}:{self.yaml.line(loc)}: {dotted(shown)}"
        return f"{self.prefix}{name.upper()}{inner}"


def _model_at(model: type[BaseModel], loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The model whose field names the last element of `loc` would be (for a suggestion)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            args = [a for a in typing.get_args(current) if a is not type(None)]
            current = args[0] if len(args) == 1 else None
        elif isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(part)
            current = info.annotation if info is not None else None
        else:
            return None
        while typing.get_origin(current) in (typing.Union, types.UnionType):
            options = [a for a in typing.get_args(current) if a is not type(None)]
            current = options[0] if len(options) == 1 else None
        if current is None:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def closest(name: str, known: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _placed(message: str, origins: Origins, model: type[BaseModel]) -> str:
    """ "ZOOM_EXPORTER_MAX_POLL_INTERVAL (30 s) must not be less than ..." with each setting
    given elsewhere named there: "config.yml:4: max_poll_interval (30 s) must not be ..."."""

    def place(match: re.Match[str]) -> str:
        name = match[0].removeprefix(origins.prefix).lower()
        return origins.where((name,)) if name in model.model_fields else match[0]

    return re.sub(re.escape(origins.prefix) + r"[A-Z0-9_]*[A-Z0-9]", place, message)


def describe(error: ValidationError, origins: Origins, model: type[BaseModel]) -> list[str]:
    """One line per error, each naming where the bad value came from; never the value."""
    lines: list[str] = []
    for item in error.errors(include_input=False, include_url=False, include_context=False):
        loc: Loc = tuple(item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if not loc:  # a check across settings: name each where it came from
            lines.append(_placed(message, origins, model))
            continue
        if item["type"] == "extra_forbidden":
            owner = _model_at(model, loc[:-1])
            near = closest(str(loc[-1]), owner.model_fields) if owner is not None else None
            message = "unknown setting" + (f"; did you mean {near}?" if near else "")
        lines.append(f"{origins.where(loc)}: {message}")
    return lines


_SOURCE_ERROR = re.compile(r'field "(?P<field>\w+)" from source "(?P<source>\w+)"')


def source_error(message: str, origins: Origins) -> str:
    """One line for a value a source could not even decode (a list or mapping given in the
    environment or a secrets file as something other than JSON): pydantic-settings' message
    names the field and the source, never the value."""
    found = _SOURCE_ERROR.search(message)
    if found is None:
        return "a setting cannot be decoded"
    return f"{origins.where((found['field'],))}: cannot be decoded: give a list or mapping as JSON"


def unknown_names(
    prefix: str,
    names: Iterable[str],
    *,
    environ: Mapping[str, str],
    also_known: Iterable[str] = (),
    secrets_dir: Path | None = None,
    nested_delimiter: str | None = None,
) -> list[str]:
    """Warnings for `ZOOM_EXPORTER_*` variables (and secrets files) that are no setting, each
    with the closest known name: a typo there would otherwise be ignored without a word."""
    names = list(names)
    settings = [f"{prefix}{name.upper()}" for name in names]
    known = {n.upper() for n in [*settings, *also_known]}
    warnings = []
    for var in sorted(environ):
        upper = var.upper()
        if nested_delimiter and upper.split(nested_delimiter.upper(), 1)[0] in known:
            continue  # a nested setting: <prefix>ACCOUNTS__0__PLAN, say
        if upper.startswith(prefix) and upper not in known:
            near = closest(upper.removeprefix(prefix), [s.removeprefix(prefix) for s in settings])
            hint = f"; did you mean {prefix}{near}?" if near else ""
            warnings.append(f"environment: {_shown(var)} is not a setting, ignored{hint}")
    if secrets_dir is not None:
        try:
            files = sorted(p.name for p in secrets_dir.iterdir() if p.is_file())
        except OSError:
            files = []
        lower = [s.lower() for s in settings]
        start = prefix.lower()
        for name in files:
            if name.lower().startswith(start) and name.lower() not in lower:
                near = closest(name.lower().removeprefix(start), [n.lower() for n in names])
                hint = f"; did you mean {start}{near}?" if near else ""
                warnings.append(f"--secrets.dir: {_shown(name)} is not a setting, ignored{hint}")
    return warnings
