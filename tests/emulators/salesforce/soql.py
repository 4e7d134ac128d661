"""The subset of SOQL the connector uses: parsed into a small AST and evaluated over the in-memory org.

Supported: ``SELECT f1, Rel.f2 | COUNT() FROM Obj [WHERE …] [ORDER BY f [ASC|DESC] [NULLS FIRST|LAST], …]
[LIMIT n]``; conditions with AND, OR, NOT, parentheses, ``= != <> < <= > >=``, ``[NOT] IN (…)``, LIKE,
``null``, booleans, numbers, quoted strings with backslash escapes, date/datetime literals and the
relative date literals TODAY, YESTERDAY, TOMORROW, LAST_N_DAYS:n, NEXT_N_DAYS:n.
Errors raise :class:`SoqlError` carrying Salesforce's error code (MALFORMED_QUERY, INVALID_FIELD).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", '"': '"', "'": "'", "\\": "\\"}
#: LIKE wildcards escaped in a pattern stay escaped until the pattern is matched.
_LIKE_ESCAPES = {"%": "\x00%", "_": "\x00_"}
_TOKEN = re.compile(
    r"""\s*(?:
      (?P<str>'(?:\\.|[^'\\])*')
    | (?P<dt>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}))
    | (?P<date>\d{4}-\d{2}-\d{2})
    | (?P<num>-?\d+(?:\.\d+)?)
    | (?P<op><>|!=|<=|>=|=|<|>)
    | (?P<punct>[(),])
    | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*(?::\d+)?)
    )""",
    re.VERBOSE,
)


class SoqlError(Exception):
    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


@dataclass(frozen=True)
class Tok:
    kind: str
    text: str
    value: Any = None


@dataclass(frozen=True)
class DateRange:
    """A relative date literal: ``start <= x < end`` in UTC."""

    start: datetime
    end: datetime


@dataclass
class Query:
    sobject: str
    fields: list[str]
    count: bool = False
    where: Any = None
    order: list[tuple[str, bool, bool]] = field(default_factory=list)  # (field, desc, nulls_last)
    limit: int | None = None


def _unescape(body: str) -> str:
    out, i = [], 0
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            nxt = body[i + 1] if i + 1 < len(body) else ""
            if nxt not in _ESCAPES and nxt not in _LIKE_ESCAPES:
                raise SoqlError("MALFORMED_QUERY", f"invalid escape sequence in string literal: {body!r}")
            out.append(_ESCAPES.get(nxt) or _LIKE_ESCAPES[nxt])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def tokenize(text: str) -> list[Tok]:
    toks: list[Tok] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None:
            raise SoqlError(
                "MALFORMED_QUERY", f"unexpected character at column {pos + 1}: {text[pos : pos + 20]!r}"
            )
        pos = m.end()
        kind = m.lastgroup or ""
        raw = m.group(kind)
        if kind == "str":
            toks.append(Tok("value", raw, _unescape(raw[1:-1])))
        elif kind == "dt":
            toks.append(Tok("value", raw, datetime.fromisoformat(raw.replace("Z", "+00:00"))))
        elif kind == "date":
            toks.append(Tok("value", raw, date.fromisoformat(raw)))
        elif kind == "num":
            toks.append(Tok("value", raw, float(raw)))
        else:
            toks.append(Tok(kind, raw))
    return toks


def _relative_date(word: str, today: date) -> DateRange | None:
    name, _, n = word.upper().partition(":")

    def day_range(first: date, last: date) -> DateRange:
        start = datetime.combine(first, time(), timezone.utc)
        return DateRange(start, datetime.combine(last + timedelta(days=1), time(), timezone.utc))

    if name == "TODAY":
        return day_range(today, today)
    if name == "YESTERDAY":
        return day_range(today - timedelta(days=1), today - timedelta(days=1))
    if name == "TOMORROW":
        return day_range(today + timedelta(days=1), today + timedelta(days=1))
    if name == "LAST_N_DAYS" and n:
        return day_range(today - timedelta(days=int(n)), today)
    if name == "NEXT_N_DAYS" and n:
        return day_range(today, today + timedelta(days=int(n)))
    return None


class _Parser:
    def __init__(self, text: str, today: date) -> None:
        self.toks = tokenize(text)
        self.i = 0
        self.today = today

    def peek(self, offset: int = 0) -> Tok | None:
        j = self.i + offset
        return self.toks[j] if j < len(self.toks) else None

    def kw(self, word: str) -> bool:
        tok = self.peek()
        if tok is not None and tok.kind == "ident" and tok.text.upper() == word:
            self.i += 1
            return True
        return False

    def expect_kw(self, word: str) -> None:
        if not self.kw(word):
            found = self.peek()
            raise SoqlError("MALFORMED_QUERY", f"expected {word}, found {found.text if found else 'end'!r}")

    def take(self, kind: str, text: str | None = None) -> Tok:
        tok = self.peek()
        if tok is None or tok.kind != kind or (text is not None and tok.text != text):
            want = text or kind
            raise SoqlError("MALFORMED_QUERY", f"expected {want!r}, found {tok.text if tok else 'end'!r}")
        self.i += 1
        return tok

    def ident(self) -> str:
        return self.take("ident").text

    def parse(self) -> Query:
        self.expect_kw("SELECT")
        fields: list[str] = []
        count = False
        tok0, tok1 = self.peek(), self.peek(1)
        if tok0 and tok1 and tok0.text.upper() == "COUNT" and tok1.text == "(":
            self.i += 2
            self.take("punct", ")")
            count = True
        else:
            fields.append(self.ident())
            while self.peek() is not None and self.peek().text == ",":  # type: ignore[union-attr]
                self.i += 1
                fields.append(self.ident())
        self.expect_kw("FROM")
        query = Query(sobject=self.ident(), fields=fields, count=count)
        if self.kw("WHERE"):
            query.where = self.or_expr()
        if self.kw("ORDER"):
            self.expect_kw("BY")
            while True:
                name = self.ident()
                desc = self.kw("DESC")
                if not desc:
                    self.kw("ASC")
                nulls_last = desc
                if self.kw("NULLS"):
                    nulls_last = self.kw("LAST")
                    if not nulls_last:
                        self.expect_kw("FIRST")
                query.order.append((name, desc, nulls_last))
                if self.peek() is not None and self.peek().text == ",":  # type: ignore[union-attr]
                    self.i += 1
                    continue
                break
        if self.kw("LIMIT"):
            query.limit = int(self.take("value").value)
        if self.peek() is not None:
            raise SoqlError("MALFORMED_QUERY", f"unexpected token {self.peek().text!r}")  # type: ignore[union-attr]
        return query

    def or_expr(self) -> Any:
        parts = [self.and_expr()]
        while self.kw("OR"):
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else ("or", parts)

    def and_expr(self) -> Any:
        parts = [self.not_expr()]
        while self.kw("AND"):
            parts.append(self.not_expr())
        return parts[0] if len(parts) == 1 else ("and", parts)

    def not_expr(self) -> Any:
        if self.kw("NOT"):
            return ("not", self.not_expr())
        tok = self.peek()
        if tok is not None and tok.text == "(":
            self.i += 1
            inner = self.or_expr()
            self.take("punct", ")")
            return inner
        return self.condition()

    def value(self) -> Any:
        tok = self.peek()
        if tok is None:
            raise SoqlError("MALFORMED_QUERY", "expected a value, found end of query")
        self.i += 1
        if tok.kind == "value":
            return tok.value
        if tok.kind == "ident":
            upper = tok.text.upper()
            if upper == "NULL":
                return None
            if upper in ("TRUE", "FALSE"):
                return upper == "TRUE"
            rel = _relative_date(tok.text, self.today)
            if rel is not None:
                return rel
        raise SoqlError("MALFORMED_QUERY", f"expected a value, found {tok.text!r}")

    def condition(self) -> Any:
        name = self.ident()
        negate = self.kw("NOT")
        if self.kw("IN"):
            self.take("punct", "(")
            values = [self.value()]
            while self.peek() is not None and self.peek().text == ",":  # type: ignore[union-attr]
                self.i += 1
                values.append(self.value())
            self.take("punct", ")")
            return ("in", name, values, negate)
        if negate:
            raise SoqlError("MALFORMED_QUERY", f"expected IN after NOT following {name}")
        if self.kw("LIKE"):
            pattern = self.value()
            if not isinstance(pattern, str):
                raise SoqlError("MALFORMED_QUERY", f"LIKE needs a string pattern, got {pattern!r}")
            return ("like", name, pattern)
        op = self.take("op").text
        return ("cmp", name, "!=" if op == "<>" else op, self.value())


def parse(text: str, today: date) -> Query:
    return _Parser(text, today).parse()


Resolver = Callable[[dict[str, Any], str], Any]


def _norm(value: Any) -> Any:
    if isinstance(value, str):
        return value.lower()
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return float(value)
    return value


def _coerce_pair(left: Any, right: Any) -> tuple[Any, Any]:
    """SOQL compares a datetime field with a date literal by day, and strings case-insensitively."""
    if isinstance(left, datetime) and isinstance(right, date) and not isinstance(right, datetime):
        return left.date(), right
    if isinstance(left, date) and not isinstance(left, datetime) and isinstance(right, datetime):
        return left, right.date()
    return _norm(left), _norm(right)


def _compare(left: Any, op: str, right: Any) -> bool:
    if isinstance(right, DateRange):
        if left is None:
            return op == "!="
        value = left if isinstance(left, datetime) else datetime.combine(left, time(), timezone.utc)
        inside = right.start <= value < right.end
        return {
            "=": inside,
            "!=": not inside,
            "<": value < right.start,
            "<=": value < right.end,
            ">": value >= right.end,
            ">=": value >= right.start,
        }[op]
    if right is None or left is None:
        if op == "=":
            return left is None and right is None
        if op == "!=":
            return (left is None) != (right is None)
        return False
    a, b = _coerce_pair(left, right)
    try:
        return bool(
            {
                "=": a == b,
                "!=": a != b,
                "<": a < b,
                "<=": a <= b,
                ">": a > b,
                ">=": a >= b,
            }[op]
        )
    except TypeError:
        raise SoqlError("INVALID_FIELD", f"cannot compare {left!r} with {right!r}") from None


def _like(value: Any, pattern: str) -> bool:
    if value is None:
        return False
    parts, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\x00" and i + 1 < len(pattern):
            parts.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        parts.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    regex = "".join(parts)
    return re.fullmatch(regex, str(value), re.IGNORECASE | re.DOTALL) is not None


def prepared(expr: Any) -> Any:
    """``expr`` with each ``IN`` of string literals turned into a set look-up, for a query's scan.

    The same answers as comparing one by one: a string literal equals only a string field value,
    case-insensitively. A task-key look-up (200 keys) over 50,000 tasks made the emulator take
    seconds a query, a delay the real API, which indexes such fields, does not have."""
    if expr is None:
        return None
    kind = expr[0]
    if kind in ("and", "or"):
        return (kind, [prepared(part) for part in expr[1]])
    if kind == "not":
        return (kind, prepared(expr[1]))
    if kind == "in" and expr[2] and all(isinstance(v, str) for v in expr[2]):
        return ("in_strings", expr[1], frozenset(v.lower() for v in expr[2]), expr[3])
    return expr


def evaluate(expr: Any, record: dict[str, Any], resolve: Resolver) -> bool:
    kind = expr[0]
    if kind == "in_strings":
        value = resolve(record, expr[1])
        return (isinstance(value, str) and value.lower() in expr[2]) != expr[3]
    if kind == "and":
        return all(evaluate(part, record, resolve) for part in expr[1])
    if kind == "or":
        return any(evaluate(part, record, resolve) for part in expr[1])
    if kind == "not":
        return not evaluate(expr[1], record, resolve)
    value = resolve(record, expr[1])
    if kind == "in":
        hit = any(_compare(value, "=", v) for v in expr[2])
        return hit != expr[3]
    if kind == "like":
        return _like(value, expr[2])
    return _compare(value, expr[2], expr[3])


def where_fields(expr: Any) -> list[str]:
    if expr is None:
        return []
    if expr[0] in ("and", "or"):
        return [name for part in expr[1] for name in where_fields(part)]
    if expr[0] == "not":
        return where_fields(expr[1])
    return [expr[1]]
