"""Recommendations a partner may make to a user: the trained model over today's catalog, or the user's interests.

The catalog and who works with whom are campaigns' to know: they are read here and passed to
the model (``analytics.services.recommend.recommendations_rank``) and to its training.
"""

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
from django.db.models import Count, Q
from django.utils import timezone

from analytics.models import BehaviorEvent, EndUser
from analytics.services.recommend import recommendations_rank
from analytics.services.training.recommendations import CATALOG_COLUMNS, COURSE, FILM
from crossmkt_site.errors import ApplicationError

from ..models import Bundle, Campaign, Course, Deal, Film, Partner


def catalog_frame() -> pd.DataFrame:
    """Return every course and film as one frame in a fixed order: its kind, partner, ids and description.

    The columns are ``analytics.services.training.recommendations.CATALOG_COLUMNS``, the shape the
    recommendations model trains and serves on.
    """
    courses = pd.DataFrame(
        list(
            Course.objects.values_list("partner_id", "partner__slug", "sku", "title", "category", "tags", "is_active")
        ),
        columns=["partner", "partner_slug", "item_id", "title", "category", "tags", "is_active"],
    )
    films = pd.DataFrame(
        list(
            Film.objects.values_list(
                "partner_id",
                "partner__slug",
                "external_id",
                "title",
                "category",
                "tags",
                "licence_start",
                "licence_end",
            )
        ),
        columns=["partner", "partner_slug", "item_id", "title", "category", "tags", "licence_start", "licence_end"],
    )
    frame = pd.concat([courses.assign(kind=COURSE), films.assign(kind=FILM, is_active=True)], ignore_index=True)
    frame["tags"] = [tuple(tags or ()) for tags in frame["tags"]]
    frame["category"] = frame["category"].fillna("")
    return frame.sort_values(["kind", "partner", "item_id"], ignore_index=True)[CATALOG_COLUMNS]


def bundled_pairs() -> set[tuple[int, str, int, str]]:
    """Return (course partner id, sku, film partner id, film id) of every course and film sold in one bundle."""
    courses = Bundle.courses.through.objects.values_list("bundle_id", "course__partner_id", "course__sku")
    films = Bundle.films.through.objects.values_list("bundle_id", "film__partner_id", "film__external_id")
    films_by_bundle: dict[int, list[tuple[int, str]]] = {}
    for bundle_id, partner_id, film_id in films:
        films_by_bundle.setdefault(bundle_id, []).append((partner_id, film_id))
    return {
        (course_partner, sku, film_partner, film_id)
        for bundle_id, course_partner, sku in courses
        for film_partner, film_id in films_by_bundle.get(bundle_id, [])
    }


def partner_counterpart_ids(partner: Partner, now: datetime) -> set[int]:
    """Return the partner and its counterparts now: the other side of an active deal or of a running campaign.

    Two partners who only take part in the same campaign are not counterparts: a video
    platform does not promote another video platform's films.
    """
    ids = {partner.pk}
    deals = Deal.objects.filter(
        Q(source_partner=partner) | Q(target_partner=partner),
        status=Deal.Status.ACTIVE,
        starts_at__lte=now,
        ends_at__gt=now,
    )
    for source, target in deals.values_list("source_partner_id", "target_partner_id"):
        ids.update((source, target))
    running = Campaign.objects.running_at(now)
    ids.update(running.filter(partners=partner).exclude(owner=None).values_list("owner_id", flat=True))
    ids.update(Partner.objects.filter(campaigns__in=running.filter(owner=partner)).values_list("pk", flat=True))
    return ids


def model_recommendations(
    *, user: EndUser, partner: Partner | None = None, limit: int = 10, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Recommend with the active recommendations model: for a partner, its items and its counterparts' only.

    An ``ApplicationError`` with code ``not_trained`` says no model is trained yet.
    """
    if user.erased_at is not None or limit <= 0:
        return []
    now = now or timezone.now()
    return recommendations_rank(
        user=user,
        catalog=catalog_frame(),
        partner_id=None if partner is None else partner.pk,
        partner_ids=None if partner is None else partner_counterpart_ids(partner, now),
        limit=limit,
        now=now,
    )


# How much one event says about interest in its item's category. A purchase is a stronger
# signal than a view or a watch; these are stated judgements, not fitted values.
INTEREST_WEIGHTS = {"course_purchase": 3.0, "course_view": 1.0, "film_watch": 1.0}
COURSE_KINDS = ("course_purchase", "course_view")


@dataclass(frozen=True)
class Recommendation:
    kind: str  # "course" or "film"
    partner: str  # slug of the partner whose catalog the item is in
    item_id: str  # the course SKU or the film's external id
    title: str
    category: str
    score: float  # the user's share of interest in this category, 0 to 1


def _interest_by_category(counts) -> Counter[str]:
    course_keys = {(partner_id, item) for partner_id, kind, item, _n in counts if kind in COURSE_KINDS}
    film_keys = {(partner_id, item) for partner_id, kind, item, _n in counts if kind not in COURSE_KINDS}
    course_category = {
        (partner_id, sku): category
        for partner_id, sku, category in Course.objects.filter(
            partner_id__in={key[0] for key in course_keys},
            sku__in={key[1] for key in course_keys},
        ).values_list("partner_id", "sku", "category")
    }
    film_category = {
        (partner_id, external_id): category
        for partner_id, external_id, category in Film.objects.filter(
            partner_id__in={key[0] for key in film_keys},
            external_id__in={key[1] for key in film_keys},
        ).values_list("partner_id", "external_id", "category")
    }
    interest: Counter[str] = Counter()
    for partner_id, kind, item, n in counts:
        category = (course_category if kind in COURSE_KINDS else film_category).get((partner_id, item))
        if category:
            interest[category] += INTEREST_WEIGHTS[kind] * n
    return interest


def interest_recommendations(
    *, user: EndUser, partner: Partner, limit: int = 10, now: datetime | None = None
) -> list[Recommendation]:
    """Recommend courses and films the partner can offer, ranked by the user's interest in their categories.

    Interest is counted from the user's course and film events whose items are in the
    catalog; without data-sharing consent only the events this partner sent count.
    Candidates are the partner's own active courses and licensed films and those its
    running campaigns promote; courses the user bought and films they watched are left
    out. A user with no such events gets no recommendations rather than a guess.
    """
    now = now or timezone.now()
    events = BehaviorEvent.objects.filter(user=user, kind__in=INTEREST_WEIGHTS).exclude(item_id="")
    if not user.data_sharing_consent:
        events = events.filter(partner=partner)
    counts = list(events.values_list("partner_id", "kind", "item_id").annotate(n=Count("id")).order_by())
    interest = _interest_by_category(counts)
    if not interest:
        return []
    total = sum(interest.values())
    bought = {(partner_id, item) for partner_id, kind, item, _n in counts if kind == "course_purchase"}
    watched = {(partner_id, item) for partner_id, kind, item, _n in counts if kind == "film_watch"}
    campaigns = Campaign.objects.visible_to(partner).running_at(now).values("pk")
    courses = (
        Course.objects.filter(Q(partner=partner) | Q(campaigns__in=campaigns), is_active=True, category__in=interest)
        .select_related("partner")
        .distinct()
    )
    films = (
        Film.objects.filter(
            Q(partner=partner) | Q(campaigns__in=campaigns),
            category__in=interest,
            licence_start__lte=now,
            licence_end__gt=now,
        )
        .select_related("partner")
        .distinct()
    )
    candidates = [
        Recommendation(
            "course",
            course.partner.slug,
            course.sku,
            course.title,
            course.category,
            round(interest[course.category] / total, 4),
        )
        for course in courses
        if (course.partner_id, course.sku) not in bought
    ] + [
        Recommendation(
            "film",
            film.partner.slug,
            film.external_id,
            film.title,
            film.category,
            round(interest[film.category] / total, 4),
        )
        for film in films
        if (film.partner_id, film.external_id) not in watched
    ]
    candidates.sort(key=lambda item: (-item.score, item.title, item.partner, item.item_id))
    return candidates[:limit]


def user_recommendations(*, user: EndUser, partner: Partner, limit: int = 10) -> list[Any]:
    """Recommend with the trained model; before one is trained, by the user's category interests."""
    try:
        return model_recommendations(user=user, partner=partner, limit=limit)
    except ApplicationError as error:
        if error.code != "not_trained":
            raise
        return interest_recommendations(user=user, partner=partner, limit=limit)
