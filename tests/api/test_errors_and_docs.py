"""One error format for every 4xx, throttling per key, and the schema and docs served without internet."""

import re

import pytest
from django.contrib.staticfiles import finders

from campaigns.api.authentication import ApiKeyRateThrottle

from .conftest import client_with_key, error_fields

pytestmark = pytest.mark.django_db


def test_an_unknown_api_url_is_a_404_in_the_error_format(ours):
    response = ours.client.get("/api/v1/no-such-thing/")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert error_fields(response) == [(None, "not_found")]


def test_an_unsupported_method_is_a_405_in_the_error_format(ours):
    response = ours.client.put("/api/v1/events/", {}, format="json")
    assert response.status_code == 405 and "POST" in response["Allow"]
    assert error_fields(response) == [(None, "method_not_allowed")]


def test_requests_beyond_the_keys_rate_are_429_with_retry_after(ours, theirs, monkeypatch):
    # given a rate of two requests a minute per key
    monkeypatch.setattr(ApiKeyRateThrottle, "THROTTLE_RATES", {"partner_key": "2/minute"})
    assert ours.client.get("/api/v1/deals/").status_code == 200
    assert ours.client.get("/api/v1/deals/").status_code == 200

    # when a third request comes within the minute
    response = ours.client.get("/api/v1/deals/")

    # then it is refused with a hint when to retry, and another key is not held back
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    assert error_fields(response) == [(None, "throttled")]
    assert theirs.client.get("/api/v1/deals/").status_code == 200


def test_the_schema_describes_every_endpoint_and_the_api_key_scheme():
    schema = client_with_key(None).get("/api/schema/", HTTP_ACCEPT="application/json").json()
    assert schema["openapi"].startswith("3.")
    scheme = schema["components"]["securitySchemes"]["ApiKeyAuth"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "Authorization")
    assert "Api-Key <key>" in scheme["description"]
    operations = {(path, method) for path, item in schema["paths"].items() for method in item}
    assert operations == {
        ("/api/v1/events/", "post"),
        ("/api/v1/users/{user_id}/", "delete"),
        ("/api/v1/users/{user_id}/offers/", "get"),
        ("/api/v1/users/{user_id}/recommendations/", "get"),
        ("/api/v1/users/{user_id}/links/", "post"),
        ("/api/v1/users/{user_id}/links/{partner}/", "delete"),
        ("/api/v1/users/{user_id}/alliance-id/", "put"),
        ("/api/v1/offers/{code}/redeem/", "post"),
        ("/api/v1/conversions/", "post"),
        ("/api/v1/deals/", "get"),
        ("/api/v1/deals/{slug}/", "get"),
        ("/api/v1/deals/{slug}/settlement/", "get"),
        ("/api/v1/campaigns/", "get"),
        ("/api/v1/campaigns/{slug}/", "get"),
        ("/api/v1/campaigns/{slug}/report/", "get"),
    }
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            assert operation["security"] == [{"ApiKeyAuth": []}], (path, method)
            assert {"401", "429"} <= set(operation["responses"]), (path, method)
    events = schema["paths"]["/api/v1/events/"]["post"]["requestBody"]["content"]["application/json"]
    assert events["examples"], "the bulk endpoint shows an example request"


def test_the_docs_page_loads_only_our_own_static_files(client):
    page = client.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets and not any(asset.startswith(("http:", "https:", "//")) for asset in assets), assets
    scripts = [asset for asset in assets if asset.endswith(".js")]
    assert any("swagger-ui-bundle.js" in script for script in scripts)
    for asset in assets:
        if asset.startswith("/static/"):
            assert finders.find(asset.removeprefix("/static/")), f"{asset} is not among our static files"
