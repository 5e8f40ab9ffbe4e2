"""The retraining quality gate: a retrained model that got worse is kept, not activated; one as good is activated.

The standard errors the gate uses are checked against simulation; the gate itself runs on a
demo world through ``manage.py train``, with a planted deterioration: the course purchases of
the label window shuffled among the users, so that the labels no longer follow the features.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from django.core.management import call_command
from django.urls import reverse
from sklearn.metrics import roc_auc_score

from analytics.models import BehaviorEvent, ModelRun
from analytics.services.features import PURCHASE
from analytics.services.quality_gate import (
    FIRST,
    FORCED,
    KEPT,
    NOT_COMPARED,
    NOT_REQUESTED,
    PASSED,
    held_out_metric,
    quality_gate_record,
)
from analytics.stats.model_quality import HeldOutMetric, auc_standard_error, gate_compare
from analytics.stats.uplift import qini_coefficient_se, uplift_curves
from demo.comparison import truth_time
from tests.demo.support import loaded_truth

SEED = 2026
DATABASE_USERS = 6_000


def test_the_auc_standard_error_is_the_spread_of_the_auc_over_many_samples():
    # given: 400 samples of 150 buyers and 600 non-buyers whose scores are binormal (true AUC about 0.76)
    rng = np.random.default_rng(7)
    n_positive, n_negative = 150, 600
    aucs = []
    for _ in range(400):
        scores = np.concatenate([rng.normal(1.0, 1.0, n_positive), rng.normal(0.0, 1.0, n_negative)])
        labels = np.concatenate([np.ones(n_positive), np.zeros(n_negative)])
        aucs.append(roc_auc_score(labels, scores))

    # when
    formula = auc_standard_error(float(np.mean(aucs)), n_positive=n_positive, n_negative=n_negative)

    # then: Hanley and McNeil's formula is within 10% of the observed spread
    assert formula == pytest.approx(np.std(aucs, ddof=1), rel=0.10)


def test_the_qini_bootstrap_standard_error_is_the_spread_of_the_qini_coefficient_over_many_samples():
    # given: users whose uplift grows with a feature the score sees with noise
    rng = np.random.default_rng(11)

    def sample(n: int = 2_000):
        feature = rng.uniform(size=n)
        treated = rng.uniform(size=n) < 0.5
        converted = rng.uniform(size=n) < 0.05 + 0.15 * feature * treated
        return feature + rng.normal(0, 0.3, n), treated, converted.astype(float)

    spread = np.std([uplift_curves(*sample()).qini_coefficient for _ in range(300)], ddof=1)

    # when: the bootstrap on single samples
    estimates = [qini_coefficient_se(*sample(), replicates=200, seed=seed) for seed in range(5)]

    # then
    assert np.mean(estimates) == pytest.approx(spread, rel=0.2)


def test_an_equally_good_retraining_is_kept_about_one_time_in_six():
    # given: 2,000 pairs of runs of the same model measured on independent held-out samples
    rng = np.random.default_rng(13)
    n_positive, n_negative = 120, 480

    def measured() -> HeldOutMetric:
        scores = np.concatenate([rng.normal(0.9, 1.0, n_positive), rng.normal(0.0, 1.0, n_negative)])
        labels = np.concatenate([np.ones(n_positive), np.zeros(n_negative)])
        auc = roc_auc_score(labels, scores)
        se = auc_standard_error(auc, n_positive=n_positive, n_negative=n_negative)
        return HeldOutMetric(name="auc", value=auc, se=se, n=n_positive + n_negative, higher_is_better=True)

    # when
    kept = np.mean([not gate_compare(measured(), measured()).passes for _ in range(2_000)])

    # then: a one-standard-error threshold on the difference keeps P(Z > 1) = 15.9% of them (README)
    assert kept == pytest.approx(0.159, abs=0.025)


def test_a_candidate_worse_beyond_the_standard_error_of_the_difference_fails_and_within_it_passes():
    active = HeldOutMetric(name="auc", value=0.75, se=0.03, n=1_000, higher_is_better=True)
    tolerance = math.sqrt(0.03**2 + 0.04**2)  # 0.05

    def candidate(value: float) -> HeldOutMetric:
        return HeldOutMetric(name="auc", value=value, se=0.04, n=800, higher_is_better=True)

    assert gate_compare(candidate(0.71), active).passes  # worse by 0.04 < 0.05
    assert not gate_compare(candidate(0.69), active).passes  # worse by 0.06 > 0.05
    assert gate_compare(candidate(0.90), active).worse_by == pytest.approx(-0.15)
    assert gate_compare(candidate(0.70), active).tolerance == pytest.approx(tolerance)
    # An error: lower is better.
    mae = HeldOutMetric(name="holdout_purchases_mae", value=1.0, se=0.01, n=500, higher_is_better=False)
    assert not gate_compare(HeldOutMetric("holdout_purchases_mae", 1.2, 0.01, 500, False), mae).passes
    assert gate_compare(HeldOutMetric("holdout_purchases_mae", 0.8, 0.01, 500, False), mae).passes


@pytest.mark.parametrize(
    ("model", "metrics", "name", "higher_is_better"),
    [
        ("propensity", {"auc": 0.7, "n_test": 400, "n_test_positive": 100}, "auc", True),
        ("propensity", {"auc": 0.7, "n_test": 400, "base_rate": 0.25}, "auc", True),
        ("churn", {"concordance": 0.66, "spells": 900, "cancelled": 300}, "concordance", True),
        (
            "clv",
            {"holdout": {"compared": True, "n_customers": 300, "bgnbd": {"purchases": {"mae": 0.8, "rmse": 1.2}}}},
            "holdout_purchases_mae",
            False,
        ),
        ("segments", {"silhouette": 0.31, "silhouette_se": 0.004, "silhouette_n": 5_000}, "silhouette", True),
        (
            "recommendations",
            {"hit_rate_at_10": 0.2, "evaluation": {"overall": {"n_users": 900}}},
            "hit_rate_at_10",
            True,
        ),
        (
            "uplift",
            {
                "selected_method": "t_learner",
                "qini_coefficient_t_learner": 0.01,
                "qini_coefficient_se": 0.003,
                "held_out_users": 3_000,
            },
            "qini_coefficient",
            True,
        ),
    ],
)
def test_every_model_kind_names_a_metric_with_a_finite_standard_error(model, metrics, name, higher_is_better):
    metric = held_out_metric(model=model, metrics=metrics)
    assert metric is not None and metric.name == name and metric.higher_is_better is higher_is_better
    assert 0 < metric.se < math.inf


def test_clvs_standard_error_is_that_of_the_mean_absolute_error():
    errors = np.random.default_rng(3).normal(0, 1.5, 400)
    metrics = {
        "holdout": {
            "compared": True,
            "n_customers": len(errors),
            "bgnbd": {"purchases": {"mae": float(np.mean(np.abs(errors))), "rmse": float(np.sqrt(np.mean(errors**2)))}},
        }
    }
    metric = held_out_metric(model="clv", metrics=metrics)
    assert metric is not None
    assert metric.se == pytest.approx(np.std(np.abs(errors), ddof=1) / np.sqrt(len(errors)))


def _run(model: str, metrics: dict, version: int = 1) -> ModelRun:
    return ModelRun(model=model, version=version, is_active=True, metrics=metrics)


def test_the_record_says_first_passed_kept_not_compared_and_not_requested():
    good = {"auc": 0.75, "n_test": 2_000, "n_test_positive": 500}
    better = {"auc": 0.78, "n_test": 2_000, "n_test_positive": 500}
    shuffled = {"auc": 0.51, "n_test": 2_000, "n_test_positive": 500}

    assert quality_gate_record(model="propensity", metrics=good, active=None, activate=True)["decision"] == FIRST
    passed = quality_gate_record(model="propensity", metrics=better, active=_run("propensity", good), activate=True)
    assert passed["decision"] == PASSED and passed["worse_by"] == pytest.approx(-0.03)
    kept = quality_gate_record(model="propensity", metrics=shuffled, active=_run("propensity", good), activate=True)
    assert kept["decision"] == KEPT and kept["active_version"] == 1
    assert kept["worse_by"] == pytest.approx(0.24) and 0 < kept["tolerance"] < 0.05
    old = _run("propensity", {"accuracy": 0.8})
    not_compared = quality_gate_record(model="propensity", metrics=good, active=old, activate=True)
    assert not_compared["decision"] == NOT_COMPARED and not_compared["reason"] == "active_has_no_metric"
    asked = quality_gate_record(model="propensity", metrics=shuffled, active=_run("propensity", good), activate=False)
    assert asked["decision"] == NOT_REQUESTED and asked["worse_by"] > 0


# -- The gate on a demo world, through manage.py train ----------------------------------------------


def _train(*options: str) -> tuple[ModelRun, str]:
    out = io.StringIO()
    end = truth_time(loaded_truth()["propensity"]["observation_end"])
    call_command("train", "--model", "propensity", "--observation-end", end.isoformat(), *options, stdout=out)
    return ModelRun.objects.filter(model="propensity").latest("version"), out.getvalue()


def _shuffle_the_label_windows_purchases() -> None:
    """Plant a worse world: hand every course purchase after the observation end to a random user."""
    end = truth_time(loaded_truth()["propensity"]["observation_end"])
    purchases = list(BehaviorEvent.objects.filter(kind=PURCHASE, occurred_at__gte=end))
    users = list(BehaviorEvent.objects.values_list("user_id", flat=True).distinct())
    rng = np.random.default_rng(5)
    for event in purchases:
        event.user_id = int(rng.choice(users))
    BehaviorEvent.objects.bulk_update(purchases, ["user_id"], batch_size=2_000)


def test_a_retraining_on_worse_data_is_kept_and_one_as_good_is_activated(demo_world, db, admin_client):
    # given: a first trained propensity model
    first, output = _train()
    assert first.is_active and first.quality_gate["decision"] == FIRST
    assert "Activated: the first run of this model." in output

    # when: retrained on the same data, it is as good
    again, output = _train()

    # then: activated
    assert again.version == 2 and again.is_active and again.quality_gate["decision"] == PASSED
    assert again.quality_gate["worse_by"] == pytest.approx(0.0, abs=1e-12)
    assert "Activated: held-out AUC" in output and "not worse" in output

    # when: retrained after the labels were shuffled
    _shuffle_the_label_windows_purchases()
    worse, output = _train()

    # then: stored, not activated; version 2 stays active; the command and the admin say why
    assert worse.version == 3 and not worse.is_active and worse.quality_gate["decision"] == KEPT
    assert worse.metrics["auc"] < 0.6 < again.metrics["auc"]
    assert worse.quality_gate["worse_by"] > 3 * worse.quality_gate["tolerance"]
    assert ModelRun.objects.get(model="propensity", is_active=True).version == 2
    assert "Kept, not activated: held-out AUC" in output and "worse by" in output
    for language, text in (("en", "Kept, not activated"), ("zh-hans", "保留，未启用")):
        admin_client.cookies["django_language"] = language
        page = admin_client.get(reverse("admin:analytics_modelrun_changelist")).content.decode()
        assert text in page
        detail = admin_client.get(reverse("admin:analytics_modelrun_change", args=[worse.pk])).content.decode()
        assert text in detail

    # when: an operator overrides the gate
    forced, output = _train("--force-activate")

    # then
    assert forced.version == 4 and forced.is_active and forced.quality_gate["decision"] == FORCED
    assert forced.quality_gate["overridden"] == KEPT
    assert "Activated by an operator over the quality gate" in output
