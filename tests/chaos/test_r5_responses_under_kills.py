"""R5: survey answers keep coming while the replica receiving them is SIGKILLed again and again.

Clients post to replica A and, on a connection error or a 5xx, retry (first on the other replica, as
a load balancer would). Pass: 0 answers lost, 0 duplicated, and a 2xx only for an answer that was
committed (each 2xx answer is in the database with its score once the replicas have recorded the
accepted answers: a 2xx means the answer job committed, a worker records it).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from nps_sync import config as config_mod
from nps_sync.runtime import Runtime
from nps_sync.store import schema
from nps_sync.store.db import Store
from tests.chaos.cluster import FULL, Cluster, write_seed
from tests.e2e.daemon import wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.postgres]

ANSWERS, KILLS = (1_000, 30) if FULL else (200, 5)
CLIENTS = 4
#: Seconds between a client's answers: the answers must outlast the KILLS restarts (~2.5 s each).
PACE = 0.45 if FULL else 0.3


@pytest.fixture
def two(tmp_path: Path, pg_url: str) -> Iterator[tuple[Cluster, Store, dict[int, str]]]:
    seed = write_seed(tmp_path / "seed", ANSWERS)
    cluster = Cluster(
        tmp_path,
        pg_url,
        sections=[],
        overrides={
            "daemon": {
                "run_on_start": False,
                "limits": {"requests_per_minute": 1_000_000},
            },
            "crm": {"kind": "sandbox", "sandbox": {"seed": str(seed)}},
            "channels": {"email": {"postal_address": "Acme Inc., 1 Main St"}},
            "program": [{"name": "mail", "schedule": "0 3 1 1 *", "reminders": {"count": 0}}],
        },
        env={},
    )
    cluster.add(2)
    rt = Runtime(config_mod.load(cluster.replicas[0].folder / "config.toml"), environ=cluster.replicas[0].env)
    rt.run_wave("mail")
    with rt.store.read() as conn:
        ids = list(conn.execute(select(schema.sends.c.id).order_by(schema.sends.c.id)).scalars())
    links = {i: "/r/" + rt.tokens.sign("survey", {"s": i}) for i in ids}
    rt.close()
    cluster.start_all()
    store = Store(pg_url)
    yield cluster, store, links
    cluster.stop_all()
    store.dispose()


def test_no_answer_is_lost_or_doubled_while_the_receiver_is_killed(
    two: tuple[Cluster, Store, dict[int, str]],
) -> None:
    cluster, store, links = two
    receiver, other = cluster.replicas
    assert ANSWERS == len(links)
    acked: dict[int, int] = {}
    refused: list[tuple[int, int]] = []
    retries = [0]
    lock = threading.Lock()
    todo = list(links.items())

    def answer(send_id: int, link: str) -> None:
        score = send_id % 11
        with httpx.Client(timeout=5) as http:
            for attempt in range(200):
                base = (receiver if attempt % 2 == 0 else other).url
                try:
                    reply = http.post(base + link, data={"score": str(score), "comment": f"c{send_id}"})
                except httpx.HTTPError:
                    reply = None
                if reply is not None and reply.status_code < 500:
                    with lock:
                        if reply.status_code == 200:
                            acked[send_id] = score
                        else:
                            refused.append((send_id, reply.status_code))
                    return
                with lock:
                    retries[0] += 1
                time.sleep(0.05)
        raise AssertionError(f"answer {send_id} never got through")

    def client(n: int) -> None:
        for send_id, link in todo[n::CLIENTS]:
            answer(send_id, link)
            time.sleep(PACE)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    rng = random.Random(5)
    kills = 0
    while kills < KILLS and any(t.is_alive() for t in threads):
        receiver.wait_healthy()
        time.sleep(rng.uniform(0.2, 0.8))
        receiver.kill()
        kills += 1
        receiver.start()
    for t in threads:
        t.join(timeout=300)
    receiver.wait_healthy()
    jobs = schema.jobs
    pending = (jobs.c.kind == "answer") & jobs.c.state.in_(("queued", "running"))

    def answers_pending() -> int:
        with store.read() as conn:
            return int(conn.execute(select(func.count()).select_from(jobs).where(pending)).scalar_one())

    # A killed replica's claimed answers go back to the queue when the survivor sees it dead.
    wait_for(lambda: answers_pending() == 0, timeout=120, what="every accepted answer recorded")

    r = schema.responses
    with store.read() as conn:
        stored = {row.send_id: row.score for row in conn.execute(select(r.c.send_id, r.c.score))}
        total = conn.execute(select(func.count()).select_from(r)).scalar_one()
        writebacks = conn.execute(
            select(func.count()).select_from(schema.jobs).where(schema.jobs.c.kind == "writeback")
        ).scalar_one()
    lost = [i for i in links if i not in stored]
    acked_not_stored = [i for i, score in acked.items() if stored.get(i) != score]
    print(
        f"\nR5: answers={len(links)} kills={kills} client_retries={retries[0]} acked={len(acked)} "
        f"refused={len(refused)} stored={total} lost={len(lost)} acked_not_committed={len(acked_not_stored)} "
        f"writeback_jobs={writebacks} (re-recorded after a lost 2xx: {writebacks - total})"
    )
    assert [] == refused
    assert [] == lost
    assert [] == acked_not_stored
    assert len(links) == total  # one answer per survey: none doubled
    assert KILLS == kills
