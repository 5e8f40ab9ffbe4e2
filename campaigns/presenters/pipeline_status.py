"""Pipeline health as tables of text, in the reader's language: the admin page and ``pipeline_status`` print these."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import TextChoices
from django.utils import timezone
from django.utils.translation import gettext as _

from analytics.models import ModelRun
from analytics.presenters import quality_gate_text

from ..models import DealGrant, WebhookDelivery
from ..selectors.pipeline_health import PipelineHealth


@dataclass(frozen=True)
class StatusTable:
    """One section of the status: a title, column headings and rows of text."""

    key: str
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    note: str = ""


def _time(moment: datetime | None) -> str:
    return "-" if moment is None else f"{timezone.localtime(moment):%Y-%m-%d %H:%M:%S}"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(seconds, 0.0)
    if seconds < 120:
        return _("%(n)s s") % {"n": f"{seconds:.0f}"}
    if seconds < 7_200:
        return _("%(n)s min") % {"n": f"{seconds / 60:.0f}"}
    return _("%(n)s h") % {"n": f"{seconds / 3_600:.1f}"}


def _label(choices: type[TextChoices], value: str) -> str:
    """Return a choice's label in the reader's language (the value itself for one no longer in the choices)."""
    return str(choices(value).label) if value in choices.values else value


def _count(n: int) -> str:
    return f"{n:,}"


def pipeline_status_tables(health: PipelineHealth) -> list[StatusTable]:
    """Return the status as tables: events, issuance, webhooks, models, and the live path."""
    events = StatusTable(
        key="events",
        title=_("Events accepted"),
        columns=(_("partner"), _("events")),
        rows=(
            *((partner, _count(count)) for partner, count in health.events_by_partner.items()),
            (_("all partners"), _count(health.events_total)),
        ),
        note=_("Counted at %(time)s.") % {"time": _time(health.events_counted_at)},
    )
    issuance = StatusTable(
        key="issuance",
        title=_("Issuance"),
        columns=(_("what"), _("count")),
        rows=(
            *(
                (_("offers issued: %(campaign)s") % {"campaign": slug}, _count(n))
                for slug, n in health.offers_issued_by_campaign.items()
            ),
            (_("offers issued: all campaigns"), _count(health.offers_issued_total)),
            *(
                (_("deal grants: %(status)s") % {"status": _label(DealGrant.Status, status)}, _count(n))
                for status, n in health.grants_by_status.items()
            ),
        ),
        note=_("A compensated grant never reached its partner; its place went back to the deal's caps."),
    )
    oldest = health.oldest_pending_webhook_at
    webhooks = StatusTable(
        key="webhooks",
        title=_("Webhook deliveries"),
        columns=(_("what"), _("count")),
        rows=(
            *(
                (_("deliveries: %(status)s") % {"status": _label(WebhookDelivery.Status, status)}, _count(n))
                for status, n in health.webhooks_by_status.items()
            ),
            *(
                (
                    _("%(status)s: %(event)s")
                    % {"status": _label(WebhookDelivery.Status, status), "event": _label(WebhookDelivery.Event, event)},
                    _count(n),
                )
                for (event, status), n in sorted(health.webhooks_open_by_event.items())
            ),
            (
                _("oldest pending delivery"),
                _age((health.measured_at - oldest).total_seconds()) if oldest else "-",
            ),
        ),
    )
    models = StatusTable(
        key="models",
        title=_("Models"),
        columns=(_("model"), _("active version"), _("last trained"), _("quality gate"), _("last scored")),
        rows=tuple(
            (
                _label(ModelRun.Model, model.model),
                "-" if model.active_version is None else f"v{model.active_version}",
                "-"
                if model.last_trained_at is None
                else f"v{model.last_trained_version} {_time(model.last_trained_at)}",
                quality_gate_text(model.last_gate) or "-",
                "-" if model.last_scored_at is None else f"v{model.last_scored_version} {_time(model.last_scored_at)}",
            )
            for model in health.models
        ),
        note=_("%(n)s model kinds have an active run.") % {"n": health.active_model_runs},
    )
    return [events, issuance, webhooks, models, _live_path_table(health)]


def _live_path_table(health: PipelineHealth) -> StatusTable:
    rows: list[tuple[str, ...]] = []
    if health.pending is not None:
        rows += [
            (_("users pending"), _count(health.pending.users)),
            (_("oldest pending"), _age(health.pending.oldest_age_seconds)),
        ]
    if health.offer_latency is not None:
        latency = health.offer_latency
        rows.append((_("offers timed"), _count(latency.count)))
        rows += [
            (_("within %(bound)s s") % {"bound": "∞" if bound == float("inf") else f"{bound:g}"}, _count(n))
            for bound, n in sorted(latency.buckets.items())
        ]
    return StatusTable(
        key="live",
        title=_("Live path"),
        columns=(_("what"), _("value")),
        rows=tuple(rows),
        note="" if rows else _("Not measured yet: the live path's pending users and latencies are not recorded."),
    )


def pipeline_status_json(health: PipelineHealth) -> str:
    """Return the figures as one JSON object (times in ISO 8601, the gate's raw record per model)."""
    data: dict[str, Any] = {
        "measured_at": health.measured_at.isoformat(),
        "events": {
            "by_partner": dict(health.events_by_partner),
            "total": health.events_total,
            "counted_at": health.events_counted_at.isoformat(),
        },
        "offers_issued": {"by_campaign": dict(health.offers_issued_by_campaign), "total": health.offers_issued_total},
        "deal_grants": dict(health.grants_by_status),
        "webhook_deliveries": {
            "by_status": dict(health.webhooks_by_status),
            "open_by_event": [
                {"event": event, "status": status, "count": n}
                for (event, status), n in sorted(health.webhooks_open_by_event.items())
            ],
            "oldest_pending_at": health.oldest_pending_webhook_at.isoformat()
            if health.oldest_pending_webhook_at
            else None,
        },
        "models": [
            {
                "model": model.model,
                "active_version": model.active_version,
                "active_trained_at": model.active_trained_at.isoformat() if model.active_trained_at else None,
                "last_trained_version": model.last_trained_version,
                "last_trained_at": model.last_trained_at.isoformat() if model.last_trained_at else None,
                "quality_gate": dict(model.last_gate),
                "last_scored_version": model.last_scored_version,
                "last_scored_at": model.last_scored_at.isoformat() if model.last_scored_at else None,
            }
            for model in health.models
        ],
        "active_model_runs": health.active_model_runs,
        "pending": None
        if health.pending is None
        else {"users": health.pending.users, "oldest_age_seconds": health.pending.oldest_age_seconds},
        "offer_latency": None
        if health.offer_latency is None
        else {
            "buckets": {("+Inf" if b == float("inf") else str(b)): n for b, n in health.offer_latency.buckets.items()},
            "count": health.offer_latency.count,
            "sum_seconds": health.offer_latency.sum_seconds,
        },
    }
    return json.dumps(data, ensure_ascii=False)
