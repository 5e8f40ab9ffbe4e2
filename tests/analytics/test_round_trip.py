"""The demo world exported to the two CSV formats and imported into an empty database gives identical features."""

import io

import pandas as pd
import pytest
from django.core.management import call_command

from analytics.models import BehaviorEvent, EndUser, UserFeatures, UserLink
from analytics.services.features import features_build
from campaigns.models import DealGrant
from demo.services.world_load import demo_world_load
from demo.world.export import export_demo_csvs

pytestmark = pytest.mark.django_db

USER_COLUMNS = [
    "external_id",
    "home_partner__slug",
    "age",
    "education",
    "occupation",
    "gender",
    "acquisition_channel",
    "marketing_consent",
    "data_sharing_consent",
    "alliance_id",
    "signed_up_at",
]
FEATURE_COLUMNS = [field.name for field in UserFeatures._meta.fields if field.name not in ("user", "built_at")]


def snapshot() -> tuple[pd.DataFrame, pd.DataFrame, set]:
    users = pd.DataFrame(EndUser.objects.values(*USER_COLUMNS)).set_index("external_id").sort_index()
    features = pd.DataFrame(UserFeatures.objects.values("user__external_id", *FEATURE_COLUMNS))
    links = set(UserLink.objects.values_list("user__external_id", "partner__slug", "external_id"))
    return users, features.set_index("user__external_id").sort_index(), links


def test_export_then_import_gives_identical_users_and_features(tmp_path):
    # given the demo world loaded directly, with its features
    demo_world_load(n_users=1500, seed=7)
    features_build(full=True)
    users_before, features_before, links_before = snapshot()
    # (customers of several partners are shared with them, through their alliance id)
    assert users_before["alliance_id"].notna().any() and links_before
    events_before = BehaviorEvent.objects.count()

    # when the same world is exported to CSV and imported into a database without users
    export_demo_csvs(tmp_path, n_users=1500, seed=7)
    DealGrant.objects.all().delete()
    EndUser.objects.all().delete()
    assert not BehaviorEvent.objects.exists()
    out = io.StringIO()
    call_command("import_behavior", tmp_path / "behavior.csv", "--no-progress", stdout=out)
    call_command("import_events", tmp_path / "events.csv", "--no-progress", stdout=out)
    features_build(full=True)

    # then users (with consents and alliance ids), links, events and features are the same
    users_after, features_after, links_after = snapshot()
    assert " 0 rejected" in out.getvalue()
    assert BehaviorEvent.objects.count() == events_before
    pd.testing.assert_frame_equal(users_after, users_before)
    pd.testing.assert_frame_equal(features_after, features_before)
    assert links_after == links_before
