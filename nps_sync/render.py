"""Render survey, reminder and playbook messages exactly as recipients receive them.

Every email carries 11 score links (its one signed survey link, each with ``?score=N`` to preselect
that score on the page, where the form records the answer), a one-click unsubscribe (RFC 8058
``List-Unsubscribe`` + ``List-Unsubscribe-Post`` headers, and a footer link), the sender's postal
address, and a second, tagged rendering so providers that send one body to many recipients can
batch (see ``TaggedContent``).

A wave renders thousands of survey emails that differ only in the greeting and the links, so the
layout of each (program, language, kind) is rendered once with tags where those go, checked to give
what Jinja gives, and filled in per recipient (``_Layout``).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, StrictUndefined, Template, select_autoescape
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup, escape

from nps_sync.config import Config, ProgramConfig
from nps_sync.models import Category, OutboundMessage, TaggedContent
from nps_sync.tokens import SCORES, Tokens

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_messages = Environment(
    loader=PackageLoader("nps_sync", "templates/messages"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
    # The templates ship inside the package: no need to stat their files at every render.
    auto_reload=False,
)
# Survey wording comes from config files edited by ops: render it sandboxed.
_text_env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


@cache
def _text_template(source: str) -> Template:
    """Compiled once per distinct wording: compiling costs far more than rendering, and every survey
    page and every email renders a dozen pieces of wording."""
    return _text_env.from_string(source)


@cache
def shipped_texts(language: str) -> dict[str, str]:
    data = tomllib.loads(files("nps_sync").joinpath(f"locales/{language}.toml").read_text("utf-8"))
    return {k: str(v) for k, v in data.items()}


def check_texts(config: Config) -> list[str]:
    """Render every program's wording overrides with sample values, so a misspelt variable or a
    syntax error is reported by ``nps-sync check`` instead of when a survey is sent."""
    problems = []
    sample = {
        "company": config.daemon.company_name,
        "first_name": "Ada",
        "program": "",
        "score": 9,
        "follow_up": "…",
    }
    for i, program in enumerate(config.program):
        for language, wording in program.text.items():
            for key, source in wording.model_dump().items():
                if not source:
                    continue
                try:
                    _text_env.from_string(source).render(**{**sample, "program": program.name})
                except Exception as exc:  # jinja2's UndefinedError, TemplateSyntaxError, SecurityError
                    problems.append(
                        f"{config.source}: program[{i}].text.{language}.{key}: {exc} "
                        f"(available: company, first_name, program), got: {source!r}"
                    )
    return problems


def choose_language(locale: str | None, program: ProgramConfig) -> str:
    """The recipient's language: the CRM locale's language when the program offers it, else the default."""
    if locale:
        lang = locale.replace("-", "_").split("_")[0].lower()
        if lang in program.languages:
            return lang
    return program.default_language


#: Greetings rendered per (program, language, first name): first names repeat a lot in a wave.
_INTRO_CACHE_SIZE = 4096


@dataclass(frozen=True)
class _Layout:
    """One survey email's rendering split at the per-recipient places: ``parts`` alternate constant
    text and tag names (``-intro-``, ``-link_3-``, …), so filling a recipient in is one join."""

    program: ProgramConfig
    subject: str
    question: str
    tagged_text: str
    tagged_html: str
    text_parts: Sequence[str]
    html_parts: Sequence[str]

    def fill(self, parts: Sequence[str], values: Mapping[str, str]) -> str:
        return "".join(values[p] if i % 2 else p for i, p in enumerate(parts))


class Renderer:
    def __init__(self, config: Config, tokens: Tokens) -> None:
        self.config = config
        self.tokens = tokens
        self.company = config.daemon.company_name
        self.public_url = config.daemon.public_url
        #: (program name, language, reminder) → (program, its layout or None when the wording defeats it).
        self._layouts: dict[tuple[str, str, bool], tuple[ProgramConfig, _Layout | None]] = {}
        #: (program name, language, first name) → (program, greeting).
        self._intros: dict[tuple[str, str, str], tuple[ProgramConfig, str]] = {}
        self._plain_url = str(escape(self.public_url)) == self.public_url

    # --- wording ------------------------------------------------------------------------------------

    def text(self, language: str, key: str, program: ProgramConfig | None = None, **ctx: Any) -> str:
        """One piece of wording, from the program's override or the shipped text, rendered."""
        source = shipped_texts(language).get(key, "")
        if program is not None and language in program.text:
            source = getattr(program.text[language], key, "") or source
        values = {"company": self.company, "first_name": "", "program": program.name if program else ""}
        values.update(ctx)
        return _text_template(source).render(**values).strip()

    def follow_up(self, language: str, category: Category, program: ProgramConfig | None) -> str:
        return self.text(language, f"follow_up_{category.value}", program)

    # --- links ---------------------------------------------------------------------------------

    def score_links(self, send_id: int) -> list[str]:
        """The survey link once per score: one signed token (the score only preselects the page's
        answer, which the person then submits; the link alone already lets them submit any score)."""
        return _score_links(self.survey_link(send_id))

    def survey_link(self, send_id: int) -> str:
        return f"{self.public_url}/r/{self.tokens.sign('survey', {'s': send_id})}"

    def unsubscribe_token(self, send_id: int) -> str:
        return self.tokens.sign("unsubscribe", {"s": send_id})

    def unsubscribe_headers(self, token: str) -> dict[str, str]:
        email = self.config.channels.email
        mailto = email.unsubscribe_mailto or email.from_address
        return {
            "List-Unsubscribe": (
                f"<{self.public_url}/u/{token}>, <mailto:{mailto}?subject={quote('unsubscribe ' + token)}>"
            ),
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }

    @property
    def sender(self) -> str:
        email = self.config.channels.email
        return f"{email.from_name} <{email.from_address}>" if email.from_name else email.from_address

    # --- messages ------------------------------------------------------------------------------

    def survey_email(
        self,
        *,
        send_id: int,
        send_key: str,
        to: str,
        first_name: str,
        program: ProgramConfig,
        language: str,
        reminder: bool = False,
        purpose: str = "survey",
    ) -> OutboundMessage:
        layout = self._layout(program, language, reminder)
        if layout is not None:
            return self._fill(
                layout,
                send_id=send_id,
                send_key=send_key,
                to=to,
                language=language,
                intro=self._intro(program, language, first_name),
                purpose="reminder" if reminder else purpose,
            )
        subject = self.text(language, "reminder_subject" if reminder else "subject", program)
        question = self.text(language, "question", program)
        return self._email(
            send_id=send_id,
            send_key=send_key,
            to=to,
            subject=subject,
            language=language,
            program=program,
            intro=self.text(language, "intro", program, first_name=first_name),
            per_recipient_links=self.score_links(send_id),
            shared={"question": question, "body_text": "", "body_html": ""},
            purpose="reminder" if reminder else purpose,
        )

    def _intro(self, program: ProgramConfig, language: str, first_name: str) -> str:
        key = (program.name, language, first_name)
        known = self._intros.get(key)
        if known is not None and known[0] is program:
            return known[1]
        intro = self.text(language, "intro", program, first_name=first_name)
        if len(self._intros) >= _INTRO_CACHE_SIZE:
            self._intros.clear()
        self._intros[key] = (program, intro)
        return intro

    def _layout(self, program: ProgramConfig, language: str, reminder: bool) -> _Layout | None:
        key = (program.name, language, reminder)
        known = self._layouts.get(key)
        if known is not None and known[0] is program:
            return known[1]
        layout = self._make_layout(program, language, reminder)
        self._layouts[key] = (program, layout)
        return layout

    def _make_layout(self, program: ProgramConfig, language: str, reminder: bool) -> _Layout | None:
        """Render the survey email once with tags, and keep it only if filling probe values in gives
        exactly what Jinja renders with them (wording that contains a tag, say, does not)."""
        subject = self.text(language, "reminder_subject" if reminder else "subject", program)
        question = self.text(language, "question", program)
        common = self._common(language, subject, program, {"question": question})
        tagged_links = _score_links("-survey_url-")
        tagged_html, tagged_text = _render(
            common, "-intro-", tagged_links, "-unsubscribe_url-", "-intro_html-"
        )
        pattern = _tag_pattern(_LAYOUT_TAGS)
        if pattern.search(subject):
            return None
        probe = {tag: f"probe{i}x{tag[1:-1]}" for i, tag in enumerate(_LAYOUT_TAGS)}
        probe["-intro_html-"] = probe["-intro-"]
        links = _score_links(probe["-survey_url-"])
        html, text = _render(common, probe["-intro-"], links, probe["-unsubscribe_url-"], None)
        html_parts, text_parts = pattern.split(tagged_html), pattern.split(tagged_text)
        layout = _Layout(program, subject, question, tagged_text, tagged_html, text_parts, html_parts)
        if layout.fill(html_parts, probe) != html or layout.fill(text_parts, probe) != text:
            return None
        return layout

    def _fill(
        self,
        layout: _Layout,
        *,
        send_id: int,
        send_key: str,
        to: str,
        language: str,
        intro: str,
        purpose: str,
    ) -> OutboundMessage:
        survey_url = self.survey_link(send_id)
        links = _score_links(survey_url)
        unsubscribe_token = self.unsubscribe_token(send_id)
        unsubscribe_url = f"{self.public_url}/u/{unsubscribe_token}"
        substitutions = {
            "-intro-": intro,
            "-intro_html-": str(escape(intro)),
            "-unsubscribe_url-": unsubscribe_url,
            "-survey_url-": survey_url,
        }
        # Jinja escapes the values in the HTML part. Tokens are URL-safe, so links only change when
        # public_url has a character to escape, and then the tagged body would not give this
        # message back: it is sent on its own.
        if self._plain_url:
            in_html = substitutions
        else:
            in_html = {tag: str(escape(value)) for tag, value in substitutions.items()}
            in_html["-intro_html-"] = substitutions["-intro_html-"]
        html = layout.fill(layout.html_parts, in_html)
        text = layout.fill(layout.text_parts, substitutions)
        batchable = self._plain_url
        postal_address = self.config.channels.email.postal_address
        return OutboundMessage(
            send_key=send_key,
            channel="email",
            to=to,
            subject=layout.subject,
            text=text,
            html=html,
            headers=self.unsubscribe_headers(unsubscribe_token),
            template_data={
                "intro": intro,
                "question": layout.question,
                "body": "",
                "score_links": links,
                "unsubscribe_url": unsubscribe_url,
                "language": language,
                "purpose": purpose,
                "company": self.company,
                "postal_address": postal_address,
            },
            purpose=purpose,
            tagged=(
                TaggedContent(layout.subject, layout.tagged_text, layout.tagged_html, substitutions)
                if batchable
                else None
            ),
            sender=self.sender,
            reply_to=self.config.channels.email.reply_to or None,
        )

    def _common(
        self, language: str, subject: str, program: ProgramConfig | None, shared: Mapping[str, Any]
    ) -> dict[str, Any]:
        return {
            "language": language,
            "subject": subject,
            "low_label": self.text(language, "low_label", program),
            "high_label": self.text(language, "high_label", program),
            "footer": self.text(language, "footer", program),
            "unsubscribe": self.text(language, "unsubscribe", program),
            "postal_address": self.config.channels.email.postal_address,
            "body_text": "",
            "body_html": "",
            **shared,
        }

    def plain_email(
        self,
        *,
        send_id: int,
        send_key: str,
        to: str,
        subject: str,
        body: str,
        language: str,
        program: ProgramConfig | None,
        purpose: str = "playbook",
    ) -> OutboundMessage:
        """A playbook email: the playbook's text in the survey layout, with footer and unsubscribe."""
        # Markup all the way: a plain str here would be escaped again by the template.
        paragraphs = Markup("</p><p>").join(
            Markup("<br>").join(map(escape, para.split("\n"))) for para in body.split("\n\n")
        )
        return self._email(
            send_id=send_id,
            send_key=send_key,
            to=to,
            subject=subject,
            language=language,
            program=program,
            intro="",
            per_recipient_links=[],
            shared={"question": "", "body_text": body, "body_html": Markup("<p>{}</p>").format(paragraphs)},
            purpose=purpose,
        )

    def _email(
        self,
        *,
        send_id: int,
        send_key: str,
        to: str,
        subject: str,
        language: str,
        program: ProgramConfig | None,
        intro: str,
        per_recipient_links: list[str],
        shared: Mapping[str, str],
        purpose: str,
    ) -> OutboundMessage:
        unsubscribe_token = self.unsubscribe_token(send_id)
        unsubscribe_url = f"{self.public_url}/u/{unsubscribe_token}"
        common = self._common(language, subject, program, shared)

        def render(
            intro_: str, links: list[str], unsub: str, intro_html: str | None = None
        ) -> tuple[str, str]:
            return _render(common, intro_, links, unsub, intro_html)

        html, text = render(intro, per_recipient_links, unsubscribe_url)
        tags = [f"-link_{i}-" for i in range(len(per_recipient_links))]
        tagged_html, tagged_text = render("-intro-", tags, "-unsubscribe_url-", intro_html="-intro_html-")
        substitutions = {
            "-intro-": intro,
            "-intro_html-": str(escape(intro)),
            "-unsubscribe_url-": unsubscribe_url,
            **dict(zip(tags, per_recipient_links, strict=True)),
        }
        tagged: TaggedContent | None = TaggedContent(subject, tagged_text, tagged_html, substitutions)
        if _substitute(tagged_html, substitutions) != html or _substitute(tagged_text, substitutions) != text:
            tagged = None  # wording that contains a tag by accident: send this one on its own
        return OutboundMessage(
            send_key=send_key,
            channel="email",
            to=to,
            subject=subject,
            text=text,
            html=html,
            headers=self.unsubscribe_headers(unsubscribe_token),
            template_data={
                "intro": intro,
                "question": shared.get("question", ""),
                "body": shared.get("body_text", ""),
                "score_links": per_recipient_links,
                "unsubscribe_url": unsubscribe_url,
                "language": language,
                "purpose": purpose,
                "company": self.company,
                "postal_address": self.config.channels.email.postal_address,
            },
            purpose=purpose,
            tagged=tagged,
            sender=self.sender,
            reply_to=self.config.channels.email.reply_to or None,
        )

    def survey_sms(
        self, *, send_key: str, to: str, program: ProgramConfig, language: str, reminder: bool = False
    ) -> OutboundMessage:
        body = self.text(language, "sms", program)
        return OutboundMessage(
            send_key=send_key,
            channel="sms",
            to=to,
            subject="",
            text=body,
            template_data={"language": language, "purpose": "reminder" if reminder else "survey"},
            purpose="reminder" if reminder else "survey",
        )

    def plain_sms(self, *, send_key: str, to: str, body: str, purpose: str = "playbook") -> OutboundMessage:
        return OutboundMessage(
            send_key=send_key, channel="sms", to=to, subject="", text=body, purpose=purpose
        )


#: The places a survey email's layout is filled per recipient.
_LAYOUT_TAGS = ("-intro-", "-intro_html-", "-unsubscribe_url-", "-survey_url-")


def _score_links(survey_url: str) -> list[str]:
    return [f"{survey_url}?score={score}" for score in SCORES]


def _render(
    common: Mapping[str, Any], intro: str, links: list[str], unsubscribe_url: str, intro_html: str | None
) -> tuple[str, str]:
    html_intro = escape(intro) if intro_html is None else intro_html
    html = _messages.get_template("survey.html").render(
        **common, intro=html_intro, score_links=links, unsubscribe_url=unsubscribe_url
    )
    text = _messages.get_template("survey.txt").render(
        **common, intro=intro, score_links=links, unsubscribe_url=unsubscribe_url
    )
    return html, text


@cache
def _tag_pattern(tags: tuple[str, ...]) -> re.Pattern[str]:
    """Tags matched in one pass, longest first, the way a provider substitutes them."""
    return re.compile("(" + "|".join(re.escape(t) for t in sorted(tags, key=len, reverse=True)) + ")")


def _substitute(content: str, substitutions: Mapping[str, str]) -> str:
    for tag, value in substitutions.items():
        content = content.replace(tag, value)
    return content
