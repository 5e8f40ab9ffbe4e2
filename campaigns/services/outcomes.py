"""Outcomes of experiments run elsewhere: imported per user and arm, then reported like our own campaigns."""

import datetime as dt
import re

import pandas as pd
from django.db import connection, transaction
from django.utils import timezone

from analytics.models import ExperimentOutcome
from analytics.services.csvfiles import CsvStream
from analytics.services.imports import parse_flag
from analytics.services.ingest import IngestResult, Rejection, RowChecker, check_ids, parse_money
from analytics.services.progress import progress_bar
from analytics.services.suppression import ERASED_REASON, erased_mask_any_partner
from crossmkt_site.bulk import bulk_insert
from crossmkt_site.errors import ApplicationError

from ..models import Campaign

OUTCOME_COLUMNS = ("user_id", "arm", "converted", "revenue")
# Pre-period covariates for CUPED (README, "Experiment statistics"); a blank cell is a user without history.
COVARIATE_COLUMNS = ("pre_revenue", "pre_converted")


def campaign_for_outcomes(*, slug: str, now: dt.datetime) -> Campaign:
    """Return the campaign outcomes are imported into; a new slug becomes an external campaign."""
    campaign = Campaign.objects.filter(slug=slug).first()
    if campaign is None:
        if len(slug) > 64 or not re.fullmatch(r"[-a-zA-Z0-9_]+", slug):
            raise ApplicationError(
                f"campaign slug {slug!r} must be letters, digits, '-' or '_', at most 64 characters",
                field="campaign",
            )
        return Campaign.objects.create(
            slug=slug,
            name=slug,
            kind=Campaign.Kind.EXTERNAL,
            status=Campaign.Status.ENDED,
            starts_at=now,
            ends_at=now + dt.timedelta(seconds=1),
            holdout_share=0,
        )
    if campaign.kind != Campaign.Kind.EXTERNAL:
        raise ApplicationError(
            f"campaign {slug!r} is one of ours; its outcomes come from its own records. "
            "Use a new slug for an outside experiment.",
            field="campaign",
        )
    return campaign


def outcomes_import_file(
    path, *, campaign_slug: str, encoding: str | None = None, progress: bool = False
) -> IngestResult:
    """Import per-user experiment outcomes; bad rows are named by line and write nothing.

    The file can be re-imported.
    """
    now = timezone.now()
    result = IngestResult()
    with CsvStream(path, required=OUTCOME_COLUMNS, optional=COVARIATE_COLUMNS, encoding=encoding) as stream:
        campaign = campaign_for_outcomes(slug=campaign_slug, now=now)
        with progress_bar(f"importing {stream.path.name}", stream.size, unit="bytes", enabled=progress) as advance:
            for batch in stream.batches(on_progress=advance):
                frame = pd.DataFrame(batch.columns)
                checker = RowChecker(batch.lines)
                check_ids(frame["user_id"], "user_id", checker)
                # Outcome rows name no partner: an id erased at any partner is refused.
                checker.flag(erased_mask_any_partner(frame["user_id"].tolist()), "user_id", ERASED_REASON)
                check_ids(frame["arm"], "arm", checker)
                converted = parse_flag(frame["converted"], "converted", checker)
                checker.flag((frame["converted"] == "").to_numpy(), "converted", "missing")
                revenue = parse_money(frame["revenue"], "revenue", checker)
                pre_revenue, pre_converted = _covariates(frame, checker)
                good = checker.good
                rows = pd.DataFrame(
                    {
                        "user_ref": frame["user_id"][good],
                        "arm": frame["arm"][good],
                        "converted": converted[good].astype(bool),
                        "revenue": revenue[good],
                        "pre_revenue": pre_revenue[good],
                        "pre_converted": pre_converted[good],
                    }
                )
                rows = rows.drop_duplicates("user_ref", keep="last")
                result.add(_outcomes_upsert(campaign, rows, now))
                result.rejected.extend(checker.rejections)
        result.rejected.extend(Rejection(row.line, row.column, row.reason) for row in stream.malformed)
    result.rejected.sort(key=lambda rejection: rejection.position)
    return result


def _covariates(frame: pd.DataFrame, checker: RowChecker) -> tuple[pd.Series, pd.Series]:
    """Parse the optional pre-period columns; a blank cell (or an absent column) is None: no history."""
    blank = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    pre_revenue, pre_converted = blank, blank
    if "pre_revenue" in frame:
        given = frame["pre_revenue"] != ""
        parsed = parse_money(frame["pre_revenue"], "pre_revenue", checker, blank_is_zero=True)
        pre_revenue = parsed.where(given, None).astype(object)
    if "pre_converted" in frame:
        pre_converted = parse_flag(frame["pre_converted"], "pre_converted", checker).astype(object)
    return pre_revenue, pre_converted


@transaction.atomic
def _outcomes_upsert(campaign: Campaign, rows: pd.DataFrame, now: dt.datetime) -> IngestResult:
    result = IngestResult()
    if rows.empty:
        return result
    distinct = "IS DISTINCT FROM" if connection.vendor == "postgresql" else "IS NOT"
    table = ExperimentOutcome._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS staging_outcomes")
        cursor.execute(
            "CREATE TEMPORARY TABLE staging_outcomes (user_ref varchar(64), arm varchar(64), converted boolean, "
            "revenue numeric(14, 2), pre_revenue numeric(14, 2), pre_converted boolean)"
        )
        bulk_insert(
            cursor,
            "staging_outcomes",
            ["user_ref", "arm", "converted", "revenue", "pre_revenue", "pre_converted"],
            rows.itertuples(index=False, name=None),
        )
        cursor.execute(
            f"""INSERT INTO {table} (campaign_id, user_ref, arm, converted, revenue, pre_revenue, pre_converted,
                    imported_at)
                SELECT %s, user_ref, arm, converted, revenue, pre_revenue, pre_converted, %s
                FROM staging_outcomes WHERE TRUE
                ON CONFLICT (campaign_id, user_ref) DO UPDATE SET arm = EXCLUDED.arm, converted = EXCLUDED.converted,
                    revenue = EXCLUDED.revenue, pre_revenue = EXCLUDED.pre_revenue,
                    pre_converted = EXCLUDED.pre_converted, imported_at = EXCLUDED.imported_at
                WHERE ({table}.arm, {table}.converted, {table}.revenue, {table}.pre_revenue, {table}.pre_converted)
                      {distinct}
                      (EXCLUDED.arm, EXCLUDED.converted, EXCLUDED.revenue, EXCLUDED.pre_revenue,
                       EXCLUDED.pre_converted)""",
            [campaign.pk, now],
        )
        result.imported = cursor.rowcount
        cursor.execute("DROP TABLE staging_outcomes")
    result.duplicates = len(rows) - result.imported
    return result
