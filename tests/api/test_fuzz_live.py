"""The API fuzzed over HTTP against gunicorn with the production settings, for a bounded time.

test_fuzz sends generated requests in process; this sends them the way a partner does, to a
gunicorn serving ``crossmkt_site.settings.production`` on loopback against the test
database, with a real key. Requests carry ``X-Forwarded-Proto: https`` as the TLS-terminating
proxy in front of production does (``SECURE_PROXY_SSL_HEADER``), so the HTTPS redirect and
the secure cookies stay on exactly as deployed. Checks: no 5xx, and every response as the
schema says.
"""

import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test import override_settings

from conftest import ROOT
from tests.api.schema_world import schema_example_world

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

# The whole run (all phases) stops after this many seconds; the test allows start-up on top.
FUZZ_SECONDS = int(os.environ.get("FUZZ_LIVE_SECONDS", "60"))
EXAMPLES_PER_OPERATION = 25
PROXY_HEADER = "X-Forwarded-Proto: https"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def production_server(port: int, log: Path) -> subprocess.Popen:
    """Start gunicorn with the production settings on loopback against the test database; return once it answers."""
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "crossmkt_site.settings.production",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": (
            f"postgres://{db['USER']}:{db['PASSWORD'] or ''}"
            f"@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        ),
        # Generated requests come fast from one key; the limit itself is tested in test_throttling.
        "API_RATE_PER_KEY": "1000000/minute",
        "API_FAILED_KEYS_PER_ADDRESS": "1000000/minute",
    }
    for name in ("CACHE_URL", "CACHE_KEY_PREFIX", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        env.pop(name, None)  # the database cache and eager tasks: nothing shared with other test runs
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "crossmkt_site.wsgi", "-b", f"127.0.0.1:{port}", "-w", "2"],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"gunicorn with production settings exited:\n{log.read_text()[-4000:]}")
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/schema/", headers={"X-Forwarded-Proto": "https"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                if response.status == 200:
                    return server
        except (urllib.error.HTTPError, OSError):
            time.sleep(0.3)
    server.kill()
    pytest.fail("gunicorn with production settings did not answer within 60 s")


@pytest.fixture
def live_key(transactional_db) -> str:
    """Build (committed, for the server's connections) the world the schema's examples name; return the key."""
    # The server counts throttles in the database cache, as production does without CACHE_URL; the test
    # settings cache in memory, so the table `migrate` makes in production is made here.
    with override_settings(
        CACHES={"default": {"BACKEND": "crossmkt_site.cache.DatabaseCache", "LOCATION": settings.CACHE_TABLE}}
    ):
        call_command("createcachetable", verbosity=0)
    return schema_example_world()


@pytest.fixture
def server_log(tmp_path) -> Path:
    return tmp_path / "gunicorn.log"


@pytest.fixture
def live_server_url(live_key, server_log) -> Iterator[str]:
    port = free_port()
    server = production_server(port, server_log)
    yield f"http://127.0.0.1:{port}"
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def test_live_production_server_answers_generated_requests_without_5xx_and_as_its_schema_says(
    live_server_url, live_key, server_log, tmp_path
):
    command = [
        str(ROOT / ".venv" / "bin" / "st") if (ROOT / ".venv" / "bin" / "st").exists() else "st",
        "run",
        f"{live_server_url}/api/schema/",
        "--checks",
        "not_a_server_error,response_schema_conformance",
        "--max-examples",
        str(EXAMPLES_PER_OPERATION),
        "--max-time",
        str(FUZZ_SECONDS),
        "--generation-deterministic",  # and so no example database
        "--request-timeout",
        "20",
        "--workers",
        "1",
        "-H",
        f"Authorization: Api-Key {live_key}",
        "-H",
        PROXY_HEADER,
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
        "--no-color",
    ]

    # Run from the temporary directory: schemathesis keeps its state (.schemathesis/) in the working directory.
    run = subprocess.run(command, capture_output=True, text=True, timeout=FUZZ_SECONDS + 60, cwd=tmp_path)

    output = run.stdout + run.stderr
    assert run.returncode == 0, (
        f"schemathesis found failures against the production server:\n{output[-12000:]}\n"
        f"gunicorn's log:\n{server_log.read_text()[-8000:]}"
    )
    selected = re.search(r"Operations:\s+(\d+) selected", output)
    assert selected is not None and int(selected.group(1)) >= 10, output[-4000:]  # the whole API was fuzzed
