"""Reading pages ahead of the code that uses them, in a thread.

A CRM's pages come one after another (each needs the previous one's cursor), so every moment the
reader waits for the work on a page is a moment the wave never gets back. ``prefetched`` keeps the
round trips going while that work runs: the wave reads contacts ahead of its decisions
(``nps_sync.survey``), and a connector can read raw pages ahead of turning them into contacts.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator, Sized
from dataclasses import dataclass
from typing import Any, TypeVar

P = TypeVar("P", bound=Sized)

_DONE = object()


def prefetched(pages: Iterator[P], *, ahead: int) -> Iterator[P]:
    """``pages`` read ahead in a thread, up to ``ahead`` items (and always one page): the CRM's
    round trips for the next pages overlap the work on this one, so a wave takes about the longer
    of the two instead of their sum. Errors come out in order, after the pages read before them;
    stopping early stops the reader."""
    buffer: deque[tuple[Any, int]] = deque()
    held = 0  # items in ``buffer``
    stopped = False
    changed = threading.Condition()

    def hand_over(item: Any, size: int) -> bool:
        nonlocal held
        with changed:
            while buffer and held + size > ahead and not stopped:
                changed.wait()
            if stopped:
                return False
            buffer.append((item, size))
            held += size
            changed.notify_all()
            return True

    def read() -> None:
        try:
            for page in pages:
                if not hand_over(page, len(page)):
                    break
        except BaseException as exc:  # handed to the consumer, raised there
            hand_over(_Failed(exc), 0)
            return
        finally:
            if stopped:
                close = getattr(pages, "close", None)
                if close is not None:
                    close()
        hand_over(_DONE, 0)

    reader = threading.Thread(target=read, name="wave-pages", daemon=True)
    reader.start()
    try:
        while True:
            with changed:
                while not buffer:
                    changed.wait()
                item, size = buffer.popleft()
                held -= size
                changed.notify_all()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        with changed:
            stopped = True
            changed.notify_all()
        reader.join()


@dataclass(frozen=True)
class _Failed:
    error: BaseException
