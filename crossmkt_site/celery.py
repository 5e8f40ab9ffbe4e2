"""The Celery application: configured from Django settings under the CELERY_ namespace."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crossmkt_site.settings.local")

app = Celery("crossmkt")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.task(name="crossmkt.ping")
def ping() -> dict:
    """Report which process answered, so a caller can tell a worker from an eager call."""
    import socket

    return {"pid": os.getpid(), "host": socket.gethostname()}


def countdown_limit() -> float:
    """Return the longest countdown a task should be retried with: half the broker's visibility timeout.

    A worker holds a counting-down task's message unacknowledged until it is due, and Redis hands
    a message held longer than the visibility timeout out again, once per timeout that passes.
    """
    return float(app.conf.broker_transport_options.get("visibility_timeout", 3600)) / 2
