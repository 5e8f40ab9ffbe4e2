"""Bulk writes on SQLite: a time column adapted in one pass is written exactly as value by value."""

import numpy as np
import pandas as pd
import pytest
from django.db import connection

from crossmkt_site.bulk import _adapt, _sqlite_column, _sqlite_value


@pytest.mark.parametrize("zone", ["Asia/Shanghai", "UTC", None])
def test_a_time_column_is_written_as_each_of_its_values_would_be(zone):
    if connection.vendor != "sqlite":
        pytest.skip("the column pass is SQLite's; PostgreSQL writes COPY text")
    rng = np.random.default_rng(7)
    times = pd.Series(pd.Timestamp("2026-01-01") + pd.to_timedelta(rng.integers(0, 10**17, 2_000), unit="ns"))
    times.iloc[::5] = times.iloc[::5].dt.floor("s")  # whole seconds are written without a fraction
    times.iloc[3] = pd.NaT
    if zone is not None:
        times = times.dt.tz_localize(zone)

    written = _sqlite_column(times)

    assert written == [_adapt(_sqlite_value(value)) for value in times.tolist()]
    assert written[3] is None and "." not in written[5]
