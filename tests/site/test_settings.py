"""Production settings refuse to start without a secret and pass Django's deployment check."""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def manage(*args, **env):
    base = {key: value for key, value in os.environ.items() if key not in {"SECRET_KEY", "DEBUG", "ALLOWED_HOSTS"}}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**base, "DJANGO_SETTINGS_MODULE": "crossmkt_site.settings.production", **env},
    )


def test_production_refuses_to_start_without_a_secret_key():
    result = manage("check", ALLOWED_HOSTS="crossmkt.example.com")
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_production_passes_the_deploy_check():
    result = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        SECRET_KEY=secrets.token_urlsafe(64),
        ALLOWED_HOSTS="crossmkt.example.com",
    )
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def celery_transport_options(settings_module, **env):
    """Return the broker transport options the Celery app of a fresh process gets under these settings."""
    base = {key: value for key, value in os.environ.items() if not key.startswith(("CELERY_", "SECRET_KEY"))}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django, json; django.setup(); from crossmkt_site.celery import app; "
            "print(json.dumps(app.conf.broker_transport_options))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={
            **base,
            "DJANGO_SETTINGS_MODULE": settings_module,
            "SECRET_KEY": secrets.token_urlsafe(64),
            "ALLOWED_HOSTS": "crossmkt.example.com",
            "CELERY_BROKER_URL": "redis://127.0.0.1:6379/9",
            **env,
        },
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("settings_module", ["crossmkt_site.settings.local", "crossmkt_site.settings.production"])
def test_a_dead_workers_task_comes_back_within_minutes_in_every_environment(settings_module):
    # given no CELERY_VISIBILITY_TIMEOUT in the environment

    # when
    options = celery_transport_options(settings_module)

    # then an unacknowledged task is handed out again after five minutes (Redis's default is an hour),
    # and the workers look for such tasks every ten seconds (kombu's default sweep is every 100 s)
    assert options["visibility_timeout"] == 300
    assert options["unacked_restore_interval"] * options["unacked_restore_throttle"] <= 10
    # and a sweep lock left by a killed worker expires well within that time (kombu's default holds it 5 minutes)
    assert options["unacked_mutex_expire"] <= options["visibility_timeout"] / 2


def test_the_visibility_timeout_comes_from_the_environment():
    assert (
        celery_transport_options("crossmkt_site.settings.production", CELERY_VISIBILITY_TIMEOUT="900")[
            "visibility_timeout"
        ]
        == 900
    )


def test_the_test_settings_keep_the_base_visibility_timeout():
    # The tests run with what production runs with; a test that needs it shorter says so where it starts its worker.
    assert celery_transport_options("crossmkt_site.settings.test") == celery_transport_options(
        "crossmkt_site.settings.local"
    )
