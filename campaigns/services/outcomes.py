"""Outcomes of experiments run elsewhere: imported per user and arm, then reported like our own campaigns."""

import datetime as dt
import re

import pandas as pd
from django.db import connection, transaction
from django.utils import timezone

from analytics.models import ExperimentOutcome
from analytics.selectors import users_known_by_partner_ids
from analytics.services.csvfiles import CsvStream
from analytics.services.imports import parse_flag
from analytics.services.ingest import IngestResult, Rejection, RowChecker, check_ids, parse_money
from analytics.services.progress import progress_bar
from analytics.services.suppression import ERASED_REASON, erased_mask
from crossmkt_site.bulk import bulk_insert
from crossmkt_site.errors import ApplicationError

from ..models import Campaign, Partner
from ..selectors import partner_get

OUTCOME_COLUMNS = ("user_id", "arm", "converted", "revenue")
# Pre-period covariates for CUPED (README, "Experiment statistics"); a blank cell is a user without history.
COVARIATE_COLUMNS = ("pre_revenue", "pre_converted")


def campaign_for_outcomes(*, slug: str, now: dt.datetime, partner_slug: str | None = None) -> Campaign:
    """Return the campaign outcomes are imported into, with its owner: the partner whose ids the file uses.

    A new slug becomes an external campaign owned by ``partner_slug``; an existing one without an
    owner takes that partner as its owner. A partner is required unless the campaign has an owner,
    and must then be that owner.
    """
    partner = partner_get(slug=partner_slug) if partner_slug else None
    campaign = Campaign.objects.filter(slug=slug).first()
    if campaign is None:
        if len(slug) > 64 or not re.fullmatch(r"[-a-zA-Z0-9_]+", slug):
            raise ApplicationError(
                f"campaign slug {slug!r} must be letters, digits, '-' or '_', at most 64 characters",
                field="campaign",
            )
        if partner is None:
            raise ApplicationError(_PARTNER_REQUIRED.format(slug=slug, state="is new"), field="partner")
        return Campaign.objects.create(
            slug=slug,
            name=slug,
            kind=Campaign.Kind.EXTERNAL,
            status=Campaign.Status.ENDED,
            starts_at=now,
            ends_at=now + dt.timedelta(seconds=1),
            holdout_share=0,
            owner=partner,
        )
    if campaign.kind != Campaign.Kind.EXTERNAL:
        raise ApplicationError(
            f"campaign {slug!r} is one of ours; its outcomes come from its own records. "
            "Use a new slug for an outside experiment.",
            field="campaign",
        )
    if campaign.owner_id is None:
        if partner is None:
            raise ApplicationError(_PARTNER_REQUIRED.format(slug=slug, state="has no owner"), field="partner")
        campaign.owner = partner
        campaign.save(update_fields=["owner"])
    elif partner is not None and partner.pk != campaign.owner_id:
        owner = Partner.objects.get(pk=campaign.owner_id)
        raise ApplicationError(
            f"campaign {slug!r} belongs to partner {owner.slug!r}, not {partner.slug!r}; "
            "its outcomes name that partner's users",
            field="partner",
        )
    return campaign


_PARTNER_REQUIRED = (
    "campaign {slug!r} {state}: name the partner whose user ids the file uses with --partner SLUG "
    "(the same id at two partners is two people)"
)


def _unknown_reason(partner: Partner) -> str:
    return (
        f"not an id partner {partner.slug!r} knows anyone by (its own users, and people linked to it who "
        "consent to data sharing); outcomes are never attached to another partner's user"
    )


def outcomes_import_file(
    path,
    *,
    campaign_slug: str,
    partner_slug: str | None = None,
    encoding: str | None = None,
    progress: bool = False,
) -> IngestResult:
    """Import per-user experiment outcomes; bad rows are named by line and write nothing.

    Each ``user_id`` is resolved as the campaign's owner knows it (``campaign_for_outcomes``);
    an id it knows nobody by is rejected by line. The file can be re-imported.
    """
    now = timezone.now()
    result = IngestResult()
    with CsvStream(path, required=OUTCOME_COLUMNS, optional=COVARIATE_COLUMNS, encoding=encoding) as stream:
        campaign = campaign_for_outcomes(slug=campaign_slug, now=now, partner_slug=partner_slug)
        owner = campaign.owner
        assert owner is not None  # campaign_for_outcomes gives every campaign it returns an owner
        unknown_reason = _unknown_reason(owner)
        with progress_bar(f"importing {stream.path.name}", stream.size, unit="bytes", enabled=progress) as advance:
            for batch in stream.batches(on_progress=advance):
                frame = pd.DataFrame(batch.columns)
                checker = RowChecker(batch.lines)
                check_ids(frame["user_id"], "user_id", checker)
                ids = frame["user_id"].tolist()
                checker.flag(erased_mask(partner_ids=[owner.pk] * len(ids), external_ids=ids), "user_id", ERASED_REASON)
                known = users_known_by_partner_ids(partner_id=owner.pk, external_ids=ids)
                user_ids = frame["user_id"].map(known)
                checker.flag(user_ids.isna().to_numpy(), "user_id", unknown_reason)
                check_ids(frame["arm"], "arm", checker)
                converted = parse_flag(frame["converted"], "converted", checker)
                checker.flag((frame["converted"] == "").to_numpy(), "converted", "missing")
                revenue = parse_money(frame["revenue"], "revenue", checker)
                pre_revenue, pre_converted = _covariates(frame, checker)
                good = checker.good
                rows = pd.DataFrame(
                    {
                        "user_ref": frame["user_id"][good],
                        "user_id": user_ids[good].astype("int64"),
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
            "CREATE TEMPORARY TABLE staging_outcomes (user_ref varchar(64), user_id bigint, arm varchar(64), "
            "converted boolean, revenue numeric(14, 2), pre_revenue numeric(14, 2), pre_converted boolean)"
        )
        bulk_insert(
            cursor,
            "staging_outcomes",
            ["user_ref", "user_id", "arm", "converted", "revenue", "pre_revenue", "pre_converted"],
            rows.itertuples(index=False, name=None),
        )
        cursor.execute(
            f"""INSERT INTO {table} (campaign_id, user_ref, user_id, arm, converted, revenue, pre_revenue,
                    pre_converted, imported_at)
                SELECT %s, user_ref, user_id, arm, converted, revenue, pre_revenue, pre_converted, %s
                FROM staging_outcomes WHERE TRUE
                ON CONFLICT (campaign_id, user_ref) DO UPDATE SET user_id = EXCLUDED.user_id, arm = EXCLUDED.arm,
                    converted = EXCLUDED.converted, revenue = EXCLUDED.revenue, pre_revenue = EXCLUDED.pre_revenue,
                    pre_converted = EXCLUDED.pre_converted, imported_at = EXCLUDED.imported_at
                WHERE ({table}.user_id, {table}.arm, {table}.converted, {table}.revenue, {table}.pre_revenue,
                       {table}.pre_converted)
                      {distinct}
                      (EXCLUDED.user_id, EXCLUDED.arm, EXCLUDED.converted, EXCLUDED.revenue, EXCLUDED.pre_revenue,
                       EXCLUDED.pre_converted)""",
            [campaign.pk, now],
        )
        result.imported = cursor.rowcount
        cursor.execute("DROP TABLE staging_outcomes")
    result.duplicates = len(rows) - result.imported
    return result
