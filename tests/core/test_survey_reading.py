"""Reading a wave's audience: pages are read ahead in a thread, up to a bound in contacts (the CRM's
next round trips overlap the work on this page), yet come out in order, errors after the pages read
before them, and a consumer that stops early stops the reader. Email addresses take a shorter path
through email-validator's checks with exactly its verdicts."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import email_validator
import pytest

from nps_sync.models import Contact
from nps_sync.readahead import prefetched
from nps_sync.survey import PREFETCH_CONTACTS
from nps_sync.timezones import normalize_email
from tests.e2e.daemon import wait_for


def pages(
    n: int, *, fail_after: int | None = None, log: list[str] | None = None
) -> Iterator[Sequence[Contact]]:
    log = log if log is not None else []
    try:
        for i in range(n):
            if fail_after is not None and i == fail_after:
                raise RuntimeError(f"page {i} could not be read")
            log.append(f"read {i} in {threading.current_thread().name}")
            yield [Contact(id=f"C{i}")]
    finally:
        log.append("closed")


def test_pages_come_out_in_order_and_are_read_in_another_thread() -> None:
    log: list[str] = []

    got = [page[0].id for page in prefetched(pages(5, log=log), ahead=PREFETCH_CONTACTS)]

    assert ["C0", "C1", "C2", "C3", "C4"] == got
    assert [f"read {i} in wave-pages" for i in range(5)] + ["closed"] == log


def test_an_error_comes_out_after_the_pages_read_before_it() -> None:
    got: list[str] = []

    def consume() -> None:
        for page in prefetched(pages(5, fail_after=2), ahead=PREFETCH_CONTACTS):
            got.append(page[0].id)

    with pytest.raises(RuntimeError, match="page 2 could not be read"):
        consume()

    assert ["C0", "C1"] == got


def test_a_consumer_that_stops_early_closes_the_reader_and_its_source() -> None:
    log: list[str] = []
    before = threading.active_count()

    for page in prefetched(pages(100, log=log), ahead=1):
        if page[0].id == "C1":
            break

    assert "closed" == log[-1]
    # At most the page being handed over and the one after it were read beyond C1.
    assert len([line for line in log if line.startswith("read")]) <= 4
    assert before == threading.active_count()


def test_the_reader_holds_up_to_ahead_contacts_while_the_consumer_waits() -> None:
    log: list[str] = []
    source = prefetched(pages(100, log=log), ahead=3)

    first = next(source)
    # Three pages of one contact wait in the buffer and the reader holds a fourth, waiting to hand it
    # over; it reads no further until the consumer takes one.
    wait_for(lambda: len(log) >= 5, timeout=10, what="the reader to fill its buffer")
    second = next(source)
    wait_for(lambda: len(log) >= 6, timeout=10, what="the reader to read one more page")
    source.close()

    assert ["C0", "C1"] == [first[0].id, second[0].id]
    assert [f"read {i} in wave-pages" for i in range(6)] + ["closed"] == log


def test_a_page_larger_than_ahead_is_still_read_ahead_alone() -> None:
    """A 2,000-row Salesforce page with a smaller ``ahead``: one page waits, as before."""
    log: list[str] = []

    def big_pages() -> Iterator[Sequence[Contact]]:
        for i in range(4):
            log.append(f"read {i}")
            yield [Contact(id=f"C{i}-{j}") for j in range(5)]

    source = prefetched(big_pages(), ahead=3)
    first = next(source)
    wait_for(lambda: len(log) >= 3, timeout=10, what="the reader to read ahead")
    rest = list(source)

    assert ["C0-0", "C1-0", "C2-0", "C3-0"] == [p[0].id for p in [first, *rest]]
    assert ["read 0", "read 1", "read 2", "read 3"] == log


ADDRESSES = [
    "alice@example.com",
    "Alice.Smith@Example.COM",
    "Postmaster@Example.com",
    "abuse@example.org",
    "o'brien+nps@mail.example.co.uk",
    " padded@example.com ",
    ".lead@example.com",
    "trail.@example.com",
    "two..dots@example.com",
    "x@example..com",
    "x@-example.com",
    "x@example-.com",
    "x@localhost",
    "x@intranet",
    "x@printer.local",
    "x@site.test",
    "x@nothing.invalid",
    "x@xn--bcher-kva.example",
    "x@XN--BCHER-KVA.EXAMPLE",
    "x@xn--zz.example",
    "x@[192.0.2.1]",
    '"quoted local"@example.com',
    "Alice <alice@example.com>",
    "x@@example.com",
    "x@y@example.com",
    "@example.com",
    "x@",
    "no-at-sign",
    "müller@example.com",
    "x@bücher.example",
    "x@example.c",
    "x@example.123",
    "x@under_score.com",
    "x@example.com.",
    "x@.example.com",
    "l" * 64 + "@example.com",
    "l" * 65 + "@example.com",
    "x@" + "a" * 63 + ".com",
    "x@" + "a" * 64 + ".com",
    "l" * 30 + "@" + ".".join(["d" * 63] * 3) + ".co",
    "x@" + ".".join(["d" * 63] * 3) + ".co",
]


@pytest.mark.parametrize("raw", ADDRESSES)
def test_normalize_email_gives_email_validators_verdict(raw: str) -> None:
    try:
        expected: str | None = email_validator.validate_email(
            raw.strip(), check_deliverability=False
        ).normalized
    except email_validator.EmailNotValidError:
        expected = None

    assert expected == normalize_email(raw)
