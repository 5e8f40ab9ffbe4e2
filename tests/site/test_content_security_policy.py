"""A Content-Security-Policy on every page; the admin, the dashboard and the API docs work under it in Chromium."""

import pytest
from django.conf import settings
from django.urls import reverse

from tests.site import test_dashboard

# The real-browser fixtures the dashboard's tests use: a headless Chromium, and a world with campaigns and deals.
chromium = test_dashboard.chromium
world = test_dashboard.world

PAGES = ["/admin/login/", "/api/docs/", "/api/docs/?script=", "/api/v1/deals/"]


def directives(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {part.split()[0]: part.split()[1:] for part in header.split(";") if part.strip()}


@pytest.mark.django_db
@pytest.mark.parametrize("path", PAGES)
def test_every_page_carries_a_policy_allowing_only_our_own_scripts(client, path):
    response = client.get(path)

    assert response.status_code in (200, 401), response.content[:200]
    policy = directives(response)
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]


@pytest.mark.django_db
def test_the_dashboard_and_admin_forms_carry_the_policy(manager_client):
    for path in [reverse("admin-dashboard"), reverse("admin:index"), reverse("admin:campaigns_campaign_add")]:
        response = manager_client.get(path)
        assert response.status_code == 200
        assert directives(response)["script-src"] == ["'self'"], path


# --------------------------------------------------------------------------- a real browser

# An injected inline script: the policy must stop it from running (an XSS would look like this).
INJECT = """
    window.__injected = false;
    const script = document.createElement('script');
    script.textContent = 'window.__injected = true;';
    document.head.appendChild(script);
    return window.__injected;
"""


def _policy_problems(driver) -> list[dict]:
    # Every console entry that is a CSP refusal, or any other error the page made (favicon aside: the admin has none).
    return [
        entry
        for entry in driver.get_log("browser")
        if ("Content Security Policy" in entry["message"] or entry["level"] == "SEVERE")
        and "/favicon.ico " not in entry["message"]
    ]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_chromium_shows_admin_dashboard_and_docs_under_the_policy_with_no_violation(
    chromium, live_server, world, manager, client
):
    # given a logged-in manager in the browser
    client.force_login(manager)
    chromium.get(f"{live_server.url}/admin/login/")
    assert _policy_problems(chromium) == []
    chromium.add_cookie(
        {"name": settings.SESSION_COOKIE_NAME, "value": client.cookies[settings.SESSION_COOKIE_NAME].value, "path": "/"}
    )
    campaigns, _deals = world
    campaign = campaigns[0]
    pages = {
        "admin index": reverse("admin:index"),
        "dashboard": reverse("admin-dashboard"),
        "campaign list": reverse("admin:campaigns_campaign_changelist"),
        "campaign form": reverse("admin:campaigns_campaign_change", args=[campaign.pk]),
        "API docs": "/api/docs/",
    }
    for name, path in pages.items():
        # when the page is opened
        chromium.get(f"{live_server.url}{path}")
        if name == "API docs":
            # Swagger UI draws itself from our static files and the schema: wait for the operations.
            chromium.implicitly_wait(20)
            operations = chromium.find_elements("css selector", ".opblock")
            chromium.implicitly_wait(0)
            assert len(operations) >= 10, name
        # then it drew with nothing refused or broken, and an injected inline script does not run
        assert _policy_problems(chromium) == [], name
        assert chromium.execute_script(INJECT) is False, name
        refused = _policy_problems(chromium)
        assert refused and "Content Security Policy" in refused[0]["message"], name

    # the dashboard's charts still have their layout and the docs their style
    chromium.get(f"{live_server.url}{reverse('admin-dashboard')}")
    widths = chromium.execute_script(
        "return Array.from(document.querySelectorAll('svg.chart')).map(svg => svg.getBoundingClientRect().width)"
    )
    assert widths and all(200 < width <= 720 for width in widths), widths
    grid = chromium.execute_script("return getComputedStyle(document.querySelector('.kpi-cards')).display")
    assert grid == "grid"
