"""Train cross-domain recommendations: item-item co-occurrence over courses and films, content for cold start.

Which course for a film watcher, which film for a course buyer: every film watch, course
purchase and course view is an interaction with one catalog item, and two items are similar
when the same users interact with both (cosine of their user columns, both catalogs in one
item space). A user's score for an item is the mean similarity of the item to the user's
history. Content stands in where co-occurrence is missing: an item with too few users
borrows the similarities of the warm items of its category and tags (at a discount), and a
user with no history gets the most popular items.

The model is judged on the period after the observation end: for each user, the first
course bought and the first film watched there that the user did not already have is the
held-out item; hit-rate@10 and NDCG@10 of the model's list are compared with a list of the
most popular items (same candidates: courses on sale, films inside their licence at the
observation end, nothing the user already has). The stored model is then refitted on all
data, and the association analysis (course↔film pairs with support, confidence and lift)
goes with the run for the managers who design bundles.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp
from django.db import connection
from django.utils import timezone

from crossmkt_site.bulk import bulk_insert_frame
from crossmkt_site.errors import ApplicationError

from ...models import BehaviorEvent, ModelRun
from ..registry import model_run_save
from .clv import default_observation_end
from .common import as_utc, fetch_frame, json_safe, sql_time, utc_series

COURSE, FILM = "course", "film"
DOMAIN_OF_KIND = {"film_watch": FILM, "course_purchase": COURSE, "course_view": COURSE}
# Every interaction counts once: on the demo world weighting purchases or views differently moved
# hit-rate@10 by less than its standard error.
INTERACTION_WEIGHTS = {"film_watch": 1.0, "course_purchase": 1.0, "course_view": 1.0}
# What a user "has" and is never recommended again; a course only viewed is still a fair suggestion.
OWNING_KINDS = ("film_watch", "course_purchase")
HELD_OUT_KIND = {COURSE: "course_purchase", FILM: "film_watch"}
# Below this many users an item's co-occurrences are noise, so it is treated as cold and scored by content.
MIN_ITEM_USERS = 10
# Neighbours kept per item: enough for any list of ten, and it keeps the stored matrix small for big catalogs.
NEIGHBOURS_KEPT = 100
# A cold item's borrowed similarity counts half: it rests on its description, not on observed behaviour.
COLD_START_DISCOUNT = 0.5
CONTENT_CATEGORY_WEIGHT = 1.0
CONTENT_TAG_WEIGHT = 1.0
LIST_LENGTH = 10
EVALUATION_USERS_PER_DOMAIN = 50_000
EVALUATION_SEED = 20_260_906
# Users scored at once in the evaluation: a dense block of this many rows by the catalog stays small.
EVALUATION_BLOCK_USERS = 5_000
MIN_PAIR_USERS = 20
ASSOCIATION_PAIRS_KEPT = 200

FloatArray = npt.NDArray[np.float64]
MODEL_CATALOG_COLUMNS = ["kind", "partner", "partner_slug", "item_id", "title", "category", "tags"]
CATALOG_COLUMNS = [*MODEL_CATALOG_COLUMNS, "licence_start", "licence_end", "is_active"]


# --------------------------------------------------------------------------
# Content similarity, shared by training and serving
# --------------------------------------------------------------------------


def content_similarity(
    categories_a: Sequence[str],
    tags_a: Sequence[Sequence[str]],
    categories_b: Sequence[str],
    tags_b: Sequence[Sequence[str]],
) -> FloatArray:
    """Return how alike two lists of items are by description: the same category, closer with shared tags.

    An item whose category none of the other list has is placed by the Jaccard index of its
    tags alone. Tags do not reach across categories otherwise: "纪录片" is shared by history and
    business documentaries, which interest different people.
    """
    same_category = np.asarray(categories_a, dtype=object)[:, None] == np.asarray(categories_b, dtype=object)[None, :]
    vocabulary = {tag: index for index, tag in enumerate(sorted({t for tags in [*tags_a, *tags_b] for t in tags}))}

    def incidence(tag_lists: Sequence[Sequence[str]]) -> sp.csr_matrix:
        rows = [row for row, tags in enumerate(tag_lists) for _ in set(tags)]
        columns = [vocabulary[tag] for tags in tag_lists for tag in set(tags)]
        return sp.csr_matrix((np.ones(len(rows)), (rows, columns)), shape=(len(tag_lists), max(len(vocabulary), 1)))

    first, second = incidence(tags_a), incidence(tags_b)
    shared = (first @ second.T).toarray()
    union = np.asarray(first.sum(axis=1)) + np.asarray(second.sum(axis=1)).T - shared
    jaccard = np.divide(shared, union, out=np.zeros_like(shared), where=union > 0)
    similarity = same_category * (CONTENT_CATEGORY_WEIGHT + CONTENT_TAG_WEIGHT * jaccard)
    without_category = ~same_category.any(axis=1)
    similarity[without_category] = CONTENT_TAG_WEIGHT * jaccard[without_category]
    return similarity


def _row_normalised(matrix: FloatArray) -> FloatArray:
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)


# --------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class InteractionData:
    """Hold who did what with which item: weighted interactions and owned items, users by items."""

    user_ids: npt.NDArray[np.int64]
    weights: sp.csr_matrix
    owned: sp.csr_matrix


def interaction_data(interactions: pd.DataFrame, *, n_items: int) -> InteractionData:
    """Build the users × items matrices from rows of user_id, item (catalog position), kind and n (count)."""
    user_ids, rows = np.unique(interactions["user_id"].to_numpy(np.int64), return_inverse=True)
    items = interactions["item"].to_numpy(np.int64)
    shape = (len(user_ids), n_items)
    weight = interactions["kind"].map(INTERACTION_WEIGHTS).to_numpy(np.float64) * interactions["n"].to_numpy(np.float64)
    weights = sp.csr_matrix((weight, (rows, items)), shape=shape)
    owning = interactions["kind"].isin(OWNING_KINDS).to_numpy()
    owned = sp.csr_matrix((np.ones(int(owning.sum())), (rows[owning], items[owning])), shape=shape)
    owned.data[:] = 1.0
    return InteractionData(user_ids=user_ids, weights=weights, owned=owned)


@dataclass(frozen=True, eq=False)
class CooccurrenceRecommender:
    """Hold a fitted item-item model over both catalogs.

    ``catalog`` has one row per item the model knows (kind, partner, partner_slug, item_id,
    title, category, tags); ``similarity`` is items × items, its cold items filled in from
    content; ``popularity`` is the share of training users who interacted with each item.
    """

    catalog: pd.DataFrame
    similarity: sp.csr_matrix
    popularity: FloatArray
    warm: npt.NDArray[np.bool_]
    n_users: int
    trained_until: datetime

    @property
    def popularity_within_kind(self) -> FloatArray:
        """Return popularity relative to the most popular item of the same kind, so courses and films mix."""
        kinds = self.catalog["kind"].to_numpy()
        result = np.zeros_like(self.popularity)
        for kind in (COURSE, FILM):
            mask = kinds == kind
            if mask.any() and self.popularity[mask].max() > 0:
                result[mask] = self.popularity[mask] / self.popularity[mask].max()
        return result

    def scores(self, history: sp.csr_matrix) -> FloatArray:
        """Return users × items scores: mean similarity to the history, popularity for users without one.

        A tiny popularity term breaks ties, so that items the history says nothing about follow
        in order of popularity.
        """
        totals = np.asarray(history.sum(axis=1)).ravel()
        similarity_sums = np.asarray((history @ self.similarity).todense())
        fallback = self.popularity_within_kind
        scores = np.where(
            totals[:, None] > 0,
            similarity_sums / np.where(totals > 0, totals, 1.0)[:, None],
            fallback[None, :],
        )
        return scores + 1e-9 * fallback[None, :]


def cooccurrence_fit(
    data: InteractionData, catalog: pd.DataFrame, *, trained_until: datetime
) -> CooccurrenceRecommender:
    """Fit the item-item model: cosine co-occurrence between warm items, content-borrowed for cold ones."""
    n_items = len(catalog)
    interacted = data.weights.copy()
    interacted.data[:] = 1.0
    users_per_item = np.asarray(interacted.sum(axis=0)).ravel()
    warm = users_per_item >= MIN_ITEM_USERS
    co_occurrence = (interacted.T @ interacted).tocoo()
    norms = np.sqrt(users_per_item)
    keep = warm[co_occurrence.row] & warm[co_occurrence.col]
    cosine = sp.csr_matrix(
        (
            co_occurrence.data[keep] / (norms[co_occurrence.row[keep]] * norms[co_occurrence.col[keep]]),
            (co_occurrence.row[keep], co_occurrence.col[keep]),
        ),
        shape=(n_items, n_items),
    )
    # Dense items x items arrays are fine for the partners' catalogs (a few thousand items at most).
    similarity = _fill_cold_items(_keep_top_neighbours(cosine.toarray(), NEIGHBOURS_KEPT), catalog, warm)
    n_users = max(len(data.user_ids), 1)
    return CooccurrenceRecommender(
        catalog=catalog[MODEL_CATALOG_COLUMNS].reset_index(drop=True),
        similarity=similarity,
        popularity=users_per_item / n_users,
        warm=warm,
        n_users=len(data.user_ids),
        trained_until=trained_until,
    )


def _keep_top_neighbours(similarity: FloatArray, neighbours: int) -> FloatArray:
    """Keep each item's ``neighbours`` most similar items (per column: the items that lead to it)."""
    if similarity.shape[0] <= neighbours:
        return similarity
    cut = -np.partition(-similarity, neighbours - 1, axis=0)[neighbours - 1]
    return np.where(similarity >= cut[None, :], similarity, 0.0)


def _fill_cold_items(similarity: FloatArray, catalog: pd.DataFrame, warm: npt.NDArray[np.bool_]) -> sp.csr_matrix:
    """Give each cold item the content-weighted mean of the warm items' similarities, at a discount."""
    cold, warm_index = np.flatnonzero(~warm), np.flatnonzero(warm)
    if len(cold) and len(warm_index):
        borrow = COLD_START_DISCOUNT * _row_normalised(
            content_similarity(
                catalog["category"].to_numpy()[cold],
                catalog["tags"].to_numpy()[cold],
                catalog["category"].to_numpy()[warm_index],
                catalog["tags"].to_numpy()[warm_index],
            )
        )
        similarity = similarity.copy()
        similarity[:, cold] = similarity[:, warm_index] @ borrow.T
        similarity[cold, :] = borrow @ similarity[warm_index, :]
    return sp.csr_matrix(similarity)


# --------------------------------------------------------------------------
# Evaluation against popularity
# --------------------------------------------------------------------------


def candidate_mask(catalog: pd.DataFrame, *, at: datetime) -> npt.NDArray[np.bool_]:
    """Tell which catalog items may be recommended at a moment: courses on sale, films inside their licence."""
    is_film = (catalog["kind"] == FILM).to_numpy()
    moment = pd.Timestamp(at)
    licensed = (pd.to_datetime(catalog["licence_start"], utc=True) <= moment) & (
        pd.to_datetime(catalog["licence_end"], utc=True) > moment
    )
    return np.where(is_film, licensed.fillna(False).to_numpy(bool), catalog["is_active"].fillna(False).to_numpy(bool))


def held_out_items(
    holdout: pd.DataFrame, calibration: InteractionData, catalog: pd.DataFrame, *, excluded_items: Sequence[str]
) -> pd.DataFrame:
    """Return per user and domain the first item of the holdout the user did not have before: user_id, domain, item."""
    domain = holdout["kind"].map({kind: name for name, kind in HELD_OUT_KIND.items()})
    item_ids = pd.Series(catalog["item_id"].to_numpy()[holdout["item"].to_numpy()], index=holdout.index)
    excluded = (domain == COURSE) & item_ids.isin(excluded_items)
    targets = holdout.assign(domain=domain)[domain.notna() & ~excluded]
    row = pd.Series(np.arange(len(calibration.user_ids)), index=calibration.user_ids)
    known = targets["user_id"].isin(row.index).to_numpy()
    had = np.zeros(len(targets), dtype=bool)
    had[known] = (
        np.asarray(
            calibration.owned[row[targets["user_id"][known]].to_numpy(), targets["item"].to_numpy()[known]]
        ).ravel()
        > 0
    )
    firsts = targets[~had].sort_values(["first_at", "item"]).drop_duplicates(["user_id", "domain"])
    return firsts[["user_id", "domain", "item"]].reset_index(drop=True)


def recommendation_evaluation(
    model: CooccurrenceRecommender,
    calibration: InteractionData,
    targets: pd.DataFrame,
    *,
    candidates: npt.NDArray[np.bool_],
    length: int = LIST_LENGTH,
    max_users: int = EVALUATION_USERS_PER_DOMAIN,
) -> dict[str, Any]:
    """Return hit-rate and NDCG at ``length`` of the model and of popularity per domain and pooled.

    Each user's list is drawn from the domain's candidates the user does not have; a hit is
    the held-out item in the list, and NDCG credits it 1 / log2(rank + 1). Domains with
    more than ``max_users`` users are judged on a fixed random sample of them.
    """
    kinds = model.catalog["kind"].to_numpy()
    row_of_user = pd.Series(np.arange(len(calibration.user_ids)), index=calibration.user_ids)
    rng = np.random.default_rng(EVALUATION_SEED)
    per_domain: dict[str, Any] = {}
    pooled: dict[str, dict[str, list[npt.NDArray[np.bool_] | FloatArray]]] = {
        name: {"hits": [], "gains": []} for name in ("model", "popularity")
    }
    for domain in (COURSE, FILM):
        domain_targets = targets[targets["domain"] == domain]
        if len(domain_targets) > max_users:
            domain_targets = domain_targets.iloc[np.sort(rng.choice(len(domain_targets), max_users, replace=False))]
        allowed = candidates & (kinds == domain)
        if domain_targets.empty or not allowed.any():
            per_domain[domain] = {"n_users": len(domain_targets)}
            continue
        rows = row_of_user.reindex(domain_targets["user_id"]).to_numpy()
        has_history = ~np.isnan(rows)
        history = _history_rows(calibration.weights, rows)
        owned = _history_rows(calibration.owned, rows)
        items = domain_targets["item"].to_numpy()
        model_rank = _ranks_of_targets(model.scores, history, owned, allowed, items)
        popular_rank = _ranks_of_targets(
            lambda block: np.tile(model.popularity, (block.shape[0], 1)), history, owned, allowed, items
        )
        results: dict[str, dict[str, float | None]] = {}
        hit_rates: dict[str, float] = {}
        for name, ranks in (("model", model_rank), ("popularity", popular_rank)):
            hits, gains = ranks < length, np.where(ranks < length, 1 / np.log2(ranks + 2.0), 0.0)
            hit_rates[name] = float(hits.mean())
            results[name] = {
                "hit_rate": hit_rates[name],
                "ndcg": float(gains.mean()),
                "hit_rate_with_history": float(hits[has_history].mean()) if has_history.any() else None,
            }
            pooled[name]["hits"].append(hits)
            pooled[name]["gains"].append(gains)
        per_domain[domain] = {
            "n_users": len(domain_targets),
            "n_users_without_history": int((~has_history).sum()),
            "n_candidates": int(allowed.sum()),
            **results,
            "relative_hit_rate_lift": _lift(hit_rates["model"], hit_rates["popularity"]),
        }
    overall: dict[str, Any] = {"n_users": int(sum(len(hits) for hits in pooled["model"]["hits"]))}
    if overall["n_users"]:
        for name, lists in pooled.items():
            overall[name] = {
                "hit_rate": float(np.concatenate(lists["hits"]).mean()),
                "ndcg": float(np.concatenate(lists["gains"]).mean()),
            }
        overall["relative_hit_rate_lift"] = _lift(overall["model"]["hit_rate"], overall["popularity"]["hit_rate"])
    return {
        "list_length": length,
        "protocol": "first new item per user and domain after the observation end",
        "overall": overall,
        **per_domain,
    }


def _lift(model: float, baseline: float) -> float | None:
    return model / baseline - 1 if baseline > 0 else None


def _history_rows(matrix: sp.csr_matrix, rows: FloatArray) -> sp.csr_matrix:
    """Return the matrix rows of the given users, empty rows for users it does not hold (NaN)."""
    known = ~np.isnan(rows)
    selector = sp.csr_matrix(
        (np.ones(int(known.sum())), (np.flatnonzero(known), rows[known].astype(np.int64))),
        shape=(len(rows), matrix.shape[0]),
    )
    return (selector @ matrix).tocsr()


def _ranks_of_targets(
    score_block: Callable[[sp.csr_matrix], FloatArray],
    history: sp.csr_matrix,
    owned: sp.csr_matrix,
    allowed: npt.NDArray[np.bool_],
    targets: npt.NDArray[np.int64],
) -> npt.NDArray[np.int64]:
    """Return the 0-based rank of each user's held-out item among the allowed items they do not own."""
    ranks = np.empty(len(targets), dtype=np.int64)
    for start in range(0, len(targets), EVALUATION_BLOCK_USERS):
        block = slice(start, start + EVALUATION_BLOCK_USERS)
        scores = score_block(history[block])
        scores = np.where(allowed[None, :] & (owned[block].toarray() == 0), scores, -np.inf)
        own_score = scores[np.arange(scores.shape[0]), targets[block]]
        # Ties are broken against the held-out item, so that a constant list never scores by luck.
        ranks[block] = (scores >= own_score[:, None]).sum(axis=1) - 1
        ranks[block][~np.isfinite(own_score)] = np.iinfo(np.int64).max // 2
    return ranks


# --------------------------------------------------------------------------
# Association analysis for bundles
# --------------------------------------------------------------------------


def association_pairs(
    data: InteractionData,
    catalog: pd.DataFrame,
    *,
    min_pair_users: int = MIN_PAIR_USERS,
    keep: int = ASSOCIATION_PAIRS_KEPT,
    bundled: set[tuple[Any, str, Any, str]] | None = None,
) -> dict[str, Any]:
    """Return course↔film pairs: watched film f and bought course c, with support, confidence and lift.

    Over the users with any interaction: support = P(f and c), confidence = P(c | f),
    confidence_reverse = P(f | c), lift = P(c | f) / P(c) and relative_risk =
    P(c | f) / P(c | not f) ("viewers of this film buy this course 4x more often than others").
    Pairs seen for fewer than ``min_pair_users`` users are left out as noise; the ``keep`` of
    highest lift are returned. ``bundled`` holds (course partner, sku, film partner, film id)
    of pairs already sold together.
    """
    kinds = catalog["kind"].to_numpy()
    films, courses = np.flatnonzero(kinds == FILM), np.flatnonzero(kinds == COURSE)
    watched = (data.owned[:, films] > 0).astype(np.float64)
    bought = (data.owned[:, courses] > 0).astype(np.float64)
    n_users = data.weights.shape[0]
    together = (watched.T @ bought).tocoo()
    frequent = together.data >= min_pair_users
    film_rows, course_rows = together.row[frequent], together.col[frequent]
    pair_users = together.data[frequent]
    film_users = np.asarray(watched.sum(axis=0)).ravel()[film_rows]
    course_users = np.asarray(bought.sum(axis=0)).ravel()[course_rows]
    confidence = pair_users / film_users
    others_buying = (course_users - pair_users) / np.maximum(n_users - film_users, 1)
    table = (
        pd.DataFrame(
            {
                "film": films[film_rows],
                "course": courses[course_rows],
                "users": pair_users.astype(np.int64),
                "support": pair_users / n_users,
                "confidence": confidence,
                "confidence_reverse": pair_users / course_users,
                "lift": confidence / (course_users / n_users),
                "relative_risk": np.divide(
                    confidence, others_buying, out=np.full_like(confidence, np.nan), where=others_buying > 0
                ),
            }
        )
        .sort_values(["lift", "users"], ascending=False)
        .head(keep)
    )
    bundled = bundled or set()
    pairs = [
        {
            "course_partner": catalog.at[course, "partner_slug"],
            "course_id": catalog.at[course, "item_id"],
            "course_title": catalog.at[course, "title"],
            "film_partner": catalog.at[film, "partner_slug"],
            "film_id": catalog.at[film, "item_id"],
            "film_title": catalog.at[film, "title"],
            "users": users,
            "support": round(support, 6),
            "confidence": round(confidence, 4),
            "confidence_reverse": round(confidence_reverse, 4),
            "lift": round(lift, 3),
            "relative_risk": None if np.isnan(relative_risk) else round(relative_risk, 3),
            "in_bundle": (
                catalog.at[course, "partner"],
                catalog.at[course, "item_id"],
                catalog.at[film, "partner"],
                catalog.at[film, "item_id"],
            )
            in bundled,
        }
        for film, course, users, support, confidence, confidence_reverse, lift, relative_risk in table.itertuples(
            index=False, name=None
        )
    ]
    return {"n_users": n_users, "min_pair_users": min_pair_users, "pairs": pairs}


# --------------------------------------------------------------------------
# Putting it together
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class RecommendationTraining:
    """Hold the serving model, JSON-ready params and metrics, and how many users it was fitted on."""

    model: CooccurrenceRecommender
    params: dict[str, Any]
    metrics: dict[str, Any]
    n_users: int


def recommendations_fit(
    catalog: pd.DataFrame,
    *,
    calibration: pd.DataFrame,
    holdout: pd.DataFrame,
    everything: pd.DataFrame,
    observation_end: datetime,
    data_end: datetime,
    excluded_items: Sequence[str] = (),
    bundled: set[tuple[Any, str, Any, str]] | None = None,
) -> RecommendationTraining:
    """Fit on ``calibration``, judge on ``holdout`` against popularity, and refit on ``everything`` for serving.

    The interaction frames hold user_id, item (position in ``catalog``), kind, n and
    first_at; ``excluded_items`` are item ids left out of the held-out targets (the demo's
    target course, whose buyers the propensity label plants, not their interests).
    """
    calibration_data = interaction_data(calibration, n_items=len(catalog))
    if calibration_data.weights.nnz == 0:
        raise ApplicationError(
            f"no film watches or course purchases of catalog items before {observation_end:%Y-%m-%d}: nothing to "
            "learn recommendations from; import events or choose a later --observation-end",
            code="no_data",
            field="observation_end",
        )
    calibration_model = cooccurrence_fit(calibration_data, catalog, trained_until=observation_end)
    targets = held_out_items(holdout, calibration_data, catalog, excluded_items=excluded_items)
    evaluation = recommendation_evaluation(
        calibration_model, calibration_data, targets, candidates=candidate_mask(catalog, at=observation_end)
    )

    serving_data = interaction_data(everything, n_items=len(catalog))
    serving_model = cooccurrence_fit(serving_data, catalog, trained_until=data_end)
    params = {
        "method": "item-item cosine co-occurrence over courses and films; content (category, tags) for cold start",
        "interaction_weights": INTERACTION_WEIGHTS,
        "owning_kinds": list(OWNING_KINDS),
        "min_item_users": MIN_ITEM_USERS,
        "neighbours_kept": NEIGHBOURS_KEPT,
        "cold_start_discount": COLD_START_DISCOUNT,
        "observation_end": observation_end,
        "data_end": data_end,
        "excluded_from_evaluation": list(excluded_items),
        "n_items": len(catalog),
        "n_cold_items_at_observation_end": int((~calibration_model.warm).sum()),
        "n_cold_items": int((~serving_model.warm).sum()),
    }
    overall = evaluation["overall"]
    metrics = {
        # One line each in the train command's summary.
        "hit_rate_at_10": overall.get("model", {}).get("hit_rate"),
        "popularity_hit_rate_at_10": overall.get("popularity", {}).get("hit_rate"),
        "relative_hit_rate_lift": overall.get("relative_hit_rate_lift"),
        "evaluation": evaluation,
        "n_calibration_users": len(calibration_data.user_ids),
        "associations": association_pairs(serving_data, catalog, bundled=bundled),
    }
    return RecommendationTraining(serving_model, params, metrics, len(serving_data.user_ids))


def interaction_counts(catalog: pd.DataFrame, *, split_at: datetime, end: datetime) -> pd.DataFrame:
    """Count each user's interactions per catalog item and kind before ``end``, with the first time, in SQL.

    Rows are split at ``split_at``: ``after`` says on which side of it they lie, so one pass
    over the events gives both the calibration and the holdout. The catalog's items are
    staged in a temporary table for the database to join the events to.
    """
    items = pd.DataFrame(
        {
            "domain": catalog["kind"].to_numpy(),
            "partner_id": catalog["partner"].to_numpy(dtype=np.int64),
            "item_id": catalog["item_id"].to_numpy(),
            "item": np.arange(len(catalog), dtype=np.int64),
        }
    )
    frames = []
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS catalog_items")
        cursor.execute(
            "CREATE TEMPORARY TABLE catalog_items "
            "(domain varchar(8), partner_id bigint, item_id varchar(64), item bigint)"
        )
        bulk_insert_frame(cursor, "catalog_items", items)
        if connection.vendor == "postgresql":
            cursor.execute("ANALYZE catalog_items")
        for domain, kinds in ((FILM, ("film_watch",)), (COURSE, ("course_purchase", "course_view"))):
            sql = (
                f"SELECT e.user_id, i.item, e.kind, CASE WHEN e.occurred_at < %s THEN 0 ELSE 1 END AS after, "
                f"COUNT(*) AS n, {sql_time('MIN(e.occurred_at)')} AS first_at "
                f"FROM {BehaviorEvent._meta.db_table} e JOIN catalog_items i "
                f"ON i.domain = %s AND i.partner_id = e.partner_id AND i.item_id = e.item_id "
                f"WHERE e.kind IN ({', '.join(['%s'] * len(kinds))}) AND e.occurred_at < %s "
                f"GROUP BY e.user_id, i.item, e.kind, after"
            )
            params = [
                connection.ops.adapt_datetimefield_value(split_at),
                domain,
                *kinds,
                connection.ops.adapt_datetimefield_value(end),
            ]
            frames.append(fetch_frame(sql, params, text=("kind",)))
        cursor.execute("DROP TABLE catalog_items")
    counts = pd.concat(frames, ignore_index=True)
    return pd.DataFrame(
        {
            "user_id": counts["user_id"].astype(np.int64),
            "item": counts["item"].astype(np.int64),
            "kind": counts["kind"].astype(str),
            "after": counts["after"].astype(bool),
            "n": counts["n"].astype(np.int64),
            "first_at": utc_series(counts["first_at"]),
        }
    )


def train_recommendations(
    *,
    catalog: pd.DataFrame,
    bundled: set[tuple[Any, str, Any, str]] | None = None,
    observation_end: datetime | None = None,
    data_end: datetime | None = None,
    excluded_items: Sequence[str] = (),
    activate: bool = True,
) -> ModelRun:
    """Fit the cross-domain recommender, judge it against popularity after the observation end, and store it as a run.

    ``catalog`` holds every course and film (``CATALOG_COLUMNS``, one row per item, in a fixed
    order) and ``bundled`` the (course partner, sku, film partner, film id) sold together in a
    bundle; the catalog's owner reads both and passes them in.

    The defaults follow the lifetime-value training: the observation end 13 weeks before now,
    the held-out period from there to ``data_end`` (default: now); the stored model is refitted
    on all of it. ``excluded_items`` are left out of the held-out targets.
    """
    now = timezone.now()
    observation_end = as_utc(observation_end) if observation_end else default_observation_end(now=now)
    data_end = max(as_utc(data_end) if data_end else now, observation_end)
    if catalog.empty:
        raise ApplicationError(
            "the catalog has no courses or films to recommend; add them first", code="no_data", field="model"
        )
    counts = interaction_counts(catalog, split_at=observation_end, end=data_end)
    everything = counts.groupby(["user_id", "item", "kind"], as_index=False, sort=False).agg(
        n=("n", "sum"), first_at=("first_at", "min")
    )
    training = recommendations_fit(
        catalog,
        calibration=counts[~counts["after"]],
        holdout=counts[counts["after"]],
        everything=everything,
        observation_end=observation_end,
        data_end=data_end,
        excluded_items=tuple(excluded_items),
        bundled=bundled,
    )
    return model_run_save(
        model=ModelRun.Model.RECOMMENDATIONS,
        params=json_safe(training.params),
        metrics=json_safe(training.metrics),
        n_train=training.n_users,
        artifact=training.model,
        data_end=data_end,
        activate=activate,
    )


def active_pairs(metrics: Mapping[str, Any], *, order: str = "-lift") -> list[dict[str, Any]]:
    """Return a run's association pairs sorted by one of their columns (``-`` in front: descending), blanks last."""
    pairs = list(metrics.get("associations", {}).get("pairs", []))
    column = order.lstrip("-")
    if pairs and column not in pairs[0]:
        raise ApplicationError(f"cannot sort pairs by {column!r}", field="o")
    known = sorted(
        (pair for pair in pairs if pair[column] is not None),
        key=lambda pair: pair[column],
        reverse=order.startswith("-"),
    )
    return known + [pair for pair in pairs if pair[column] is None]
