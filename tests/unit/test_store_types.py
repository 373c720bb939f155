"""The store's datetime type binds on SQLite exactly the text SQLAlchemy's DATETIME would
(the store's own formatter is a faster path, not a new format): rows written before and
after compare and sort alike."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.types import TypeDecorator

from flowdeck.store.schema import UTCDateTime

SQLITE = sqlite.dialect()
ZONES = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))


def _processors() -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    impl = UTCDateTime().dialect_impl(SQLITE)
    # SQLAlchemy's own: the decorator's process_bind_param, then DATETIME's format string
    fast, core = impl.bind_processor(SQLITE), TypeDecorator.bind_processor(impl, SQLITE)
    assert fast is not None and core is not None
    return fast, core


@given(
    st.datetimes(min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30), timezones=ZONES)
)
def test_sqlite_text_is_sqlalchemys(value: datetime) -> None:
    fast, core = _processors()
    assert fast(value) == core(value)


def test_sqlite_text_keeps_microseconds_and_order() -> None:
    fast, _ = _processors()
    whole = datetime(2026, 12, 4, 21, 0, 0, tzinfo=UTC)
    texts = [fast(whole), fast(whole + timedelta(microseconds=1)), fast(whole + timedelta(hours=1))]
    assert texts[0] == "2026-12-04 21:00:00.000000"
    assert texts == sorted(texts)
    assert fast(datetime(2026, 12, 4, 22, 0, tzinfo=timezone(timedelta(hours=1)))) == texts[0]
    assert fast(None) is None


def test_naive_datetimes_are_refused_on_every_backend() -> None:
    naive = datetime(2026, 12, 4, 21, 0, 0)
    for dialect in (SQLITE, postgresql.dialect()):
        process = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
        assert process is not None
        with pytest.raises(ValueError, match="naive datetime"):
            process(naive)
