"""Settings for a laptop: debug on, SQLite and eager tasks unless the environment says otherwise."""

from .base import *  # noqa: F403
from .base import env

DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env("SECRET_KEY", default="local-development-only-not-a-secret-8f3b1c2e9d")
# A partner's test endpoint on a laptop often speaks plain http; its address is still checked.
WEBHOOK_ALLOW_HTTP = env.bool("WEBHOOK_ALLOW_HTTP", default=True)

# The default SQLite file lives in var/, which is not committed.
(BASE_DIR / "var").mkdir(exist_ok=True)  # noqa: F405
# On a laptop /metrics answers anyone (a local Prometheus needs no token); production never does.
METRICS_ALLOW_ANONYMOUS = env.bool("METRICS_ALLOW_ANONYMOUS", default=True)
