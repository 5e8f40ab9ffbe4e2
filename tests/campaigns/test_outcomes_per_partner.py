"""Imported outcomes name the person their campaign's partner means: the same id at another partner is someone else."""

import io
from importlib import import_module

import pytest
from django.apps import apps
from django.core.management import CommandError, call_command

from analytics.models import EndUser, ExperimentOutcome
from campaigns.models import Campaign
from campaigns.selectors.uplift_experiments import uplift_experiments
from campaigns.services.erasure import user_erase
from tests.factories import CampaignFactory, EndUserFactory, PartnerFactory, UserLinkFactory, end_users_of

pytestmark = pytest.mark.django_db

IDS = [f"u{n}" for n in range(1, 21)]


@pytest.fixture
def world():
    """Partners A and B, each with its own users u1 to u20 (B's created last), and A's link to one of B's people."""
    a = PartnerFactory.create(slug="partner-a")
    b = PartnerFactory.create(slug="partner-b")
    a_users = {user.external_id: user.pk for user in end_users_of(a, IDS)}
    b_users = {user.external_id: user.pk for user in end_users_of(b, IDS)}
    shared = EndUserFactory.create(external_id="b-shared", home_partner=b, data_sharing_consent=True)
    UserLinkFactory.create(user=shared, partner=a, external_id="a-knows-shared")
    EndUserFactory.create(external_id="only-b", home_partner=b)
    return {"a": a, "b": b, "a_users": a_users, "b_users": b_users, "shared": shared}


def outcome_file(tmp_path, rows: list[str]):
    path = tmp_path / "outcomes.csv"
    path.write_text("\n".join(["user_id,arm,converted,revenue", *rows]), encoding="utf-8")
    return path


def run(path, *args) -> str:
    out = io.StringIO()
    call_command("import_outcomes", path, *args, "--no-progress", stdout=out)
    return out.getvalue()


def test_outcomes_attach_to_the_campaign_partners_users_and_ids_it_does_not_know_are_rejected_by_line(tmp_path, world):
    # given an outcome file of partner A's experiment: A's u1, A's id for B's consenting person, and B's own id
    path = outcome_file(tmp_path, ["u1,coupon,1,50.00", "a-knows-shared,holdout,0,0", "only-b,coupon,1,9.00"])

    # when A imports it into a new campaign
    out = run(path, "--campaign", "a-pilot", "--partner", "partner-a")

    # then u1 is A's u1 (never B's), the linked id is the shared person, and B's id is rejected by its line
    assert "2 outcomes imported, 0 duplicates skipped, 1 rejected" in out, out
    assert "line 4: user_id: not an id partner 'partner-a' knows anyone by" in out
    attached = dict(ExperimentOutcome.objects.values_list("user_ref", "user_id"))
    assert attached == {"u1": world["a_users"]["u1"], "a-knows-shared": world["shared"].pk}
    assert Campaign.objects.get(slug="a-pilot").owner == world["a"]


def test_an_owned_campaign_resolves_by_its_owner_and_refuses_another_partner(tmp_path, world):
    CampaignFactory.create(slug="b-test", kind=Campaign.Kind.EXTERNAL, owner=world["b"])
    path = outcome_file(tmp_path, ["u1,holdout,0,0", "only-b,coupon,1,9.00"])

    # without --partner the owner's ids are meant
    assert "2 outcomes imported" in run(path, "--campaign", "b-test")
    assert set(ExperimentOutcome.objects.values_list("user_id", flat=True)) == {
        world["b_users"]["u1"],
        EndUser.objects.get(external_id="only-b").pk,
    }
    # and naming another partner is refused before anything is read
    with pytest.raises(CommandError, match="belongs to partner 'partner-b', not 'partner-a'"):
        run(path, "--campaign", "b-test", "--partner", "partner-a")


def test_a_campaign_without_an_owner_needs_the_partner_named(tmp_path, world):
    path = outcome_file(tmp_path, ["u1,holdout,0,0"])
    with pytest.raises(CommandError, match="--partner SLUG"):
        run(path, "--campaign", "nobodys")
    CampaignFactory.create(slug="legacy", kind=Campaign.Kind.EXTERNAL, owner=None)
    with pytest.raises(CommandError, match="--partner SLUG"):
        run(path, "--campaign", "legacy")
    assert not ExperimentOutcome.objects.exists()
    # naming it makes that partner the owner
    run(path, "--campaign", "legacy", "--partner", "partner-a")
    assert Campaign.objects.get(slug="legacy").owner == world["a"]
    assert ExperimentOutcome.objects.get().user_id == world["a_users"]["u1"]


def test_uplift_training_takes_the_campaign_partners_users_never_anothers(tmp_path, world):
    # given partner A's imported experiment over u1..u20 (B has users of the same ids)
    rows = [f"{user_id},{'holdout' if n % 2 else 'coupon'},{n % 3 == 0:d},0" for n, user_id in enumerate(IDS)]
    run(outcome_file(tmp_path, rows), "--campaign", "a-uplift", "--partner", "partner-a")

    # when the uplift selector builds its training rows
    experiments, skipped = uplift_experiments(campaigns=[Campaign.objects.get(slug="a-uplift")])

    # then every row is one of A's users, each once
    assert skipped == []
    [experiment] = experiments
    assert sorted(experiment.rows["user_id"].tolist()) == sorted(world["a_users"].values())


def test_erasing_a_partners_user_leaves_another_partners_outcome_of_the_same_id(tmp_path, world):
    # given A's experiment with A's u1, and B's u1 (a different person)
    run(outcome_file(tmp_path, ["u1,coupon,1,50.00"]), "--campaign", "a-erase", "--partner", "partner-a")

    # when B erases its u1
    user_erase(partner=world["b"], external_id="u1")

    # then A's u1 keeps its outcome under its id
    outcome = ExperimentOutcome.objects.get()
    assert (outcome.user_ref, outcome.user_id) == ("u1", world["a_users"]["u1"])

    # and when A erases its u1, the row stays as an anonymous one
    user_erase(partner=world["a"], external_id="u1")
    outcome.refresh_from_db()
    assert outcome.user_ref.startswith("erased-") and outcome.revenue == 50


def test_a_linked_partners_erasure_pseudonymises_the_outcomes_it_imported_for_the_person(tmp_path, world):
    run(outcome_file(tmp_path, ["a-knows-shared,coupon,1,50.00"]), "--campaign", "a-link", "--partner", "partner-a")

    user_erase(partner=world["a"], external_id="a-knows-shared")

    outcome = ExperimentOutcome.objects.get()
    assert outcome.user_id is None and outcome.user_ref.startswith("erased-") and outcome.revenue == 50
    assert EndUser.objects.get(pk=world["shared"].pk).erased_at is None


def test_the_migration_attaches_existing_outcomes_by_their_campaigns_owner(world):
    # given outcomes imported before they named a user: one in A's campaign, one in a campaign without an owner
    owned = CampaignFactory.create(slug="a-old", kind=Campaign.Kind.EXTERNAL, owner=world["a"])
    ownerless = CampaignFactory.create(slug="old", kind=Campaign.Kind.EXTERNAL, owner=None)
    for campaign, ref in [(owned, "u1"), (owned, "a-knows-shared"), (owned, "only-b"), (ownerless, "u1")]:
        ExperimentOutcome.objects.create(campaign=campaign, user_ref=ref, arm="coupon", converted=False, revenue=0)

    import_module("analytics.migrations.0016_experiment_outcome_user").attach_users(apps, None)

    attached = {(o.campaign.slug, o.user_ref): o.user_id for o in ExperimentOutcome.objects.select_related("campaign")}
    assert attached == {
        ("a-old", "u1"): world["a_users"]["u1"],
        ("a-old", "a-knows-shared"): world["shared"].pk,
        ("a-old", "only-b"): None,
        ("old", "u1"): None,
    }
