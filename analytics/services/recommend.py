"""Rank today's catalog for one user with the active recommendations run.

The fitted model is loaded once per process and run version, so a call costs a few small
queries (which run is active, the user's history) and some NumPy operations over the
catalog, which the caller passes in. Only courses on sale and films inside their licence
window at the moment of asking are recommended, never an item the user already has (a film
watched, a course bought). Asked on behalf of a partner, only the events that partner sent
are used unless the user consented to data sharing; the caller says whose items may be listed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from django.db.models import Count
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from crossmkt_site.errors import ApplicationError

from ..models import BehaviorEvent, EndUser, ModelRun
from .registry import model_run_artifact
from .training.recommendations import (
    COLD_START_DISCOUNT,
    COURSE,
    DOMAIN_OF_KIND,
    INTERACTION_WEIGHTS,
    OWNING_KINDS,
    CooccurrenceRecommender,
    candidate_mask,
    content_similarity,
)

MODEL = ModelRun.Model.RECOMMENDATIONS.value
_BECAUSE = {
    "film_watch": gettext_lazy("because you watched %(title)s"),
    "course_purchase": gettext_lazy("because you bought %(title)s"),
    "course_view": gettext_lazy("because you viewed %(title)s"),
}


@dataclass(frozen=True)
class _LoadedModel:
    run_key: tuple[int, int, datetime]
    model: CooccurrenceRecommender
    position: dict[tuple[str, Any, str], int]


_loaded: dict[str, _LoadedModel] = {}
_loading = threading.Lock()


def _active_model() -> _LoadedModel:
    """Return the active run's model, unpickled only when the active run has changed since the last call."""
    # The training time is part of the key because a rolled-back run's id and version can be taken again.
    run_key = ModelRun.objects.filter(model=MODEL, is_active=True).values_list("pk", "version", "created_at").first()
    if run_key is None:
        raise ApplicationError(
            f"no trained {MODEL} model yet; run: python manage.py train --model {MODEL}",
            code="not_trained",
            field="model",
        )
    cached = _loaded.get(MODEL)
    if cached is not None and cached.run_key == run_key:
        return cached
    with _loading:
        cached = _loaded.get(MODEL)
        if cached is None or cached.run_key != run_key:
            model: CooccurrenceRecommender = model_run_artifact(ModelRun.objects.only("artifact").get(pk=run_key[0]))
            catalog = model.catalog
            position = {
                key: index
                for index, key in enumerate(zip(catalog["kind"], catalog["partner"], catalog["item_id"], strict=True))
            }
            cached = _loaded[MODEL] = _LoadedModel(run_key, model, position)
    return cached


def _history(user: EndUser, partner_id: int | None) -> pd.DataFrame:
    """Return the user's interactions per item: kind, partner, item_id, n."""
    events = BehaviorEvent.objects.filter(user=user, kind__in=list(INTERACTION_WEIGHTS)).exclude(item_id="")
    if partner_id is not None and not user.data_sharing_consent:
        events = events.filter(partner_id=partner_id)
    rows = events.values_list("kind", "partner_id", "item_id").annotate(n=Count("id")).order_by()
    return pd.DataFrame(list(rows), columns=["kind", "partner", "item_id", "n"])


def recommendations_rank(
    *,
    user: EndUser,
    catalog: pd.DataFrame,
    partner_id: int | None = None,
    partner_ids: set[int] | None = None,
    limit: int = 10,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Recommend courses and films for one user, best first: kind, partner, item_id, title, category, score, reason.

    ``catalog`` is today's catalog (``CATALOG_COLUMNS``); ``partner_id`` is the partner asking,
    whose events alone count without data-sharing consent, and ``partner_ids`` the partners
    whose items may be listed (None: any). ``score`` is the mean similarity (0 to 1) of the item
    to the user's history, or for a user without history the item's popularity relative to the
    most popular item of its kind.
    """
    if user.erased_at is not None or limit <= 0:
        return []
    now = now or timezone.now()
    loaded = _active_model()
    model = loaded.model
    history = _history(user, partner_id)

    # The history as a vector over the model's items, plus the items the model has never seen.
    history_domain = history["kind"].map(DOMAIN_OF_KIND)
    history_position = pd.Series(
        [loaded.position.get(key) for key in zip(history_domain, history["partner"], history["item_id"], strict=True)],
        dtype="float64",
    )
    weights = history["kind"].map(INTERACTION_WEIGHTS).to_numpy(float) * history["n"].to_numpy(float)
    known = history_position.notna().to_numpy()
    vector = np.bincount(history_position[known].astype(int), weights=weights[known], minlength=len(model.catalog))
    unseen = (
        history[~known]
        .assign(domain=history_domain[~known], weight=weights[~known])
        .merge(
            catalog,
            left_on=["domain", "partner", "item_id"],
            right_on=["kind", "partner", "item_id"],
            suffixes=("_event", ""),
        )
    )
    if len(unseen):
        vector = vector + unseen["weight"].to_numpy() @ _borrowed_similarity(model, unseen)
    has_history = vector.sum() > 0
    model_scores = model.scores(sp.csr_matrix(vector[None, :]))[0]

    # Scores for today's catalog: the model's own for items it knows, borrowed by content for new ones.
    catalog_position = pd.Series(
        [loaded.position.get(key) for key in zip(catalog["kind"], catalog["partner"], catalog["item_id"], strict=True)],
        dtype="float64",
    )
    in_model = catalog_position.notna().to_numpy()
    scores = np.zeros(len(catalog))
    scores[in_model] = model_scores[catalog_position[in_model].astype(int)]
    if has_history and not in_model.all():
        scores[~in_model] = _borrowed_similarity(model, catalog[~in_model]) @ model_scores

    owning = history["kind"].isin(OWNING_KINDS)
    owned = set(zip(history_domain[owning], history["partner"][owning], history["item_id"][owning], strict=True))
    allowed = candidate_mask(catalog, at=now) & ~np.array(
        [key in owned for key in zip(catalog["kind"], catalog["partner"], catalog["item_id"], strict=True)], dtype=bool
    )
    if partner_ids is not None:
        allowed &= catalog["partner"].isin(partner_ids).to_numpy()
    ranking = pd.DataFrame({"score": scores, "title": catalog["title"]})[allowed]
    chosen = ranking.sort_values(["score", "title"], ascending=[False, True]).index.to_numpy()[:limit]
    reasons = _reasons(model, loaded, catalog, chosen, vector, history, in_model, catalog_position, has_history)
    return [
        {
            "kind": catalog.at[index, "kind"],
            "partner": catalog.at[index, "partner_slug"],
            "item_id": catalog.at[index, "item_id"],
            "title": catalog.at[index, "title"],
            "category": catalog.at[index, "category"],
            "score": round(float(min(max(scores[index], 0.0), 1.0)), 4),
            "reason": reason,
        }
        for index, reason in zip(chosen, reasons, strict=True)
    ]


def _borrowed_similarity(model: CooccurrenceRecommender, items: pd.DataFrame) -> np.ndarray:
    """Return items × model items: each item's content-weighted share of the model's warm items, discounted."""
    warm = model.warm
    similarity = np.zeros((len(items), len(model.catalog)))
    content = content_similarity(
        items["category"].to_numpy(),
        items["tags"].to_numpy(),
        model.catalog["category"].to_numpy()[warm],
        model.catalog["tags"].to_numpy()[warm],
    )
    totals = content.sum(axis=1, keepdims=True)
    similarity[:, warm] = COLD_START_DISCOUNT * np.divide(content, totals, out=np.zeros_like(content), where=totals > 0)
    return similarity


def _reasons(
    model: CooccurrenceRecommender,
    loaded: _LoadedModel,
    catalog: pd.DataFrame,
    chosen: np.ndarray,
    vector: np.ndarray,
    history: pd.DataFrame,
    in_model: np.ndarray,
    catalog_position: pd.Series,
    has_history: bool,
) -> list[str]:
    """Say why each chosen item is there: the history item that adds most to its score, its category, or popularity."""
    if not has_history:
        return [_("popular with other users")] * len(chosen)
    # Per history item the strongest verb: a course bought says more than a course viewed.
    verb_rank = {"course_purchase": 0, "film_watch": 0, "course_view": 1}
    history_by_position: dict[int, tuple[str, str]] = {}
    for kind, partner_id, item_id in history[["kind", "partner", "item_id"]].itertuples(index=False, name=None):
        position = loaded.position.get((DOMAIN_OF_KIND[kind], partner_id, item_id))
        if position is not None and (
            position not in history_by_position or verb_rank[kind] < verb_rank[history_by_position[position][0]]
        ):
            history_by_position[position] = (kind, model.catalog.at[position, "title"])
    reasons = []
    similarity = model.similarity
    for index in chosen:
        if not in_model[index]:
            reasons.append(
                _("new, and close to what you like in %(category)s") % {"category": catalog.at[index, "category"]}
            )
            continue
        contributions = similarity[:, int(catalog_position[index])].toarray().ravel() * vector
        best = int(np.argmax(contributions))
        if contributions[best] > 0 and best in history_by_position:
            kind, title = history_by_position[best]
            reasons.append(str(_BECAUSE[kind]) % {"title": title})
        elif catalog.at[index, "kind"] == COURSE:
            reasons.append(_("a popular course"))
        else:
            reasons.append(_("a popular film"))
    return reasons
