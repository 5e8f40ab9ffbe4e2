"""Fixtures shared across test areas: a logged-in partnership manager and scripted partner endpoints."""

import ssl
from collections.abc import Callable, Iterator

import pytest
from django.test import Client

from tests.campaigns.partner_endpoint import PartnerEndpoint, Reply


@pytest.fixture
def manager(django_user_model):
    """Return a superuser, as a partnership manager signs in to the admin."""
    return django_user_model.objects.create_superuser("manager", "m@example.com", "a-long-password-1")


@pytest.fixture
def manager_client(client: Client, manager) -> Client:
    """Return a test client logged in as the manager."""
    client.force_login(manager)
    return client


@pytest.fixture
def endpoint(settings) -> Iterator[Callable[..., PartnerEndpoint]]:
    """Start partner endpoints that answer from a script of replies; all are stopped after the test.

    They listen on 127.0.0.1, where webhooks may not go by default: while this fixture is in
    use, plain http and that one address are allowed (a test proving a refusal sets them back).
    """
    settings.WEBHOOK_ALLOW_HTTP = True
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    started: list[PartnerEndpoint] = []

    def start(*script: Reply, tls: ssl.SSLContext | None = None) -> PartnerEndpoint:
        started.append(PartnerEndpoint(list(script), tls=tls))
        return started[-1]

    yield start
    for server in started:
        server.close()
