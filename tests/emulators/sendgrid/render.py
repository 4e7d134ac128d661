"""What SendGrid makes of one personalization: substitutions and a small Handlebars subset."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any


def substitute(text: str, substitutions: Mapping[str, str]) -> str:
    """Every tag replaced in one left-to-right pass (a value is never substituted again)."""
    if not substitutions or not text:
        return text
    pattern = re.compile("|".join(re.escape(k) for k in sorted(substitutions, key=len, reverse=True)))
    return pattern.sub(lambda m: str(substitutions[m.group(0)]), text)


_EACH = re.compile(r"\{\{#each\s+([\w.]+)\s*\}\}(.*?)\{\{/each\}\}", re.DOTALL)
_VAR = re.compile(r"\{\{\{?\s*([\w.]+)\s*\}?\}\}")


def _lookup(data: Mapping[str, Any], dotted: str) -> Any:
    value: Any = data
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def handlebars(template: str, data: Mapping[str, Any]) -> str:
    """``{{name}}``, ``{{a.b}}`` and ``{{#each list}}…{{this}}…{{/each}}``: enough for NPS templates."""

    def each(match: re.Match[str]) -> str:
        items = _lookup(data, match.group(1)) or []
        return "".join(match.group(2).replace("{{this}}", str(item)) for item in items)

    expanded = _EACH.sub(each, template)
    return _VAR.sub(lambda m: "" if (v := _lookup(data, m.group(1))) is None else str(v), expanded)
