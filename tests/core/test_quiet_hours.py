"""R9: no SMS outside 08:00–21:00 in the recipient's local time — in every zone the recipient may be
in, across DST transitions — for the send times the wave planner and follow-ups compute."""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo, available_timezones

import time_machine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nps_sync import config as config_mod
from nps_sync.durations import TimeWindow
from nps_sync.runtime import Runtime
from nps_sync.survey import next_opening

QUIET = TimeWindow(time(8), time(21))
ZONES = sorted(available_timezones() - {"Factory", "localtime"})
# Instants spread over 2024–2027, which cover every zone's DST changes in those years.
instants = st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(timezone.utc)
)
windows = (
    st.tuples(st.integers(0, 23), st.integers(0, 23))
    .filter(lambda w: w[0] != w[1])
    .map(lambda w: TimeWindow(time(w[0]), time(w[1])))
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    at=instants,
    zones=st.lists(st.sampled_from(ZONES), min_size=1, max_size=3, unique=True),
    send_window=windows,
)
def test_an_sms_send_time_is_inside_quiet_hours_and_the_send_window_in_every_candidate_zone(
    at: datetime, zones: list[str], send_window: TimeWindow
) -> None:
    infos = [ZoneInfo(z) for z in zones]
    start = next_opening(at, infos, [send_window, QUIET])
    if start is None:
        return  # no common opening within the horizon: the planner skips with reason no_window
    assert start >= at
    for zone in infos:
        local = start.astimezone(zone).time()
        assert QUIET.contains(local), (zone.key, start, local)
        assert send_window.contains(local), (zone.key, start, local)


def sms_config(tmp_path: Path) -> config_mod.Config:
    path = tmp_path / "config.toml"
    path.write_text(
        "[daemon]\n"
        'state_dir = "state"\n'
        f'playbooks = ["{tmp_path}/none/*.toml"]\n'
        "[[program]]\n"
        'name = "sms"\n'
        'channel = "sms"\n'
        'send_window = "07:00-22:00"\n'  # wider than quiet hours: quiet hours must still win
        'default_time_zone = "America/New_York"\n'
        "[program.audience]\nwhere = {}\n"
    )
    return config_mod.load(path)


def test_every_sms_of_a_wave_is_planned_inside_quiet_hours_around_a_dst_change(tmp_path: Path) -> None:
    """The sandbox's contacts span nine zones; run a wave at every hour across the US and EU spring
    DST changes of 2027 and check each planned SMS against the recipient's zones."""
    rt = Runtime(sms_config(tmp_path))
    checked = 0
    for hour in range(0, 24 * 4, 5):
        now = datetime(2027, 3, 13, tzinfo=timezone.utc) + timedelta(hours=hour)
        with time_machine.travel(now, tick=False):
            summary = rt.run_wave("sms", dry_run=True, now=now)
        for d in summary.decisions:
            if d.decision in ("send", "defer"):
                assert d.not_before is not None
                local = d.not_before.astimezone(ZoneInfo(d.time_zone)).time()
                assert QUIET.contains(local), (d.contact.id, d.time_zone, d.not_before)
                checked += 1
    rt.close()
    assert checked > 500
