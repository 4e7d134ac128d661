"""The testimonial pages: write a quote and consent to publish it (``/t/{token}``), withdraw that
consent (``/t/w/{token}``).

A GET never writes (mail scanners open every link): the form page only shows, and the withdrawal
link shows a confirmation button; the POSTs do the work.
"""

from __future__ import annotations

from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from nps_sync.errors import TokenError
from nps_sync.runtime import Runtime
from nps_sync.testimonials import MAX_FIELD, MAX_QUOTE, Prefill, TestimonialError
from nps_sync.web.render import page

log = structlog.get_logger("nps_sync.web.testimonials")

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "heading": "Would you share a few words?",
        "intro": "Your quote may appear on our website with the name, title and company you give here. "
        "Nothing is published without your consent below.",
        "quote": "Your words",
        "display_name": "Name to show",
        "title": "Title (optional)",
        "company": "Company (optional)",
        "submit": "Send",
        "thanks": "Thank you! We received your testimonial.",
        "withdraw_text": "Changed your mind? This link withdraws your consent at any time "
        "(we also emailed it):",
        "withdraw_heading": "Withdraw your consent to publish this testimonial?",
        "withdraw_button": "Withdraw my consent",
        "withdrawn": "Your consent is withdrawn. We no longer publish this testimonial.",
        "invalid": "This link is not valid",
        "invalid_text": "It may have been changed or it has expired.",
    },
    "de": {
        "heading": "Möchten Sie ein paar Worte teilen?",
        "intro": "Ihr Zitat kann mit dem hier angegebenen Namen, der Position und dem Unternehmen auf "
        "unserer Website erscheinen. Ohne Ihre Einwilligung unten wird nichts veröffentlicht.",
        "quote": "Ihre Worte",
        "display_name": "Angezeigter Name",
        "title": "Position (optional)",
        "company": "Unternehmen (optional)",
        "submit": "Senden",
        "thanks": "Vielen Dank! Wir haben Ihr Zitat erhalten.",
        "withdraw_text": "Anders entschieden? Mit diesem Link widerrufen Sie jederzeit (auch per E-Mail):",
        "withdraw_heading": "Einwilligung zur Veröffentlichung dieses Zitats widerrufen?",
        "withdraw_button": "Einwilligung widerrufen",
        "withdrawn": "Ihre Einwilligung ist widerrufen. Wir veröffentlichen dieses Zitat nicht mehr.",
        "invalid": "Dieser Link ist ungültig",
        "invalid_text": "Er wurde verändert oder ist abgelaufen.",
    },
}


def _t(language: str) -> dict[str, str]:
    return TEXTS.get(language, TEXTS["en"])


def _message(request: Request, status: int, heading: str, text: str) -> HTMLResponse:
    return page(request, "message.html", {"heading": heading, "text": text}, status_code=status)


def routes(rt: Runtime) -> list[Route]:
    service = rt.testimonials

    def invalid(request: Request, exc: Exception) -> HTMLResponse:
        log.info("testimonial.bad_token", reason=str(exc))
        t = _t("en")
        return _message(request, 400, t["invalid"], t["invalid_text"])

    def prefill_for(request: Request) -> Prefill | HTMLResponse:
        try:
            response_id = service.response_for(request.path_params["token"])
        except TokenError as exc:
            return invalid(request, exc)
        pre = service.prefill(response_id)
        if pre is None:
            return _message(request, 404, "Not found", "This survey answer does not exist any more.")
        return pre

    def form_page(
        request: Request, pre: Prefill, form: dict[str, str], error: str = "", status: int = 200
    ) -> HTMLResponse:
        consent = service.consent_text(pre.language)
        return page(
            request,
            "testimonial.html",
            {
                "t": _t(pre.language),
                "lang": pre.language,
                "form": form,
                "error": error,
                "action": request.url.path,
                "consent_text": consent,
                "consent_digest": service.consent_digest(consent),
                "max_quote": MAX_QUOTE,
                "max_field": MAX_FIELD,
            },
            status_code=status,
        )

    def done_page(request: Request, testimonial: Any, language: str) -> HTMLResponse:
        t = _t(language)
        withdrawn = testimonial.withdrawn_at is not None
        return page(
            request,
            "testimonial_done.html",
            {
                "heading": t["withdrawn"] if withdrawn else t["thanks"],
                "testimonial": testimonial,
                "withdraw_text": t["withdraw_text"],
                "withdraw_url": None if withdrawn else service.withdraw_url(testimonial.id),
                "lang": language,
            },
        )

    async def show(request: Request) -> Response:
        pre = prefill_for(request)
        if isinstance(pre, HTMLResponse):
            return pre
        existing = service.for_response(pre.response_id)
        if existing is not None:
            return done_page(request, existing, pre.language)
        form = {"quote": "", "display_name": pre.display_name, "title": pre.title, "company": pre.company}
        return form_page(request, pre, form)

    async def submit(request: Request) -> Response:
        pre = prefill_for(request)
        if isinstance(pre, HTMLResponse):
            return pre
        raw = await request.form()
        form = {k: str(v) for k, v in raw.items() if isinstance(v, str)}
        try:
            stored = service.submit(pre.response_id, form)
        except TestimonialError as exc:
            shown = {k: form.get(k, "") for k in ("quote", "display_name", "title", "company")}
            return form_page(request, pre, shown, str(exc), exc.status)
        rt.responses.work_queued.set()  # the note job and the thank-you email start at once
        return done_page(request, stored, pre.language)

    def withdrawal_target(request: Request) -> Any:
        try:
            testimonial_id = service.testimonial_for(request.path_params["token"])
        except TokenError as exc:
            return invalid(request, exc)
        found = service.get(testimonial_id)
        if found is None:
            return _message(request, 404, "Not found", "This testimonial does not exist any more.")
        return found

    async def withdraw_page(request: Request) -> Response:
        found = withdrawal_target(request)
        if isinstance(found, HTMLResponse):
            return found
        t = _t(found.language)
        if found.withdrawn_at is not None:
            return done_page(request, found, found.language)
        return page(
            request,
            "testimonial_done.html",
            {
                "heading": t["withdraw_heading"],
                "testimonial": found,
                "form_action": request.url.path,
                "button": t["withdraw_button"],
                "lang": found.language,
            },
        )

    async def withdraw(request: Request) -> Response:
        found = withdrawal_target(request)
        if isinstance(found, HTMLResponse):
            return found
        stored = service.withdraw(found.id)
        rt.responses.work_queued.set()
        return done_page(request, stored, stored.language)

    return [
        Route("/t/w/{token}", withdraw_page, methods=["GET"]),
        Route("/t/w/{token}", withdraw, methods=["POST"]),
        Route("/t/{token}", show, methods=["GET"]),
        Route("/t/{token}", submit, methods=["POST"]),
    ]
