"""Write the demo world as the CSV files the import commands read, streaming chunk by chunk.

- ``events.csv``, the ``import_events`` format:
  ``event_id, user_id, partner, kind, item_id, amount, occurred_at``;
- ``behavior.csv``, the ``import_behavior`` format (the article's per-user table):
  ``user_id, watching_count, purchasing_count, age, education, occupation, purchased_course``
  then the extra columns ``gender, acquisition_channel, home_partner, marketing_consent,
  data_sharing_consent, alliance_id, signup_at``; the counts and the label follow the propensity
  definitions of the planted truth (as of the observation end);
- ``users.csv``: the full users table, planted ``latent_*`` columns included;
- ``truth.json`` and ``catalog.json``.

Timestamps are written as ISO 8601 in UTC (``2026-03-01T08:15:30+00:00``), amounts as
Decimal strings with two places. Run ``python -m demo.world.export --users N --seed S
--out DIR``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from demo.world.catalog import demo_catalog
from demo.world.generator import DEFAULT_CHUNK_SIZE, EVENT_COLUMNS, iter_world
from demo.world.parameters import LABEL_WINDOW_END, OBSERVATION_END, PROPENSITY_TARGET_COURSE
from demo.world.truth import planted_truth

BEHAVIOR_EXTRA_COLUMNS = (
    "gender",
    "acquisition_channel",
    "home_partner",
    "marketing_consent",
    "data_sharing_consent",
    "alliance_id",
    "signup_at",
)
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S+00:00"


def behavior_table(users: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """Return the article's per-user table for these users, computed from their events.

    Counts cover events before the observation end; ``purchased_course`` is 1 when the user
    bought the target course in the label window (see ``planted_truth()["propensity"]``).
    Users without events get zero counts.
    """
    before = events[events["occurred_at"] < OBSERVATION_END]
    in_label_window = events[
        (events["kind"] == "course_purchase")
        & (events["item_id"] == PROPENSITY_TARGET_COURSE)
        & (events["occurred_at"] >= OBSERVATION_END)
        & (events["occurred_at"] < LABEL_WINDOW_END)
    ]

    def count(kind: str) -> pd.Series:
        per_user = before.loc[before["kind"] == kind, "user_id"].value_counts()
        return users["user_id"].map(per_user).fillna(0).astype("int64")

    table = pd.DataFrame(
        {
            "user_id": users["user_id"],
            "watching_count": count("film_watch"),
            "purchasing_count": count("course_purchase"),
            "age": users["age"],
            "education": users["education"],
            "occupation": users["occupation"],
            "purchased_course": users["user_id"].isin(in_label_window["user_id"]).astype("int64"),
        }
    )
    for column in BEHAVIOR_EXTRA_COLUMNS:
        table[column] = users[column]
    return table.reset_index(drop=True)


@dataclass(frozen=True)
class ExportSummary:
    """What ``export_demo_csvs`` wrote."""

    directory: Path
    users: int
    events: int


def export_demo_csvs(
    directory: Path, *, n_users: int, seed: int, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> ExportSummary:
    """Write the demo world of ``n_users`` users for ``seed`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    n_events = 0
    with (
        open(directory / "events.csv", "w", encoding="utf-8", newline="") as events_file,
        open(directory / "behavior.csv", "w", encoding="utf-8", newline="") as behavior_file,
        open(directory / "users.csv", "w", encoding="utf-8", newline="") as users_file,
    ):
        for index, chunk in enumerate(iter_world(n_users=n_users, seed=seed, chunk_size=chunk_size)):
            first = index == 0
            chunk.events.loc[:, list(EVENT_COLUMNS)].to_csv(
                events_file, header=first, index=False, date_format=TIMESTAMP_FORMAT
            )
            behavior_table(chunk.users, chunk.events).to_csv(
                behavior_file, header=first, index=False, date_format=TIMESTAMP_FORMAT
            )
            chunk.users.to_csv(users_file, header=first, index=False, date_format=TIMESTAMP_FORMAT)
            n_events += len(chunk.events)
    truth = planted_truth(n_users=n_users, seed=seed)
    (directory / "truth.json").write_text(json.dumps(truth, ensure_ascii=False, indent=2), encoding="utf-8")
    (directory / "catalog.json").write_text(
        json.dumps(demo_catalog().to_dict(), ensure_ascii=False, indent=2), encoding="utf-8"
    )
    return ExportSummary(directory, n_users, n_events)


def main(argv: Sequence[str] | None = None) -> None:
    """Export the demo world from the command line."""
    parser = argparse.ArgumentParser(description="Write the crossmkt demo world as import CSVs.")
    parser.add_argument("--users", type=int, required=True, help="number of users")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--out", type=Path, required=True, help="directory to write into")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, help="users per chunk")
    arguments = parser.parse_args(argv)
    if arguments.users < 0 or arguments.chunk_size < 1:
        parser.error("--users must be >= 0 and --chunk-size >= 1")
    summary = export_demo_csvs(
        arguments.out, n_users=arguments.users, seed=arguments.seed, chunk_size=arguments.chunk_size
    )
    print(f"wrote {summary.users} users and {summary.events} events to {summary.directory}")


if __name__ == "__main__":
    main()
