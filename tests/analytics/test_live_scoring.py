"""The live path scores a few scattered users exactly as the batch scoring scores them in its chunks.

The live path's users are a few hundred scattered over every id; the churn and CLV scorers read
those users' own events (not their id range, which would be every user's), and the stale-score
delete probes each user. What a manager sees must not depend on which path scored a user.
"""

import io

import numpy as np
import pytest
from django.core.management import call_command
from django.utils import timezone

from analytics.models import EndUser, ModelRun, UserScore
from analytics.services.scoring import score_chunk, score_users
from crossmkt_site.bulk import sparse_ids
from demo.comparison import truth_time
from tests.demo.support import loaded_truth

SEED = 31
DATABASE_USERS = 3_000
MODELS = ("propensity", "churn", "clv")


def _scores(model: str, user_ids: list[int]) -> dict[int, tuple]:
    rows = UserScore.objects.filter(model=model, user_id__in=user_ids).values_list("user_id", "score", "value", "label")
    return {user_id: (score, value, label) for user_id, score, value, label in rows}


def _assert_same(got: dict[int, tuple], expected: dict[int, tuple], model: str) -> None:
    """The same users with the same value and label, and the same score to the last few bits (the model's
    arithmetic runs over matrices of another size)."""
    assert got.keys() == expected.keys(), model
    for user_id, (score, value, label) in expected.items():
        assert got[user_id][1:] == (value, label), (model, user_id)
        if score is None:
            assert got[user_id][0] is None, (model, user_id)
        else:
            assert got[user_id][0] == pytest.approx(score, rel=1e-12, abs=1e-15), (model, user_id)


@pytest.mark.django_db
def test_scattered_users_get_the_scores_their_batch_chunk_gives_them(demo_world):
    # given: the three live models trained on the demo world and every user scored in one batch chunk
    truth = loaded_truth()
    for model in MODELS:
        end = truth_time(truth["propensity"]["observation_end"]) if model == "propensity" else None
        options = ["--observation-end", end.isoformat()] if end else []
        call_command("train", "--model", model, *options, stdout=io.StringIO())
    assert ModelRun.objects.filter(model__in=MODELS, is_active=True).count() == len(MODELS)
    ids = sorted(EndUser.objects.values_list("pk", flat=True))
    as_of = timezone.now()
    for model in MODELS:
        score_chunk(model=model, id_range=(ids[0], ids[-1] + 1), as_of=as_of)
    batch = {model: _scores(model, ids) for model in MODELS}

    # when: 150 users spread over the whole id range are scored as the live path scores them (read id by id)
    scattered = [int(pk) for pk in np.array(ids)[np.linspace(0, len(ids) - 1, 150).astype(int)]]
    assert sparse_ids(scattered) == scattered
    UserScore.objects.filter(user_id__in=scattered).delete()
    counts = score_users(user_ids=scattered, as_of=as_of, models=MODELS)

    # then: each model gives them the batch's scores, members and buyers among them, and nobody else's changed
    for model in MODELS:
        live = _scores(model, scattered)
        expected = {user_id: batch[model][user_id] for user_id in scattered if user_id in batch[model]}
        assert counts[model] == len(live)
        _assert_same(live, expected, model)
        _assert_same(_scores(model, ids), batch[model], model)
    assert len(_scores("churn", scattered)) >= 5 and len(_scores("clv", scattered)) >= 5
