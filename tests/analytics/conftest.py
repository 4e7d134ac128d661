from __future__ import annotations

from collections.abc import Iterator

import pytest

from nps_sync.store.db import Store
from tests.analytics.seed import seed


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, dict[str, int]]]:
    """A SQLite store holding the hand-checked data set of ``seed.py`` (read-only: shared by a module)."""
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('seeded') / 'state.db'}")
    store.upgrade()
    ids = seed(store)
    yield store, ids
    store.dispose()
