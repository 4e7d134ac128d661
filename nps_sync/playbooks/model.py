"""Playbook files: typed models, the loader and its error messages.

A playbook is one TOML file (see ``playbooks/*.toml`` for commented examples). Everything is parsed
and checked once, at load: delays (``"2 business days"``, ``"3d"``), owners, conditions, and every
template (syntax and unknown variables). Unknown keys are errors. Every problem names the file, the
TOML path (``step[1].due``; ``step[0]`` is the first ``[[step]]``), the bad value and what was
expected, and :func:`load_playbooks` reports all problems at once in one ``ConfigError``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from jinja2 import Template, TemplateError
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from nps_sync.durations import BusinessDays, Delay, format_delay, parse_delay
from nps_sync.errors import ConfigError
from nps_sync.playbooks import templates
from nps_sync.playbooks.events import TriggerKind

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

CategoryName = Literal["detractor", "passive", "promoter"]
UnlessKind = Literal["task_completed", "responded_again"]


def _delay(value: Any) -> Delay:
    if isinstance(value, (timedelta, BusinessDays)):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a delay string such as '3d' or '2 business days', got: {value!r}")
    return parse_delay(value)


DelayField = Annotated[Any, BeforeValidator(_delay)]
_OWNER_RE = re.compile(r"\A(account_owner|contact_owner|manager|user:\S+)\Z")
OWNER_EXPECTED = "expected account_owner, contact_owner, manager or user:<username or email>"


def _owner(value: Any) -> str:
    if not isinstance(value, str) or not _OWNER_RE.match(value.strip()):
        raise ValueError(f"{OWNER_EXPECTED}, got: {value!r}")
    return value.strip()


OwnerField = Annotated[str, BeforeValidator(_owner)]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class Trigger(_Frozen):
    """``[trigger]``: what starts a run."""

    on: TriggerKind
    after: DelayField | None = None  # no_response: how long after the survey was sent
    from_: tuple[CategoryName, ...] = Field(default=(), alias="from")  # category_changed
    to: tuple[CategoryName, ...] = ()  # category_changed
    playbooks: tuple[str, ...] = ()  # task_overdue: only tasks created by these playbooks

    model_config = ConfigDict(
        extra="forbid", frozen=True, arbitrary_types_allowed=True, populate_by_name=True
    )


FieldOp = Literal["==", "!=", "in", "not_in", "contains", ">", "<", ">=", "<="]
Scalar = str | int | float | bool


class FieldCondition(_Frozen):
    """``[[conditions.field]]``: a comparison on a CRM field copied into ``Contact.fields``."""

    field: str = Field(min_length=1)
    op: FieldOp = "=="
    value: Scalar | tuple[Scalar, ...]

    @model_validator(mode="after")
    def _value_fits_op(self) -> FieldCondition:
        is_list = isinstance(self.value, tuple)
        if self.op in ("in", "not_in") and not is_list:
            raise ValueError(f'op {self.op!r} expects a list value such as ["a", "b"], got: {self.value!r}')
        if self.op not in ("in", "not_in") and is_list:
            raise ValueError(f"op {self.op!r} expects a single value, got the list: {list(self.value)!r}")  # type: ignore[arg-type]
        if self.op in (">", "<", ">=", "<=") and (
            isinstance(self.value, bool) or not isinstance(self.value, (int, float))
        ):
            raise ValueError(f"op {self.op!r} expects a number, got: {self.value!r}")
        return self


def _score_range(value: Any) -> tuple[int, int]:
    expected = 'expected a score or a range within 0-10 such as 7, "0-4" or [0, 4]'
    if isinstance(value, int) and not isinstance(value, bool):
        lo = hi = value
    elif isinstance(value, str) and re.fullmatch(r"\s*\d{1,2}\s*(-\s*\d{1,2}\s*)?", value):
        parts = [int(p) for p in value.split("-")]
        lo, hi = parts[0], parts[-1]
    elif isinstance(value, (list, tuple)) and len(value) == 2 and all(type(v) is int for v in value):
        lo, hi = value
    else:
        raise ValueError(f"{expected}, got: {value!r}")
    if not 0 <= lo <= hi <= 10:
        raise ValueError(f"{expected}, got: {value!r}")
    return (lo, hi)


class Conditions(_Frozen):
    """``[conditions]``: all given conditions must hold (an absent one always holds)."""

    category: tuple[CategoryName, ...] = ()
    score: Annotated[tuple[int, int] | None, BeforeValidator(_score_range)] = None
    comment_contains: tuple[str, ...] = ()
    programs: tuple[str, ...] = ()
    previous_category: tuple[CategoryName, ...] = ()
    field: tuple[FieldCondition, ...] = ()


class StepCommon(_Frozen):
    """The keys every ``[[step]]`` has, whatever its action."""

    action: str
    wait: DelayField | None = None
    unless: tuple[UnlessKind, ...] = ()
    name: str = ""


COMMON_KEYS = frozenset({"action", "wait", "unless", "name"})


class StepParams(_Frozen):
    """Base of each action's own keys. ``TEMPLATES`` names the keys that are Jinja2 templates."""

    TEMPLATES: ClassVar[tuple[str, ...]] = ()


@dataclass(frozen=True)
class Step:
    index: int
    action: str
    params: StepParams
    wait: Delay | None = None
    unless: tuple[str, ...] = ()
    name: str = ""
    templates: Mapping[str, Template] = field(default_factory=dict)
    #: Top-level template variables the step uses (an owner is looked up only when needed).
    uses: frozenset[str] = frozenset()

    @property
    def wait_text(self) -> str | None:
        return None if self.wait is None else format_delay(self.wait)


@dataclass(frozen=True)
class Playbook:
    name: str
    trigger: Trigger
    conditions: Conditions
    steps: tuple[Step, ...]
    description: str = ""
    enabled: bool = True
    source: Path | None = None


def _name(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,98}", value):
        raise ValueError(
            f"expected a name of lowercase letters, digits, '-' and '_' (at most 99), got: {value!r}"
        )
    return value


class _Header(_Frozen):
    name: Annotated[str, BeforeValidator(_name)]
    description: str = ""
    enabled: bool = True
    trigger: Trigger
    conditions: Conditions = Conditions()


# --- loading ---------------------------------------------------------------------------------------


def load_playbooks(paths: Sequence[Path]) -> list[Playbook]:
    """Parse and check every file; raise one ``ConfigError`` listing all problems of all files."""
    playbooks: list[Playbook] = []
    problems: list[str] = []
    seen: dict[str, Path] = {}
    for path in paths:
        book, found = _load_one(Path(path))
        problems.extend(found)
        if book is None:
            continue
        if book.name in seen:
            problems.append(
                f"{path}: name: {book.name!r} is already used by {seen[book.name]}; expected a unique name"
            )
            continue
        seen[book.name] = Path(path)
        playbooks.append(book)
    if not problems:
        problems = check_playbooks(playbooks)
    if problems:
        head = f"{len(problems)} problem(s) in playbooks:\n  " + "\n  ".join(problems)
        raise ConfigError(head, problems=problems)
    return playbooks


def check_playbooks(playbooks: Sequence[Playbook]) -> list[str]:
    """Problems a loaded set still has: template errors and unknown variables, duplicate names,
    ``task_overdue`` triggers naming playbooks that do not exist. Empty means fine."""
    problems: list[str] = []
    names = [b.name for b in playbooks]
    for book in playbooks:
        where = book.source or book.name
        if names.count(book.name) > 1:
            problems.append(f"{where}: name: {book.name!r} is used by more than one playbook")
        for other in book.trigger.playbooks:
            if other not in names:
                problems.append(
                    f"{where}: trigger.playbooks: {other!r} is not a loaded playbook; "
                    f"expected one of: {', '.join(names)}"
                )
        for step in book.steps:
            for key in type(step.params).TEMPLATES:
                source = getattr(step.params, key)
                if isinstance(source, str):
                    at = f"step[{step.index}].{key}"
                    problems.extend(_template_problems(where, at, source, step.action, book.trigger.on))
    return problems


def _template_problems(
    where: object, toml_path: str, source: str, action: str, trigger: str | None
) -> list[str]:
    shown = source if len(source) <= 80 else source[:77] + "..."
    found = templates.check_template(source, task=action == "crm_task", answered=trigger != "no_response")
    return [f"{where}: {toml_path}: {p} (in {shown!r})" for p in found]


def _load_one(path: Path) -> tuple[Playbook | None, list[str]]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        return None, [f"{path}: cannot read the playbook file: {exc}"]
    except tomllib.TOMLDecodeError as exc:
        return None, [f"{path}: not valid TOML: {exc}"]
    problems: list[str] = []
    raw_steps = data.pop("step", [])
    data.setdefault("name", path.stem)
    header: _Header | None = None
    try:
        header = _Header.model_validate(data)
    except ValidationError as exc:
        problems.extend(_format_errors(path, "", exc, _Header))
    trigger = header.trigger if header is not None else _valid_trigger(data.get("trigger"))
    if trigger is not None:
        problems.extend(_trigger_problems(path, trigger))
    if not isinstance(raw_steps, list) or not raw_steps:
        problems.append(f"{path}: step: expected at least one [[step]] table, got: {raw_steps!r}")
        raw_steps = []
    trigger_on = trigger.on if trigger is not None else None
    steps = [_load_step(path, i, raw, problems, trigger_on) for i, raw in enumerate(raw_steps)]
    if header is None or problems:
        return None, problems
    book = Playbook(
        name=header.name,
        description=header.description,
        enabled=header.enabled,
        trigger=header.trigger,
        conditions=header.conditions,
        steps=tuple(s for s in steps if s is not None),
        source=path,
    )
    return book, problems


def _valid_trigger(raw: Any) -> Trigger | None:
    """The trigger alone, so its own checks run even when other header keys are wrong."""
    try:
        return Trigger.model_validate(raw)
    except ValidationError:
        return None  # already reported through the header


def _trigger_problems(path: Path, trigger: Trigger) -> list[str]:
    problems = []
    if trigger.on == "no_response" and trigger.after is None:
        problems.append(
            f"{path}: trigger.after: missing; expected a delay such as '3d' for on = \"no_response\""
        )
    if trigger.on != "no_response" and trigger.after is not None:
        problems.append(f'{path}: trigger.after: only valid with on = "no_response", got on = {trigger.on!r}')
    if trigger.on != "category_changed" and (trigger.from_ or trigger.to):
        problems.append(
            f'{path}: trigger.from/to: only valid with on = "category_changed", got on = {trigger.on!r}'
        )
    if trigger.on != "task_overdue" and trigger.playbooks:
        problems.append(
            f'{path}: trigger.playbooks: only valid with on = "task_overdue", got on = {trigger.on!r}'
        )
    return problems


def _load_step(path: Path, index: int, raw: Any, problems: list[str], trigger_on: str | None) -> Step | None:
    from nps_sync.playbooks.actions import ACTIONS  # the registry imports this module's types

    where = f"step[{index}]"
    if not isinstance(raw, dict):
        problems.append(f"{path}: {where}: expected a [[step]] table, got: {raw!r}")
        return None
    action = raw.get("action")
    if action not in ACTIONS:
        known = ", ".join(sorted(ACTIONS))
        problems.append(f"{path}: {where}.action: unknown action {action!r}; expected one of: {known}")
        return None
    spec = ACTIONS[action]
    common_raw = {k: v for k, v in raw.items() if k in COMMON_KEYS}
    params_raw = {k: v for k, v in raw.items() if k not in COMMON_KEYS}
    before = len(problems)
    common: StepCommon | None = None
    params: StepParams | None = None
    try:
        common = StepCommon.model_validate(common_raw)
    except ValidationError as exc:
        problems.extend(_format_errors(path, where, exc, StepCommon))
    try:
        params = spec.params.model_validate(params_raw)
    except ValidationError as exc:
        problems.extend(_format_errors(path, where, exc, spec.params, extra_allowed=COMMON_KEYS))
    compiled: dict[str, Template] = {}
    uses: set[str] = set()
    for key in spec.params.TEMPLATES:
        source = params_raw.get(key) if params is None else getattr(params, key)
        if not isinstance(source, str):
            continue
        try:
            compiled[key] = templates.compile_template(source)
            uses |= templates.referenced_roots(source)
        except TemplateError as exc:
            problems.append(f"{path}: {where}.{key}: template error: {exc} (in {source!r})")
            continue
        problems.extend(_template_problems(path, f"{where}.{key}", source, action, trigger_on))
    if common is None or params is None or len(problems) > before:
        return None
    return Step(
        index=index,
        action=action,
        params=params,
        wait=common.wait,
        unless=common.unless,
        name=common.name,
        templates=compiled,
        uses=frozenset(uses),
    )


def _format_errors(
    path: Path,
    prefix: str,
    exc: ValidationError,
    model: type[BaseModel],
    *,
    extra_allowed: frozenset[str] = frozenset(),
) -> list[str]:
    out = []
    for err in exc.errors(include_url=False):
        loc = _toml_path(prefix, err["loc"])
        value = err.get("input")
        kind = err["type"]
        if kind == "extra_forbidden":
            allowed = sorted({f.alias or n for n, f in model.model_fields.items()} | extra_allowed)
            out.append(f"{path}: {loc}: unknown key (value {value!r}); expected one of: {', '.join(allowed)}")
        elif kind == "missing":
            out.append(f"{path}: {loc}: missing; a value is required")
        else:
            msg = str(err["msg"]).removeprefix("Value error, ").replace("Input should be", "expected", 1)
            if "got:" not in msg:
                msg = f"{msg}, got: {value!r}"
            out.append(f"{path}: {loc}: {msg}")
    return out


def _toml_path(prefix: str, loc: tuple[int | str, ...]) -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-", "literal[", "tuple[", "union[")) or part in (
            "str",
            "int",
            "float",
            "bool",
        ):
            continue  # pydantic's union-member labels are not TOML
        else:
            out += f".{part}" if out else part
    return out or "(top level)"
