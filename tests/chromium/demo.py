"""A year of plausible survey history for the browser test and the screenshot: 12 accounts, three
plans, three regions, comments drawn from themed pools, callbacks done on time, late or not at all.
Deterministic (a seeded ``random.Random``), written straight into the real store."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

from nps_sync.models import Category
from nps_sync.store import schema
from nps_sync.store.db import Store

PROGRAM = "relationship"
START = datetime(2025, 12, 1, 9, tzinfo=timezone.utc)
ACCOUNTS = [
    ("Northwind", "enterprise", "EU"), ("Contoso", "pro", "US"), ("Fabrikam", "enterprise", "EU"),
    ("Globex", "starter", "US"), ("Initech", "pro", "US"), ("Umbrella", "pro", "APAC"),
    ("Hooli", "enterprise", "US"), ("Vandelay", "starter", "EU"), ("Stark", "pro", "APAC"),
    ("Wayne", "enterprise", "US"), ("Tyrell", "starter", "APAC"), ("Soylent", "pro", "EU"),
]  # fmt: skip
COMMENTS = {
    "detractor": [
        "The invoice portal keeps timing out",
        "Invoice portal lost my changes again",
        "Support response was far too slow",
        "Waited a week for a support response",
        "Onboarding was confusing and rushed",
        None,
    ],
    "passive": [
        "Pricing is a bit high for a small team",
        "Good overall, pricing could be clearer",
        "Missing a mobile app",
        "Fine, but the mobile app is basic",
        None,
    ],
    "promoter": [
        "Great support team, always helpful",
        "Love the weekly reports",
        "The reports save us hours every week",
        "Great support and a solid product",
        "Onboarding was quick and painless",
        None,
    ],
}


def seed_demo(store: Store) -> int:
    """Write the history; returns the number of answers."""
    rng = random.Random(7)
    contacts = [(f"D{i:03d}", ACCOUNTS[i % len(ACCOUNTS)]) for i in range(180)]
    answers = 0
    with store.begin() as conn:
        for month in range(12):
            # The share of promoters rises over the year: the playbooks are working.
            lift = month * 0.025
            for cid, (account, plan, region) in rng.sample(contacts, 34):
                sent = START + timedelta(days=30.4 * month + rng.uniform(0, 26), hours=rng.uniform(0, 8))
                snapshot = {
                    "id": cid,
                    "first_name": rng.choice(["Ana", "Ben", "Chloé", "Dev", "Emma", "Jonas", "Mia", "Noah"]),
                    "last_name": cid,
                    "account_id": account[:3].upper(),
                    "account_name": account,
                    "owner_id": f"U0{1 + ACCOUNTS.index((account, plan, region)) % 4}",
                    "fields": {"plan": plan, "region": region},
                }
                key = f"{cid}|{month}"
                send_id = conn.execute(
                    schema.sends.insert().values(
                        send_key=key,
                        program=PROGRAM,
                        contact_id=cid,
                        account_id=account[:3].upper(),
                        kind="survey",
                        channel="email",
                        address=f"{cid.lower()}@example.com",
                        language="de" if region == "EU" and rng.random() < 0.5 else "en",
                        time_zone="UTC",
                        state="sent",
                        not_before=sent,
                        sent_at=sent,
                        snapshot=snapshot,
                        created_at=sent,
                        updated_at=sent,
                    )
                ).inserted_primary_key[0]  # type: ignore[index]
                if rng.random() > 0.72:
                    continue
                base = {"enterprise": 0.05, "pro": 0.0, "starter": -0.08}[plan]
                roll = rng.random()
                promoter, detractor = 0.42 + lift + base, 0.30 - lift - base / 2
                score = (
                    rng.choice([9, 10])
                    if roll < promoter
                    else rng.choice(range(0, 7))
                    if roll > 1 - detractor
                    else rng.choice([7, 8])
                )
                category = Category.of(score).value
                answered = sent + timedelta(hours=rng.uniform(1, 40))
                response_id = conn.execute(
                    schema.responses.insert().values(
                        send_id=send_id,
                        program=PROGRAM,
                        contact_id=cid,
                        account_id=account[:3].upper(),
                        score=score,
                        category=category,
                        comment=rng.choice(COMMENTS[category]),
                        channel="email",
                        responded_at=answered,
                        updated_at=answered,
                    )
                ).inserted_primary_key[0]  # type: ignore[index]
                answers += 1
                if category == "detractor":
                    run_id = conn.execute(
                        schema.playbook_runs.insert().values(
                            playbook="detractor-callback",
                            dedupe_key=f"cb|{response_id}",
                            trigger="response",
                            contact_id=cid,
                            response_id=response_id,
                            state="done",
                            step=1,
                            context={},
                            created_at=answered,
                            updated_at=answered,
                        )
                    ).inserted_primary_key[0]  # type: ignore[index]
                    due = (answered + timedelta(days=1)).date()
                    fate = rng.random()
                    conn.execute(
                        schema.crm_tasks.insert().values(
                            key=f"cb|{response_id}",
                            task_id=f"T{response_id}",
                            run_id=run_id,
                            contact_id=cid,
                            account_id=account[:3].upper(),
                            owner_id=snapshot["owner_id"],
                            playbook="detractor-callback",
                            subject=f"Call {snapshot['first_name']} {cid} ({account}): NPS {score}",
                            due=due,
                            completed=fate < 0.85,
                            overdue_fired=fate >= 0.6,
                            created_at=answered,
                            checked_at=answered + timedelta(days=2 if fate < 0.6 else 4),
                        )
                    )
    return answers
