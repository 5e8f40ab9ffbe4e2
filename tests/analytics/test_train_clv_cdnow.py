"""CDNOW through the product: import_events, then train --model clv --observation-end 1997-09-30.

Fader, Hardie & Lee calibrate on the 39 weeks through 30 September 1997 and judge on the 39
weeks after (1 October 1997 to 30 June 1998). A manager who imports the transaction log and
names that date must get their published estimates, and a holdout over the data's own span.
"""

import csv
import io
import json
from dataclasses import astuple

import pandas as pd
import pytest
from django.core.management import call_command, load_command_class

from campaigns.models import Partner
from tests.analytics.test_bgnbd import (
    CDNOW_CALIBRATION_END,
    PUBLISHED_BGNBD,
    PUBLISHED_GAMMA_GAMMA,
    cdnow_directory,  # noqa: F401 - a fixture
    cdnow_transactions,  # noqa: F401 - a fixture
)
from tests.factories import PartnerFactory

pytestmark = pytest.mark.django_db


def events_csv(transactions: pd.DataFrame, path) -> None:
    """Write the CDNOW log as import_events rows: one purchase per line, at noon of its day in TIME_ZONE."""
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["event_id", "user_id", "partner", "kind", "item_id", "amount", "occurred_at"])
        for line, row in enumerate(transactions.itertuples(index=False)):
            day = f"{row.date[:4]}-{row.date[4:6]}-{row.date[6:]}"
            writer.writerow(
                [
                    f"t{line}",
                    f"c{row.customer_id}",
                    "cdnow",
                    "course_purchase",
                    "CD",
                    f"{row.amount:.2f}",
                    f"{day}T12:00:00",
                ]
            )


def test_cdnow_imported_and_trained_on_the_published_calibration_end_gives_the_published_estimates(
    cdnow_transactions,  # noqa: F811 - the fixture imported above
    tmp_path,
):
    # given the CDNOW transaction log imported as course purchases at one partner
    PartnerFactory.create(slug="cdnow", kind=Partner.Kind.KNOWLEDGE)
    path = tmp_path / "cdnow_events.csv"
    events_csv(cdnow_transactions, path)
    call_command("import_events", str(path), "--no-progress", stdout=io.StringIO())

    # when the lifetime-value models are trained through 30 September 1997
    out = io.StringIO()
    call_command("train", "--model", "clv", "--observation-end", CDNOW_CALIBRATION_END, "--json", stdout=out)
    run = json.loads(out.getvalue())

    # then BG/NBD and Gamma-Gamma agree with Fader, Hardie & Lee within 1%
    params = run["params"]
    assert run["n_train"] == 2357
    for name, published in zip(("r", "alpha", "a", "b"), astuple(PUBLISHED_BGNBD), strict=True):
        assert params[name] == pytest.approx(published, rel=0.01), name
    for name, published in zip(("p", "q", "v"), astuple(PUBLISHED_GAMMA_GAMMA), strict=True):
        assert params[name] == pytest.approx(published, rel=0.01), name

    # and the holdout covers the data's own 39 weeks after the calibration, not the years up to now
    holdout = run["metrics"]["holdout"]
    assert holdout["compared"]
    assert (holdout["first_day"], holdout["last_day"]) == ("1997-10-01", "1998-06-30")
    assert holdout["weeks"] == pytest.approx(39.0)
    assert holdout["n_customers"] == 2357


def test_train_help_states_the_date_convention():
    command = load_command_class("campaigns", "train")
    text = " ".join(command.create_parser("manage.py", "train").format_help().split())
    assert "means through the end of that day in TIME_ZONE" in text
    assert "--holdout-end" in text
