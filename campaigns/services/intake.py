"""Behaviour coming in: analytics stores events and users, then deals and the live path evaluate what they touched.

The partner API (``POST events/``) and the ``import_events`` command accept events here;
``import_behavior`` starts here too, because the users' home partners are campaigns' to look up.
"""

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from analytics.services import imports
from analytics.services.ingest import IngestResult
from analytics.services.partner_events import events_ingest_items
from crossmkt_site.errors import ApplicationError

from ..models import Partner
from .deals import deals_evaluate_on_commit
from .live import live_drain_on_commit


def partner_ids_by_slug() -> dict[str, int]:
    """Map every partner's slug to its id."""
    return dict(Partner.objects.values_list("slug", "id"))


def _deals_evaluate_for(result: IngestResult) -> None:
    if result.user_ids_with_new_events:
        deals_evaluate_on_commit(user_ids=result.user_ids_with_new_events)
        # Ingestion left those users pending, in the transaction that stored their events: drain them.
        live_drain_on_commit()


def events_accept(*, partner: Partner, items: Sequence, now: datetime | None = None) -> IngestResult:
    """Store a partner's batch of event objects; queue the deals evaluation and the live path for its users."""
    result = events_ingest_items(partner_id=partner.pk, partner_slug=partner.slug, items=items, now=now)
    _deals_evaluate_for(result)
    return result


def events_import_file(path: str | Path, *, encoding: str | None = None, progress: bool = False) -> IngestResult:
    """Import an events CSV batch by batch, queueing the deals evaluation of each batch's users with new events."""
    return imports.events_import_file(
        path, partner_ids=partner_ids_by_slug(), encoding=encoding, progress=progress, on_batch=_deals_evaluate_for
    )


def _only_knowledge_partner_id() -> int | None:
    """Return the id of the knowledge platform when there is exactly one, else None."""
    knowledge = list(Partner.objects.filter(kind=Partner.Kind.KNOWLEDGE).values_list("pk", flat=True)[:2])
    return knowledge[0] if len(knowledge) == 1 else None


def behavior_import_file(
    path: str | Path, *, partner: str | None = None, encoding: str | None = None, progress: bool = False
) -> IngestResult:
    """Import the article's per-user table; new users belong to ``partner`` (a slug) or the only knowledge platform."""
    partner_ids = partner_ids_by_slug()
    if partner is not None and partner not in partner_ids:
        raise ApplicationError(f"no partner {partner!r}; see 'manage.py partner list'", field="partner")
    result = imports.behavior_import_file(
        path,
        partner_ids=partner_ids,
        partner_id=partner_ids[partner] if partner else None,
        fallback_partner_id=None if partner else _only_knowledge_partner_id(),
        encoding=encoding,
        progress=progress,
    )
    if result.imported:
        live_drain_on_commit()  # the users whose rows changed are pending
    return result
