"""The API answers in English, every message of a response, whatever language the client or the site prefers."""

import pytest

from .conftest import client_with_key

pytestmark = pytest.mark.django_db

ASKING = [
    pytest.param({}, id="the site's default (zh-hans)"),
    pytest.param({"HTTP_ACCEPT_LANGUAGE": "zh-CN,zh;q=0.9"}, id="Accept-Language zh"),
]


@pytest.mark.parametrize("asking", ASKING)
def test_drf_validation_messages_are_english_like_ours(ours, asking):
    # when a redemption lacks its order amount and has a bad item id, from a client preferring Chinese
    response = ours.client.post(
        f"/api/v1/offers/{ours.offer.code}/redeem/", {"item_id": 7}, format="json", HTTP_IDEMPOTENCY_KEY="k1", **asking
    )

    # then every message in the one response is English, and the response says so
    assert response.status_code == 400
    assert response["Content-Language"] == "en"
    messages = {error["field"]: error["message"] for error in response.json()["errors"]}
    assert messages["order_amount"] == "This field is required."
    assert all(message.isascii() for message in messages.values()), messages


@pytest.mark.parametrize("asking", ASKING)
def test_authentication_and_throttling_messages_are_english(ours, asking):
    missing = client_with_key(None).get("/api/v1/deals/", **asking)
    assert missing.status_code == 401
    assert missing.json()["errors"][0]["message"] == "Authentication credentials were not provided."
    unknown = client_with_key(None).get("/api/v1/nowhere/", **asking)
    assert unknown.status_code == 404 and unknown["Content-Language"] == "en"


def test_the_admin_keeps_its_own_language(client):
    page = client.get("/admin/login/", HTTP_ACCEPT_LANGUAGE="zh-CN")
    assert page.status_code == 200
    assert page["Content-Language"] == "zh-hans"
    assert "登录" in page.content.decode()
