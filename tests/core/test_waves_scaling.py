"""A wave's per-page lookups stay per page: each looks up the page's own contacts, addresses and
accounts through their indexes, never an index that walks every decision of the wave or every sent
survey (SQLite keeps no statistics and would pick those; the wave would then cost the square of its
size). Checked with SQLite's own query plans for the statements a real wave runs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy import event

from nps_sync.store.db import Store
from nps_sync.waves import run_wave
from tests.core import config_data, make_runtime, program


def test_per_page_lookups_use_the_pages_own_keys(tmp_path: Path, sqlite_store: Store) -> None:
    data = config_data(program("p", account_max=3, account_interval="30d", audience={"page_size": 20}))
    rt = make_runtime(tmp_path, sqlite_store, data)
    statements: list[tuple[str, Any]] = []

    def seen(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and " IN (" in statement:
            statements.append((statement, parameters))

    event.listen(sqlite_store.engine, "before_cursor_execute", seen)
    try:
        for wave in ("p@1", "p@2"):  # the second wave meets the first one's sends and decisions
            run_wave(rt.store, rt.config, rt.crm, rt.config.program_named("p"), wave)
    finally:
        event.remove(sqlite_store.engine, "before_cursor_execute", seen)
        rt.close()

    plans: dict[str, set[str]] = {}
    with sqlite_store.engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        for statement, parameters in statements:
            table = re.search(r"\bFROM\s+(\w+)", statement).group(1)  # type: ignore[union-attr]
            detail = {row[3] for row in raw.execute("EXPLAIN QUERY PLAN " + statement, parameters)}
            plans.setdefault(table, set()).update(detail)

    assert {"SEARCH wave_decisions USING INDEX ix_wave_decisions_contact_id (contact_id=?)"} == plans[
        "wave_decisions"
    ]
    assert (
        "SEARCH suppressions USING INDEX sqlite_autoindex_suppressions_1 (channel=? AND address=?)"
        in (plans["suppressions"])
    )
    sends_plans = plans["sends"]
    assert "SEARCH sends USING INDEX ix_sends_contact_program (contact_id=?)" in sends_plans
    assert "SEARCH sends USING INDEX ix_sends_account_id (account_id=?)" in sends_plans
    assert not any("ix_sends_state_not_before" in p or p.startswith("SCAN") for p in sends_plans)
