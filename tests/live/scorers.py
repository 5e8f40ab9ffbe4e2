"""Scorers for the live-path tests, importable by the worker processes the tests start (artifacts are pickled)."""

from datetime import datetime

import numpy as np
import pandas as pd


class WatchPropensity:
    """A propensity that is the films watched over ten, capped at 1: a rule on it is a rule on watching."""

    fields = ("watching_count",)

    def score(self, frame: pd.DataFrame, *, as_of: datetime) -> pd.DataFrame:
        watched = frame["watching_count"].fillna(0).to_numpy(dtype=float)
        return pd.DataFrame({"score": np.minimum(watched / 10.0, 1.0)}, index=frame.index)


class BrokenScorer:
    """A model whose scoring fails, as a corrupt artifact or a bug would."""

    fields = ("watching_count",)

    def score(self, frame: pd.DataFrame, *, as_of: datetime) -> pd.DataFrame:
        raise RuntimeError("this model cannot score")
