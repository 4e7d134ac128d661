"""Playbook templates: a sandboxed Jinja2 environment, the render context, and load-time checks.

The context every playbook template sees (documented in each shipped playbook too):

- ``contact``: ``id``, ``first_name``, ``last_name``, ``name``, ``email``, ``phone``, ``account_name``,
  ``fields`` (the extra CRM fields the program copies, e.g. ``contact.fields.plan``; a field the
  contact does not have renders as an empty string)
- ``account``: ``id``, ``name``
- ``response``: ``id``, ``score``, ``category``, ``previous_category``, ``comment``, ``url`` (the
  response page, ``{public_url}/responses/{id}``); ``None`` values for a ``no_response`` trigger
- ``program``: the survey program's name
- ``owner``: ``name``, ``email`` of the resolved task owner (the account owner outside ``crm_task``)
- ``due``: the task's due date (``crm_task`` only; ``None`` elsewhere)
- ``public_url``: the daemon's public base URL
- ``testimonial_url``: the promoter's own testimonial page (a signed link carrying only the response
  id); ``None`` for a ``no_response`` trigger

Templates render with ``StrictUndefined``: a misspelt variable is an error. :func:`check_template`
finds those at load time by walking the template and rendering it against a full sample context, so
``{{ contact.nmae }}`` is reported by ``nps-sync check`` instead of failing a send at 3 a.m.
Autoescaping is off: playbooks produce plain text (task bodies, text emails, SMS).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, UndefinedError, meta, nodes
from jinja2.sandbox import SandboxedEnvironment

from nps_sync.errors import PlaybookError

ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


class FieldMap(dict[str, str]):
    """CRM extra fields: a field the contact lacks renders empty instead of failing the step."""

    def __missing__(self, key: str) -> str:
        return ""


CONTEXT_KEYS: Mapping[str, tuple[str, ...]] = {
    "contact": ("id", "first_name", "last_name", "name", "email", "phone", "account_name", "fields"),
    "account": ("id", "name"),
    "response": ("id", "score", "category", "previous_category", "comment", "url"),
    "program": (),
    "owner": ("name", "email"),
    "due": (),
    "public_url": (),
    "testimonial_url": (),
}


def sample_context(*, task: bool = True, answered: bool = True) -> dict[str, Any]:
    """A context with every documented variable set, for load-time checks and previews.

    ``task=False`` leaves ``due`` unset as outside a ``crm_task`` step; ``answered=False`` leaves the
    response empty as for a ``no_response`` trigger, so ``{{ response.score + 1 }}`` is caught there.
    """
    public_url = "https://nps.example.com"
    sample = {
        "contact": {
            "id": "C001",
            "first_name": "Alice",
            "last_name": "Smith",
            "name": "Alice Smith",
            "email": "alice.smith@example.com",
            "phone": "+12125551000",
            "account_name": "Northwind Traders",
            "fields": FieldMap(plan="enterprise", region="NA"),
        },
        "account": {"id": "A01", "name": "Northwind Traders"},
        "response": {
            "id": 1,
            "score": 3,
            "category": "detractor",
            "previous_category": "promoter",
            "comment": "Support took a week to answer.",
            "url": f"{public_url}/responses/1",
        },
        "program": "relationship",
        "owner": {"name": "Jonas Weber", "email": "jonas.weber@example.com"},
        "due": date(2026, 1, 5) if task else None,
        "public_url": public_url,
        "testimonial_url": f"{public_url}/t/sample-token",
    }
    if not answered:
        sample["response"] = dict.fromkeys(CONTEXT_KEYS["response"])
        sample["testimonial_url"] = None
    return sample


def compile_template(source: str) -> Template:
    """Compile ``source``; raises ``jinja2.TemplateError`` (syntax, unknown filter) for the loader."""
    return ENV.from_string(source)


def check_template(source: str, *, task: bool = True, answered: bool = True) -> list[str]:
    """Problems with one template source: syntax, unknown variables or attributes, render errors
    (against :func:`sample_context` with the same ``task``/``answered``)."""
    try:
        ast = ENV.parse(source)
        template = ENV.from_string(source)
    except TemplateError as exc:
        return [f"template error: {exc}"]
    sample = sample_context(task=task, answered=answered)
    problems = [
        f"unknown variable {name!r}; expected one of: {', '.join(CONTEXT_KEYS)}"
        for name in sorted(meta.find_undeclared_variables(ast))
        if name not in sample
    ]
    for path in _attribute_paths(ast):
        if path[0] in sample and not _resolves(sample, path):
            known = CONTEXT_KEYS.get(path[0], ())
            expected = ", ".join(f"{path[0]}.{k}" for k in known) if known else f"plain {path[0]!r}"
            problems.append(f"unknown variable {'.'.join(path)!r}; expected one of: {expected}")
    if not problems:
        try:
            template.render(sample)
        except Exception as exc:  # ops-written code: any failure is a finding, not a crash
            problems.append(f"template does not render with the sample context: {exc}")
    return problems


def render(template: Template, context: Mapping[str, Any]) -> str:
    """Render for real; a missing value or a sandbox violation raises ``PlaybookError``."""
    try:
        return template.render(dict(context))
    except UndefinedError as exc:
        raise PlaybookError(f"template refers to a missing value: {exc}") from exc
    except Exception as exc:  # ops-written code: fail this run, never the whole batch
        raise PlaybookError(f"template failed to render: {type(exc).__name__}: {exc}") from exc


def referenced_roots(source: str) -> set[str]:
    """Top-level variables a template uses (to resolve an owner only when a template needs it)."""
    return set(meta.find_undeclared_variables(ENV.parse(source)))


def _attribute_paths(ast: nodes.Template) -> list[tuple[str, ...]]:
    """Each outermost ``a.b.c`` / ``a["b"]`` chain rooted at a plain name, as ``("a", "b", "c")``."""
    paths: list[tuple[str, ...]] = []
    inner: set[int] = set()
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        if id(node) in inner:
            continue
        chain: list[str] = []
        current: nodes.Node = node
        while True:
            if isinstance(current, nodes.Getattr):
                chain.append(current.attr)
                current = current.node
            elif isinstance(current, nodes.Getitem) and isinstance(current.arg, nodes.Const):
                chain.append(str(current.arg.value))
                current = current.node
            else:
                break
            if isinstance(current, (nodes.Getattr, nodes.Getitem)):
                inner.add(id(current))
        if isinstance(current, nodes.Name) and chain:
            paths.append((current.name, *reversed(chain)))
    return paths


def _resolves(value: Any, path: tuple[str, ...]) -> bool:
    for part in path:
        if isinstance(value, FieldMap) or not isinstance(value, Mapping):
            return True  # any CRM field name; methods of plain values are left to the test render
        if part not in value:
            return False
        value = value[part]
    return True
