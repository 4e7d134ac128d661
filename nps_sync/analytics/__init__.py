"""NPS analytics over the state database: scores with confidence intervals per period, segment and
account, movement between categories, playbook outcomes and comment themes.

Everything here reads the store and computes in memory; nothing writes. ``report.build_report`` is
what the ``nps-sync report`` command and the ``/dashboard`` page show.
"""

from __future__ import annotations

from nps_sync.analytics.data import Answer, load_answers, response_rates
from nps_sync.analytics.nps import NpsStat, by_account, by_period, by_segment, latest_per_person, nps_of
from nps_sync.analytics.report import Report, build_report, parse_since

__all__ = [
    "Answer",
    "NpsStat",
    "Report",
    "build_report",
    "by_account",
    "by_period",
    "by_segment",
    "latest_per_person",
    "load_answers",
    "nps_of",
    "parse_since",
    "response_rates",
]
