"""The live path run in process (eager tasks, as `make run` does): posted events reach offers by themselves."""

from collections.abc import Sequence
from datetime import timedelta
from decimal import Decimal

import numpy as np
import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from analytics.models import EndUser, PendingUser, UserFeatures, UserScore
from analytics.services.ingest import events_ingest, validate_events
from analytics.services.live import pending_users_record
from analytics.services.registry import model_run_save
from analytics.tasks import refresh_features_and_scores
from campaigns.models import Campaign, CampaignAssignment, Offer
from campaigns.services.campaign_planning import holdout_draw
from campaigns.services.live import continuous_sweep, live_drain
from campaigns.services.partners import partner_api_key_create
from tests.factories import CampaignFactory, EndUserFactory, PartnerFactory, RuleFactory

from .scorers import BrokenScorer, WatchPropensity

# Real commits: the live path starts when a batch commits, as it does in production.
pytestmark = pytest.mark.django_db(transaction=True)


class World:
    def __init__(self, *, reach=Campaign.Reach.CONTINUOUS, condition=None, holdout_share="0.000", budget="1000.00"):
        self.partner = PartnerFactory.create(slug="zhixue")
        _key, raw = partner_api_key_create(partner=self.partner, name="tests")
        self.client = APIClient()
        self.client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
        self.campaign = CampaignFactory.create(
            slug="watchers", owner=self.partner, reach=reach, holdout_share=Decimal(holdout_share), budget=budget
        )
        RuleFactory.create(
            campaign=self.campaign,
            name="three films",
            condition=condition or {"field": "watching_count", "op": ">=", "value": 3},
            amount_off=Decimal("20.00"),
            cost=Decimal("20.00"),
        )
        self.sent = 0

    def user(self, external_id: str) -> EndUser:
        """A user the partner registered with marketing consent, with no events yet."""
        return EndUserFactory.create(external_id=external_id, home_partner=self.partner)

    def watches(self, external_id: str, count: int, *, first: int = 0) -> list[dict]:
        moment = timezone.now() - timedelta(hours=1)
        return [
            {
                "event_id": f"{external_id}-w{n}",
                "user_id": external_id,
                "kind": "film_watch",
                "item_id": "F00042",
                "amount": "0",
                "occurred_at": (moment + timedelta(minutes=n)).isoformat(),
            }
            for n in range(first, first + count)
        ]

    def post(self, items: list[dict]) -> dict:
        response = self.client.post("/api/v1/events/", {"events": items}, format="json")
        assert response.status_code == 200, response.content
        return response.json()

    def offers_of(self, external_id: str) -> list[dict]:
        response = self.client.get(f"/api/v1/users/{external_id}/offers/")
        assert response.status_code == 200, response.content
        return response.json()["offers"]


def test_events_that_make_a_continuous_rule_true_bring_the_offer_with_no_command_run():
    # given a running continuous campaign for users who watched three films, and a user who watched none
    world = World()
    world.user("u-new")

    # when the partner posts two watches, then a third
    world.post(world.watches("u-new", 2))
    assert world.offers_of("u-new") == []
    before = timezone.now()
    world.post(world.watches("u-new", 1, first=2))

    # then the user's offer is there, nothing is pending, and the offer says when its events were accepted
    offers = world.offers_of("u-new")
    assert [offer["campaign"] for offer in offers] == ["watchers"]
    offer = Offer.objects.get(user__external_id="u-new")
    assert offer.touched_at is not None and before <= offer.touched_at <= offer.issued_at
    assert not PendingUser.objects.exists()
    assert UserFeatures.objects.get(user__external_id="u-new").watching_count == 3

    # when the same batch is posted again (a retry)
    again = world.post(world.watches("u-new", 1, first=2))

    # then nothing is stored and nothing more issued
    assert again["accepted"] == 0
    assert Offer.objects.count() == 1 and Campaign.objects.get().issued_count == 1


def test_a_held_out_user_gets_nothing_and_is_recorded_as_holdout():
    # given a continuous campaign holding out half its users, and users the draw puts on either side
    world = World(holdout_share="0.500")
    users = [world.user(f"u{n:03d}") for n in range(12)]
    draws = holdout_draw(world.campaign, np.array([user.pk for user in users]))
    held = [user for user, draw in zip(users, draws, strict=True) if draw < 0.5]
    treated = [user for user, draw in zip(users, draws, strict=True) if draw >= 0.5]
    assert held and treated

    # when each crosses the threshold
    world.post([item for user in users for item in world.watches(user.external_id, 3)])

    # then the held-out users have no offer and an assignment in the holdout arm; the others have their offer
    for user in held:
        assert world.offers_of(user.external_id) == []
        assert CampaignAssignment.objects.get(campaign=world.campaign, user=user).arm == CampaignAssignment.HOLDOUT
    for user in treated:
        assert len(world.offers_of(user.external_id)) == 1


def test_a_campaign_that_reaches_once_is_not_reached_by_the_live_path():
    # given a running campaign whose reach is once
    world = World(reach=Campaign.Reach.ONCE)
    world.user("u1")

    # when a user's events make its rule true
    world.post(world.watches("u1", 3))

    # then nothing is issued until someone runs it, but the user's features are fresh
    assert not Offer.objects.exists()
    assert UserFeatures.objects.get(user__external_id="u1").watching_count == 3


def test_a_score_rule_decides_on_a_score_computed_after_the_users_latest_event():
    # given a continuous campaign for likely buyers, and a propensity model on films watched
    world = World(condition={"field": "propensity", "op": ">=", "value": 0.3})
    run = model_run_save(model="propensity", params={}, metrics={}, n_train=0, artifact=WatchPropensity())
    user = world.user("u1")

    # when three watches arrive
    world.post(world.watches("u1", 3))

    # then the user was scored after them, with the active run, and got the offer
    score = UserScore.objects.get(user=user, model="propensity")
    assert score.run == run and score.score == pytest.approx(0.3)
    latest = user.events.order_by("-received_at").first()
    assert latest is not None and score.scored_at >= latest.received_at
    assert len(world.offers_of("u1")) == 1


def stage(partner, external_id: str, count: int):
    moment = (timezone.now() - timedelta(hours=1)).isoformat()
    columns: dict[str, Sequence[str]] = {
        "event_id": [f"{external_id}-x{n}" for n in range(count)],
        "user_id": [external_id] * count,
        "partner": [partner.slug] * count,
        "kind": ["film_watch"] * count,
        "item_id": ["F1"] * count,
        "amount": ["0"] * count,
        "occurred_at": [moment] * count,
    }
    staged, rejected = validate_events(
        columns, list(range(count)), partner_ids={partner.slug: partner.pk}, now=timezone.now(), unit="index"
    )
    assert not rejected
    return staged


def test_a_sweep_leaves_users_with_unevaluated_events_to_the_live_path():
    # given a continuous campaign on propensity, and a user whose stored score (0.9) predates an event
    # accepted but not evaluated yet (the drain it queued has not run)
    world = World(condition={"field": "propensity", "op": ">=", "value": 0.3})
    run = model_run_save(model="propensity", params={}, metrics={}, n_train=0, artifact=WatchPropensity())
    user = world.user("u1")
    UserScore.objects.create(
        user=user, model="propensity", run=run, score=0.9, scored_at=timezone.now() - timedelta(days=1)
    )
    events_ingest(stage(world.partner, "u1", 1))
    assert PendingUser.objects.filter(user=user).exists()

    # when the continuous campaigns are swept
    continuous_sweep()

    # then the stale score decided nothing
    assert not Offer.objects.exists() and not CampaignAssignment.objects.exists()

    # when the live path drains the user
    result = live_drain()

    # then the decision is on the fresh score (one film: 0.1), so no offer; and nothing is pending
    assert result.users == 1 and result.issued == 0
    assert UserScore.objects.get(user=user, model="propensity").score == pytest.approx(0.1)
    assert not Offer.objects.exists() and not PendingUser.objects.exists()


def test_a_failed_evaluation_leaves_the_users_pending_and_a_later_drain_issues():
    # given a continuous campaign on propensity whose model fails to score
    world = World(condition={"field": "propensity", "op": ">=", "value": 0.3})
    model_run_save(model="propensity", params={}, metrics={}, n_train=0, artifact=BrokenScorer())
    world.user("u1")
    events_ingest(stage(world.partner, "u1", 3))

    # when the live path drains
    with pytest.raises(RuntimeError, match="cannot score"):
        live_drain()

    # then nothing of the drain stayed: the user is still pending, with no features, scores or offers
    assert PendingUser.objects.filter(user__external_id="u1").exists()
    assert not UserFeatures.objects.exists() and not UserScore.objects.exists() and not Offer.objects.exists()

    # when a working model is active and the drain runs again
    model_run_save(model="propensity", params={}, metrics={}, n_train=0, artifact=WatchPropensity())
    live_drain()

    # then the user got the offer and nothing is pending
    assert Offer.objects.filter(user__external_id="u1").count() == 1
    assert not PendingUser.objects.exists()


def test_a_burst_for_the_same_users_leaves_one_pending_row_each():
    # given two users
    partner = PartnerFactory.create()
    first, second = EndUserFactory.create(home_partner=partner), EndUserFactory.create(home_partner=partner)
    start = timezone.now()

    # when five batches touch them
    for n in range(5):
        pending_users_record(user_ids=[first.pk, second.pk], now=start + timedelta(seconds=n))

    # then each has one row, keeping the first touch and the last, and one drain evaluates each once
    rows = {row.user_id: row for row in PendingUser.objects.all()}
    assert set(rows) == {first.pk, second.pk}
    assert rows[first.pk].first_touched_at == start
    assert rows[first.pk].last_touched_at == start + timedelta(seconds=4)
    assert rows[first.pk].touches == 5
    assert live_drain().users == 2
    assert live_drain().users == 0


def test_the_budget_ends_a_continuous_campaign_and_users_stay_reachable_for_none():
    # given a continuous campaign whose budget fits two offers
    world = World(budget="40.00")
    for n in range(4):
        world.user(f"u{n}")

    # when four users cross the threshold in separate batches
    for n in range(4):
        world.post(world.watches(f"u{n}", 3))

    # then two got offers, the budget is spent and not exceeded, and nothing is pending
    campaign = Campaign.objects.get()
    assert Offer.objects.count() == 2 and campaign.spent == Decimal("40.00")
    assert not PendingUser.objects.exists()


def test_run_campaign_continuous_switches_the_reach_and_makes_the_first_pass(capsys):
    # given a running campaign reaching once, with a user who already qualifies
    world = World(reach=Campaign.Reach.ONCE)
    world.user("u1")
    world.post(world.watches("u1", 3))
    assert not Offer.objects.exists()

    # when the manager makes it continuous
    call_command("run_campaign", "watchers", "--continuous", "--no-progress")

    # then the reach is continuous, the first pass issued the waiting user's offer, and new users come by themselves
    assert Campaign.objects.get().reach == Campaign.Reach.CONTINUOUS
    assert Offer.objects.filter(user__external_id="u1").count() == 1
    assert "reach is continuous" in capsys.readouterr().out
    world.user("u2")
    world.post(world.watches("u2", 3))
    assert Offer.objects.filter(user__external_id="u2").count() == 1


def test_an_optimising_campaign_cannot_reach_continuously():
    world = World(reach=Campaign.Reach.ONCE)
    Campaign.objects.filter(pk=world.campaign.pk).update(mode=Campaign.Mode.OPTIMISE)
    with pytest.raises(CommandError, match="only a rules-mode campaign"):
        call_command("run_campaign", "watchers", "--continuous", "--no-progress")


def test_beat_schedules_the_drain_the_sweep_the_nightly_refresh_and_weekly_retraining():
    tasks = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert {
        "campaigns.tasks.drain_pending_users",
        "campaigns.tasks.sweep_continuous_campaigns",
        "analytics.tasks.refresh_features_and_scores",
        "campaigns.tasks.retrain_models",
    } <= tasks
    assert settings.CELERY_BEAT_SCHEDULER == "django_celery_beat.schedulers:DatabaseScheduler"


def campaign_form(campaign: Campaign, **changes) -> dict:
    zone = timezone.get_current_timezone()
    starts, ends = campaign.starts_at.astimezone(zone), campaign.ends_at.astimezone(zone)
    return {
        "slug": campaign.slug,
        "name": campaign.name,
        "kind": campaign.kind,
        "mode": campaign.mode,
        "reach": campaign.reach,
        "status": campaign.status,
        "owner": campaign.owner_id,
        "starts_at_0": f"{starts:%Y-%m-%d}",
        "starts_at_1": f"{starts:%H:%M:%S}",
        "ends_at_0": f"{ends:%Y-%m-%d}",
        "ends_at_1": f"{ends:%H:%M:%S}",
        "timezone": "Asia/Shanghai",
        "budget": "1000.00",
        "per_user_limit": 1,
        "holdout_share": "0.100",
        "offer_valid_days": 14,
        "conversion_window_days": 14,
        "rules-TOTAL_FORMS": 0,
        "rules-INITIAL_FORMS": 0,
        "rules-MIN_NUM_FORMS": 0,
        "rules-MAX_NUM_FORMS": 1000,
        **changes,
    }


def test_a_manager_sets_the_reach_in_the_admin_and_optimise_mode_cannot_be_continuous(manager_client):
    # given a campaign reaching once
    world = World(reach=Campaign.Reach.ONCE)
    url = reverse("admin:campaigns_campaign_change", args=[world.campaign.pk])

    # when the manager makes it continuous in the admin
    response = manager_client.post(url, campaign_form(world.campaign, reach="continuous"))

    # then it is, and the changelist shows and filters by reach
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Campaign.objects.get().reach == Campaign.Reach.CONTINUOUS
    listing = manager_client.get(reverse("admin:campaigns_campaign_changelist") + "?reach__exact=continuous")
    assert world.campaign.slug in listing.content.decode()

    # when the manager also switches it to optimise mode
    refused = manager_client.post(url, campaign_form(Campaign.objects.get(), mode="optimise"))

    # then the form says no and nothing changes
    assert refused.status_code == 200
    assert "持续触达仅适用于“规则决定”投放模式" in refused.content.decode()
    assert Campaign.objects.get().mode == Campaign.Mode.RULES


def test_the_nightly_refresh_rebuilds_and_scores_everyone_with_the_active_runs():
    # given events stored by a bulk load (nothing pending, no features) and an active propensity model
    partner = PartnerFactory.create(slug="zhixue")
    user = EndUserFactory.create(external_id="u1", home_partner=partner)
    events_ingest(stage(partner, "u1", 4), record_touched=False)
    run = model_run_save(model="propensity", params={}, metrics={}, n_train=0, artifact=WatchPropensity())
    assert not PendingUser.objects.exists() and not UserFeatures.objects.exists()

    # when beat's nightly task runs
    result = refresh_features_and_scores.delay().get()

    # then the user's features are rebuilt and scored by the active run
    assert result["features"] == 1
    assert UserFeatures.objects.get(user=user).watching_count == 4
    score = UserScore.objects.get(user=user, model="propensity")
    assert score.run == run and score.score == pytest.approx(0.4)
