"""Guessing API keys is throttled per client address, and every limit is counted in the cache all processes share."""

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test import override_settings

from campaigns.api.authentication import FailedKeyThrottle, SharedCounterThrottle
from conftest import ROOT, skip_or_fail

from .conftest import client_with_key, error_fields

# Thirty seconds into a window of a minute.
NOW = 1_800_000_030.0


@pytest.fixture
def frozen_window(monkeypatch):
    monkeypatch.setattr(SharedCounterThrottle, "timer", staticmethod(lambda: NOW))


def guess(raw_key: str, address: str = "203.0.113.7"):
    return client_with_key(raw_key).get("/api/v1/deals/", REMOTE_ADDR=address)


@pytest.mark.django_db
def test_failed_key_guesses_from_one_address_get_429_until_the_window_ends(ours, monkeypatch, frozen_window):
    # given at most three failed keys a minute from one address
    monkeypatch.setattr(FailedKeyThrottle, "THROTTLE_RATES", {"failed_key": "3/minute"})

    # when an address guesses keys (a malformed one counts as a guess too)
    answers = [guess(key).status_code for key in ["cmk_aaaa_wrong1", "cmk_aaaa_wrong2", "not a key!"]]

    # then the first three are 401s and the next guess is refused before the key is even checked
    assert answers == [401, 401, 401]
    refused = guess("cmk_aaaa_wrong4")
    assert refused.status_code == 429
    assert refused["Retry-After"] == "30"
    assert error_fields(refused) == [(None, "throttled")]
    assert refused.json()["errors"][0]["message"] == (
        "too many failed API key attempts from this address. Expected available in 30 seconds."
    )
    # a right key from that address is refused as well, so a lucky guess cannot be told from a wrong one
    assert guess(ours.raw_key).status_code == 429
    # another address, and the partner's own servers elsewhere, are not held back
    assert guess("cmk_aaaa_wrong5", address="198.51.100.9").status_code == 401
    assert guess(ours.raw_key, address="198.51.100.10").status_code == 200


@pytest.mark.django_db
def test_successful_requests_do_not_count_as_failures(ours, monkeypatch, frozen_window):
    monkeypatch.setattr(FailedKeyThrottle, "THROTTLE_RATES", {"failed_key": "2/minute"})
    assert [guess(ours.raw_key).status_code for _ in range(5)] == [200] * 5
    assert guess("cmk_aaaa_wrong1").status_code == 401


@pytest.mark.django_db
def test_a_forwarded_for_header_does_not_give_a_guesser_a_new_address(ours, monkeypatch, frozen_window):
    # Behind no proxy (API_NUM_PROXIES=0, the default) X-Forwarded-For is the client's word, not its address.
    monkeypatch.setattr(FailedKeyThrottle, "THROTTLE_RATES", {"failed_key": "2/minute"})
    answers = [
        client_with_key(f"cmk_aaaa_wrong{i}").get("/api/v1/deals/", HTTP_X_FORWARDED_FOR=f"10.0.0.{i}").status_code
        for i in range(3)
    ]
    assert answers == [401, 401, 429]


# --------------------------------------------------------------------------- real server processes on loopback


def _database_url() -> str:
    db = connection.settings_dict
    return (
        f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    )


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _status(url: str, raw_key: str) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Api-Key {raw_key}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture
def gunicorn():
    """Start gunicorn servers on loopback against the test database, with the default cache; stop them after."""
    started: list[subprocess.Popen] = []

    def start(*, workers: int, cache_url: str | None = None, **environment: str) -> str:
        port = _free_port()
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "crossmkt_site.settings.local",
            "DEBUG": "false",
            "DATABASE_URL": _database_url(),
            **environment,
        }
        env.pop("CACHE_URL", None)
        if cache_url:
            env["CACHE_URL"] = cache_url
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "crossmkt_site.wsgi", "-b", f"127.0.0.1:{port}", "-w", str(workers)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append(server)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{url}/healthz/", timeout=2)
                return url
            except urllib.error.HTTPError:
                return url
            except OSError:
                assert server.poll() is None, "gunicorn exited"
                time.sleep(0.2)
        pytest.fail("gunicorn did not answer within a minute")

    yield start
    for server in started:
        server.terminate()
    for server in started:
        server.wait(timeout=30)


def _not_near_the_end_of_the_hour() -> None:
    # The windows are fixed hours: a test straddling two would see its counts start again.
    left = 3600 - time.time() % 3600
    if left < 60:
        time.sleep(left + 1)


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_two_server_processes_share_the_failed_key_and_per_key_counts_in_the_database_cache(gunicorn, ours):
    # given the default cache (a database table, as `migrate` makes it) and two gunicorn servers using it
    _create_cache_table()
    raw_key = ours.raw_key
    limits = {"API_FAILED_KEYS_PER_ADDRESS": "4/hour", "API_RATE_PER_KEY": "6/hour"}
    servers = [gunicorn(workers=1, **limits), gunicorn(workers=1, **limits)]
    _not_near_the_end_of_the_hour()

    # when wrong keys go to the two servers in turn
    failed = [_status(f"{servers[i % 2]}/api/v1/deals/", f"cmk_aaaa_wrong{i}") for i in range(6)]

    # then the limit holds for both together: four failures, then 429 from either
    assert failed == [401, 401, 401, 401, 429, 429]

    # and a partner's key (from another address than the guesser's, so the failure block does not apply)
    # gets its six requests an hour across both servers, not six from each
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {settings.CACHE_TABLE} WHERE cache_key LIKE '%%failed_key%%'")
    good = [_status(f"{servers[i % 2]}/api/v1/deals/", raw_key) for i in range(8)]
    assert good == [200] * 6 + [429, 429]


def _create_cache_table() -> None:
    with override_settings(
        CACHES={"default": {"BACKEND": "crossmkt_site.cache.DatabaseCache", "LOCATION": settings.CACHE_TABLE}}
    ):
        call_command("createcachetable", verbosity=0)


def _redis_cache_url() -> str:
    broker = os.environ.get("CELERY_BROKER_URL", "")
    if not broker.startswith("redis://"):
        skip_or_fail("needs Redis: run with CELERY_BROKER_URL=redis://127.0.0.1:6379/15 (the cache shares its server)")
    return broker


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("cache", ["database", "redis"])
def test_three_gunicorn_workers_let_exactly_the_limits_through_at_once(gunicorn, ours, cache):
    # given one key allowed twenty requests an hour, twenty wrong keys an hour per address,
    # and a server of three workers counting in the database (the default) or in Redis
    if cache == "database":
        _create_cache_table()
    server = gunicorn(
        workers=3,
        cache_url=_redis_cache_url() if cache == "redis" else None,
        CACHE_KEY_PREFIX=f"crossmkt-test-{uuid.uuid4().hex}",
        API_RATE_PER_KEY="20/hour",
        API_FAILED_KEYS_PER_ADDRESS="20/hour",
    )
    _not_near_the_end_of_the_hour()

    # when sixty requests with the key arrive at once, then sixty wrong keys
    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(lambda _i: _status(f"{server}/api/v1/deals/", ours.raw_key), range(60)))
        guesses = list(pool.map(lambda i: _status(f"{server}/api/v1/deals/", f"cmk_aaaa_wrong{i}"), range(60)))

    # then exactly twenty of each get through, whichever worker served them
    assert answers.count(200) == 20 and answers.count(429) == 40, answers
    assert guesses.count(401) == 20 and guesses.count(429) == 40, guesses
