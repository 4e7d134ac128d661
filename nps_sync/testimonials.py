"""Testimonials: a promoter's quote, published only with explicit consent, withdrawable at any time.

The promoter-testimonial playbook links to ``/t/{token}`` (purpose ``testimonial``, carrying only
the response id). The page is prefilled from the contact snapshot of the survey; a GET never writes.
A POST with the consent box ticked stores the quote with the consent text exactly as shown, the
time, and the response id; in the same transaction it queues a CRM note (job ``crm_note``) and a
thank-you email (a ``sends`` row of kind ``confirmation``, through the normal at-most-once path).
The thank-you page and email carry a withdrawal link (``/t/w/{token}``, its own salt, carrying only
the testimonial id): confirming it marks the testimonial withdrawn at once, drops it from every
export, and queues a second CRM note saying consent was withdrawn.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import structlog
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import Connection, select, update

from nps_sync.abc import CRM
from nps_sync.config import Config
from nps_sync.errors import NpsSyncError, PermanentError, TokenError
from nps_sync.queue import enqueue
from nps_sync.store import schema
from nps_sync.store.db import Store, utcnow
from nps_sync.timezones import normalize_email
from nps_sync.tokens import Tokens

log = structlog.get_logger("nps_sync.testimonials")

NOTE_JOB = "crm_note"
WITHDRAW_SALT = "nps-sync/testimonial-withdrawal/v1"
MAX_QUOTE = 1000
MAX_FIELD = 200
ExportFormat = Literal["json", "csv", "html"]
EXPORT_FIELDS = ("quote", "display_name", "title", "company", "date")

CONSENT = {
    "en": (
        "I agree that {company} may publish the quote above, with the name, title and company I "
        "entered, on its website and in its marketing material. I can withdraw this consent at any "
        "time with the link in the confirmation email; it is then removed."
    ),
    "de": (
        "Ich bin einverstanden, dass {company} das obige Zitat mit dem angegebenen Namen, der Position "
        "und dem Unternehmen auf seiner Website und in Marketingmaterial veröffentlicht. Ich kann diese "
        "Einwilligung jederzeit über den Link in der Bestätigungs-E-Mail widerrufen; es wird dann entfernt."
    ),
}
THANKS_MAIL = {
    "en": (
        "Thank you for your testimonial",
        "Hi {name},\n\nthank you for your kind words. This is what you allowed us to publish:\n\n"
        '"{quote}"\n— {signature}\n\nYou agreed on {when} UTC to: {consent}\n\n'
        "Changed your mind? Withdraw your consent here and we remove it at once:\n{withdraw_url}\n",
    ),
    "de": (
        "Vielen Dank für Ihr Zitat",
        "Hallo {name},\n\nvielen Dank für Ihre freundlichen Worte. Diese Fassung dürfen wir "
        'veröffentlichen:\n\n"{quote}"\n— {signature}\n\nIhre Einwilligung vom {when} UTC: {consent}\n\n'
        "Anders entschieden? Hier widerrufen Sie Ihre Einwilligung, wir entfernen das Zitat sofort:\n"
        "{withdraw_url}\n",
    ),
}


class TestimonialError(NpsSyncError):
    """A testimonial could not be stored or changed; ``status`` is the HTTP status to answer with."""

    __test__ = False  # not a pytest test class

    def __init__(self, message: str, *, status: int = 422) -> None:
        self.status = status
        super().__init__(message)


@dataclass(frozen=True)
class Prefill:
    """What the page shows before anything is stored: the response and the contact as surveyed."""

    response_id: int
    program: str
    contact_id: str
    account_id: str | None
    language: str
    display_name: str
    title: str
    company: str
    first_name: str
    email: str | None


@dataclass(frozen=True)
class Testimonial:
    id: int
    response_id: int
    program: str
    contact_id: str
    quote: str
    display_name: str
    title: str
    company: str
    language: str
    consent_text: str
    consented_at: datetime
    withdrawn_at: datetime | None

    @property
    def signature(self) -> str:
        return ", ".join(p for p in (self.display_name, self.title, self.company) if p)


def _field(fields: Mapping[str, Any], *names: str) -> str:
    folded = {str(k).casefold(): v for k, v in fields.items()}
    for name in names:
        value = folded.get(name)
        if value:
            return str(value)
    return ""


def _row(row: Any) -> Testimonial:
    return Testimonial(**{k: row[k] for k in Testimonial.__dataclass_fields__})


class Testimonials:
    """The store and service behind the testimonial pages, the export and the ``crm_note`` jobs."""

    __test__ = False

    def __init__(
        self, store: Store, config: Config, tokens: Tokens, keys: Sequence[str], crm: CRM | None = None
    ) -> None:
        self.store = store
        self.config = config
        self.tokens = tokens
        self.crm = crm
        self.public_url = config.daemon.public_url.rstrip("/")
        self.company = config.daemon.company_name
        # Its own salt: a testimonial link can never be replayed as a withdrawal, nor the reverse.
        self._withdraw = URLSafeTimedSerializer(list(keys), salt=WITHDRAW_SALT)

    # --- links ------------------------------------------------------------------------------------

    def request_url(self, response_id: int) -> str:
        return f"{self.public_url}/t/{self.tokens.sign('testimonial', {'r': response_id})}"

    def links(self, response_id: int) -> Mapping[str, str]:
        """The playbook template variables for an answered event (``PlaybookServices.links``)."""
        return {"testimonial_url": self.request_url(response_id)}

    def withdraw_url(self, testimonial_id: int) -> str:
        return f"{self.public_url}/t/w/{self._withdraw.dumps({'t': testimonial_id})}"

    def response_for(self, token: str) -> int:
        """The response id a testimonial link carries; raises TokenError."""
        payload = self.tokens.verify("testimonial", token)
        value = payload.get("r")
        if type(value) is not int:
            raise TokenError("this link is not valid")
        return value

    def testimonial_for(self, token: str) -> int:
        """The testimonial id a withdrawal link carries; raises TokenError. Withdrawal links never
        expire (consent must stay revocable); they stop working only when the key is retired."""
        if len(token) > 512:
            raise TokenError("token too long")
        try:
            payload = self._withdraw.loads(token)
        except BadSignature as exc:
            raise TokenError("this link is not valid") from exc
        value = payload.get("t") if isinstance(payload, dict) else None
        if type(value) is not int:
            raise TokenError("this link is not valid")
        return value

    # --- reading ----------------------------------------------------------------------------------

    def consent_text(self, language: str) -> str:
        return CONSENT.get(language, CONSENT["en"]).format(company=self.company)

    @staticmethod
    def consent_digest(text: str) -> str:
        """Sent with the form, so the text stored is provably the text the person saw."""
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def prefill(self, response_id: int) -> Prefill | None:
        r, s = schema.responses, schema.sends
        with self.store.read() as conn:
            row = conn.execute(
                select(r.c.id, r.c.program, r.c.contact_id, r.c.account_id, s.c.language, s.c.snapshot)
                .join(s, s.c.id == r.c.send_id)
                .where(r.c.id == response_id)
            ).first()
        if row is None:
            return None
        snap = row.snapshot or {}
        fields = snap.get("fields") or {}
        name = f"{snap.get('first_name') or ''} {snap.get('last_name') or ''}".strip()
        return Prefill(
            response_id=row.id,
            program=row.program,
            contact_id=row.contact_id,
            account_id=row.account_id,
            language=row.language,
            display_name=name,
            title=_field(fields, "title", "jobtitle", "job_title"),
            company=str(snap.get("account_name") or ""),
            first_name=str(snap.get("first_name") or ""),
            email=snap.get("email"),
        )

    def get(self, testimonial_id: int) -> Testimonial | None:
        t = schema.testimonials
        with self.store.read() as conn:
            row = conn.execute(select(t).where(t.c.id == testimonial_id)).mappings().first()
        return _row(row) if row else None

    def for_response(self, response_id: int) -> Testimonial | None:
        t = schema.testimonials
        with self.store.read() as conn:
            row = conn.execute(select(t).where(t.c.response_id == response_id)).mappings().first()
        return _row(row) if row else None

    def publishable(self) -> list[Testimonial]:
        return publishable(self.store)

    # --- writing ----------------------------------------------------------------------------------

    def submit(self, response_id: int, form: Mapping[str, str]) -> Testimonial:
        """Store a testimonial from the page's form. Raises TestimonialError (422: no consent or a
        bad field; 409: the consent wording changed since the page was shown; 404: no response).
        Submitting again for the same response returns the stored one unchanged (a double click)."""
        pre = self.prefill(response_id)
        if pre is None:
            raise TestimonialError(f"no survey answer with id {response_id}", status=404)
        existing = self.for_response(response_id)
        if existing is not None:
            return existing
        consent = self.consent_text(pre.language)
        if form.get("consent") != "yes":
            raise TestimonialError("Please tick the box to agree to publication, or close this page.")
        if form.get("consent_digest") != self.consent_digest(consent):
            raise TestimonialError("The consent wording has changed; please read it again.", status=409)
        values = {k: " ".join(str(form.get(k, "")).split()) for k in ("display_name", "title", "company")}
        quote = str(form.get("quote", "")).strip().replace("\r\n", "\n")
        if not quote:
            raise TestimonialError("Please write a few words to quote.")
        if len(quote) > MAX_QUOTE:
            raise TestimonialError(f"The quote is {len(quote)} characters; at most {MAX_QUOTE} fit.")
        if not values["display_name"]:
            raise TestimonialError("Please give the name to show with the quote.")
        too_long = [k for k, v in values.items() if len(v) > MAX_FIELD]
        if too_long:
            raise TestimonialError(f"At most {MAX_FIELD} characters for: {', '.join(too_long)}.")
        now = utcnow()
        with self.store.begin() as conn:
            added = self.store.insert_ignore(
                conn,
                schema.testimonials,
                {
                    "response_id": response_id,
                    "program": pre.program,
                    "contact_id": pre.contact_id,
                    "account_id": pre.account_id,
                    "quote": quote,
                    **values,
                    "language": pre.language,
                    "consent_text": consent,
                    "consented_at": now,
                    "withdrawn_at": None,
                    "created_at": now,
                    "updated_at": now,
                },
                "response_id",
            )
            row = (
                conn.execute(
                    select(schema.testimonials).where(schema.testimonials.c.response_id == response_id)
                )
                .mappings()
                .one()
            )
            stored = _row(row)
            if added:
                self._queue_note(conn, stored, "consent")
                self._queue_thanks(conn, stored, pre)
        if added:
            log.info("testimonial.recorded", testimonial_id=stored.id, response_id=response_id)
        return stored

    def withdraw(self, testimonial_id: int) -> Testimonial:
        """Mark withdrawn now (idempotent: a second call keeps the first time) and queue the CRM note."""
        t = schema.testimonials
        now = utcnow()
        with self.store.begin() as conn:
            changed = conn.execute(
                update(t)
                .where(t.c.id == testimonial_id, t.c.withdrawn_at.is_(None))
                .values(withdrawn_at=now, updated_at=now)
            ).rowcount
            row = conn.execute(select(t).where(t.c.id == testimonial_id)).mappings().first()
            if row is None:
                raise TestimonialError(f"no testimonial with id {testimonial_id}", status=404)
            stored = _row(row)
            if changed:
                self._queue_note(conn, stored, "withdrawn")
        if changed:
            log.info("testimonial.withdrawn", testimonial_id=testimonial_id)
        return stored

    def _queue_note(self, conn: Connection, t: Testimonial, kind: Literal["consent", "withdrawn"]) -> None:
        if kind == "consent":
            title = "NPS testimonial: consent to publish"
            body = (
                f'Quote: "{t.quote}"\nShown as: {t.signature}\n'
                f"Consent given {t.consented_at:%Y-%m-%d %H:%M} UTC (survey response #{t.response_id}, "
                f"program {t.program}), in these words:\n{t.consent_text}"
            )
        else:
            assert t.withdrawn_at is not None
            title = "NPS testimonial: consent withdrawn"
            body = (
                f"Consent to publish the testimonial of {t.consented_at:%Y-%m-%d} (survey response "
                f"#{t.response_id}) was withdrawn {t.withdrawn_at:%Y-%m-%d %H:%M} UTC. It is no longer "
                f'exported; take it off the website and out of any material that uses it.\nQuote: "{t.quote}"'
            )
        key = f"nps:testimonial:{t.id}:{kind}"
        payload = {"key": key, "contact_id": t.contact_id, "title": title, "body": body}
        enqueue(self.store, conn, NOTE_JOB, payload, dedupe_key=key)

    def _queue_thanks(self, conn: Connection, t: Testimonial, pre: Prefill) -> None:
        survey = (
            conn.execute(
                select(schema.sends)
                .join(schema.responses, schema.responses.c.send_id == schema.sends.c.id)
                .where(schema.responses.c.id == t.response_id)
            )
            .mappings()
            .one()
        )
        address = normalize_email(pre.email)
        if address is None:
            log.warning("testimonial.thanks_skipped", testimonial_id=t.id, reason="no valid email address")
            return
        subject, body = THANKS_MAIL.get(t.language, THANKS_MAIL["en"])
        text = body.format(
            name=pre.first_name or t.display_name,
            quote=t.quote,
            signature=t.signature,
            when=f"{t.consented_at:%Y-%m-%d %H:%M}",
            consent=t.consent_text,
            withdraw_url=self.withdraw_url(t.id),
        )
        now = utcnow()
        self.store.insert_ignore(
            conn,
            schema.sends,
            {
                "send_key": f"testimonial:{t.id}:thanks",
                "program": t.program,
                "wave_id": None,
                "contact_id": t.contact_id,
                "account_id": survey["account_id"],
                "kind": "confirmation",
                "channel": "email",
                "address": address,
                "language": t.language,
                "time_zone": survey["time_zone"],
                "state": "queued",
                "not_before": now,
                "survey_send_id": survey["id"],
                "template": "testimonial-thanks",
                "content": {"subject": subject, "text": text},
                "snapshot": survey["snapshot"],
                "created_at": now,
                "updated_at": now,
            },
            "send_key",
        )

    # --- the crm_note job -------------------------------------------------------------------------

    def handle_notes(self, payloads: Sequence[Mapping[str, Any]]) -> None:
        """``crm_note`` handler. Transient CRM trouble propagates (the queue retries the batch; notes
        already written are found by key); a note the CRM refuses for good is logged and dropped."""
        if self.crm is None:
            raise LookupError("no CRM configured for crm_note jobs")
        for p in payloads:
            try:
                note_id = self.crm.add_note(p["key"], p["contact_id"], p["title"], p["body"])
            except PermanentError as exc:
                log.error(
                    "testimonial.note_refused", key=p["key"], contact_id=p["contact_id"], error=str(exc)
                )
                continue
            log.info("testimonial.note_written", key=p["key"], note_id=note_id)


def all_testimonials(store: Store) -> list[Testimonial]:
    """Every testimonial, withdrawn ones included, oldest first (``nps-sync testimonials list``)."""
    t = schema.testimonials
    with store.read() as conn:
        rows = conn.execute(select(t).order_by(t.c.consented_at, t.c.id)).mappings()
        return [_row(r) for r in rows]


def publishable(store: Store) -> list[Testimonial]:
    """Consented and not withdrawn, oldest first: the only ones any export contains."""
    return [t for t in all_testimonials(store) if t.withdrawn_at is None]


def export(store: Store, fmt: ExportFormat) -> str:
    """Publishable testimonials for the website, as JSON, CSV or an HTML fragment (escaped)."""
    rows = [
        {
            "quote": t.quote,
            "display_name": t.display_name,
            "title": t.title,
            "company": t.company,
            "date": t.consented_at.date().isoformat(),
        }
        for t in publishable(store)
    ]
    if fmt == "json":
        return json.dumps(rows, ensure_ascii=False, indent=2) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: _csv_cell(v) for k, v in r.items()} for r in rows)
        return out.getvalue()
    items = []
    for r in rows:
        who = ", ".join(html.escape(r[k]) for k in ("display_name", "title", "company") if r[k])
        quote = html.escape(r["quote"]).replace("\n", "<br>")
        items.append(
            f'  <figure class="testimonial">\n    <blockquote>{quote}</blockquote>\n'
            f'    <figcaption>{who} <time datetime="{r["date"]}">{r["date"]}</time></figcaption>\n'
            "  </figure>"
        )
    return '<section class="testimonials">\n' + "\n".join(items) + ("\n" if items else "") + "</section>\n"


def _csv_cell(value: str) -> str:
    # A quote starting with = + - @ would run as a formula when the file is opened in a spreadsheet.
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
