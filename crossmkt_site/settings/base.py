"""Settings shared by every environment; everything that varies comes from the environment."""

import re
import zoneinfo
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import environ
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

from crossmkt_site.outbound_urls import parse_networks

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env(
    DEBUG=(bool, False),
    ALLOWED_HOSTS=(list, ["127.0.0.1", "localhost"]),
    TIME_ZONE=(str, "Asia/Shanghai"),
    CELERY_BROKER_URL=(str, ""),
)
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

SECRET_KEY = env("SECRET_KEY", default="")
# Key of the erased-id suppression list's hashes (README, "Privacy"); empty: derived from SECRET_KEY. Keep it
# stable: under a new key (or a rotated SECRET_KEY while this is empty) the list no longer recognises anyone.
ERASURE_HASH_KEY = env("ERASURE_HASH_KEY", default="")
DEBUG = env("DEBUG")
ALLOWED_HOSTS = env("ALLOWED_HOSTS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "axes",
    "simple_history",
    "campaigns",
    "analytics",
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "crossmkt_site.middleware.ContentSecurityPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "crossmkt_site.middleware.ApiLanguageMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "simple_history.middleware.HistoryRequestMiddleware",
    # Last, as django-axes requires, so it sees the outcome of authentication.
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

# The benchmark serves demo.bench.urls: these URLs plus a bare Django view to compare the API with.
ROOT_URLCONF = env("CROSSMKT_URLCONF", default="crossmkt_site.urls")
WSGI_APPLICATION = "crossmkt_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "crossmkt_site" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'var' / 'crossmkt.sqlite3'}"),
}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
# Seconds a request's database connection is kept for the next one (production sets 60).
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=0)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The cache holds the API's throttle counts, so it must be one that every server process shares:
# Redis when CACHE_URL names one (redis://127.0.0.1:6379/2), else a table in the database above
# (created by `migrate`; its increments lock the row on PostgreSQL). locmemcache:// is per process:
# fine for tests, wrong behind several workers.
CACHE_TABLE = "crossmkt_cache"
CACHES = {
    "default": env.cache_url("CACHE_URL")
    if env("CACHE_URL", default="")
    else {"BACKEND": "crossmkt_site.cache.DatabaseCache", "LOCATION": CACHE_TABLE}
}
# Lets several deployments (or test runs) share one Redis database without sharing counts.
CACHES["default"]["KEY_PREFIX"] = env("CACHE_KEY_PREFIX", default="crossmkt")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "zh-hans"
LANGUAGES = [("zh-hans", _("Simplified Chinese")), ("en", _("English"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
USE_I18N = True
USE_TZ = True
# Stored in UTC; shown and scheduled in this zone (campaigns may carry their own).
TIME_ZONE = env("TIME_ZONE")

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

# Content-Security-Policy of every response (crossmkt_site.middleware): our own scripts, styles and fonts
# only, no inline code, no eval, no framing. Images also from data: URLs (Swagger UI's and the admin's icons).
CONTENT_SECURITY_POLICY = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:"],
    "font-src": ["'self'"],
    "connect-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}
# Report violations in the browser's console instead of blocking them (to try a stricter policy first).
CONTENT_SECURITY_POLICY_REPORT_ONLY = env.bool("CONTENT_SECURITY_POLICY_REPORT_ONLY", default=False)

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "campaigns.api.schema.PartnerApiSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": ["campaigns.api.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["campaigns.api.authentication.HasPartnerKey"],
    "DEFAULT_THROTTLE_CLASSES": ["campaigns.api.authentication.ApiKeyRateThrottle"],
    # Counted in the default cache (CACHES), which every server process shares: requests per API key, and
    # wrong or malformed keys per client address (beyond that, every key from the address is a 429).
    "DEFAULT_THROTTLE_RATES": {
        "partner_key": env("API_RATE_PER_KEY", default="6000/minute"),
        "failed_key": env("API_FAILED_KEYS_PER_ADDRESS", default="20/minute"),
    },
    # Proxies in front of the server whose X-Forwarded-For is trusted for the client's address; with 0,
    # the header is ignored (a client could write any address into it) and REMOTE_ADDR counts.
    "NUM_PROXIES": env.int("API_NUM_PROXIES", default=0),
    "DEFAULT_PARSER_CLASSES": ["campaigns.api.parsers.JSONBodyParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "campaigns.api.pagination.PartnerPagination",
    "PAGE_SIZE": 100,
    "EXCEPTION_HANDLER": "crossmkt_site.api_errors.api_exception_handler",
    # Partners are not Django users: an unauthenticated request has no user at all.
    "UNAUTHENTICATED_USER": None,
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "crossmkt partner API",
    "DESCRIPTION": (
        "Cross-marketing between a paid-knowledge platform and its film and video partners. "
        "Authenticate with `Authorization: Api-Key <key>`; a key sees only its own partner's deals, campaigns, "
        "offers and users, and anything else is a 404. Users are known by pseudonymous ids only. Money is CNY as "
        "decimal strings with two places; times are ISO 8601. Every 4xx answers "
        '`{"errors": [{"field": ..., "code": ..., "message": ...}]}`.'
    ),
    "VERSION": "1.0.0",
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and the docs are public; they must not try a partner key.
    "SERVE_AUTHENTICATION": [],
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "DealStatusEnum": "campaigns.models.Deal.Status",
        "CampaignStatusEnum": "campaigns.models.Campaign.Status",
        "SettlementDirectionEnum": "campaigns.models.Direction",
        "OfferKindEnum": "campaigns.models.Rule.OfferKind",
        "EventKindEnum": "analytics.models.BehaviorEvent.Kind",
    },
    "SWAGGER_UI_SETTINGS": {"persistAuthorization": True},
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Celery: with no broker configured, tasks run eagerly in the calling process, so a
# laptop needs nothing but Python; with a broker, they go to the workers.
CELERY_BROKER_URL = env("CELERY_BROKER_URL") or "memory://localhost/"
CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", default=env("CELERY_BROKER_URL") or "cache+memory://")
CELERY_TASK_ALWAYS_EAGER = not env("CELERY_BROKER_URL")
CELERY_TASK_EAGER_PROPAGATES = True
# Separate queues let several deployments (or a test run) share one Redis.
CELERY_TASK_DEFAULT_QUEUE = env("CELERY_TASK_DEFAULT_QUEUE", default="crossmkt")
# A task is acknowledged when it has finished, and given back if its process dies, so a killed
# worker loses nothing (every task is safe to run twice).
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# A task a worker took and never acknowledged (the whole worker died) goes back to the queue after
# the visibility timeout; Redis's default is an hour. Five minutes is over ten times the longest
# task at 1M users on the benchmark machine (a full feature build, 12 s; a scoring chunk of 100,000
# users, ~4 s; an issuance chunk of 50,000, ~2 s): a task still running after it would be handed to
# a second worker. The workers look for such tasks every 10 s (kombu's default is every 100 s).
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=300),
    "unacked_restore_interval": 10,
    "unacked_restore_throttle": 1,
    # The sweep takes a Redis lock; a worker killed while holding it would stop every sweep until the lock
    # expires (kombu's default: 5 minutes), so it expires well within the visibility timeout.
    "unacked_mutex_expire": env.int("CELERY_UNACKED_MUTEX_EXPIRE", default=60),
}
# How long a command (score --wait, run_campaign, demo) waits on the workers before it gives up and
# says what is pending: room for 1M users' scoring and a killed worker's tasks coming back.
WORKER_WAIT_TIMEOUT = env.int("WORKER_WAIT_TIMEOUT", default=900)

# /metrics (Prometheus): a scrape authenticates with "Authorization: Bearer <METRICS_TOKEN>" or a staff
# session; METRICS_ALLOW_ANONYMOUS lets anyone read it (local settings turn it on, production never).
METRICS_TOKEN = env("METRICS_TOKEN", default="")
METRICS_ALLOW_ANONYMOUS = env.bool("METRICS_ALLOW_ANONYMOUS", default=False)
# Seconds the per-partner event counts of the pipeline health views are kept in the shared cache: the one
# figure whose query grows with the data (a parallel scan of the events: 2-3 s per ten million events).
PIPELINE_EVENTS_COUNT_SECONDS = env.int("PIPELINE_EVENTS_COUNT_SECONDS", default=60)
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_RESULT_EXPIRES = 3600
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Beat keeps these in the database (django-celery-beat): each is editable under "Periodic tasks" in the admin.
CELERY_BEAT_SCHEDULE = {
    "expire-offers": {
        "task": "campaigns.tasks.expire_offers",
        "schedule": 300.0,
    },
    # The live path: every accepted batch queues a drain of its users; this tick drains whatever a dead
    # worker or a lost message left pending.
    "drain-pending-users": {
        "task": "campaigns.tasks.drain_pending_users",
        "schedule": float(env.int("CROSSMKT_LIVE_DRAIN_SECONDS", default=30)),
    },
    # Time-based conditions (recency, churn risk, a membership ending) become true without an event.
    "sweep-continuous-campaigns": {
        "task": "campaigns.tasks.sweep_continuous_campaigns",
        "schedule": float(env.int("CROSSMKT_SWEEP_SECONDS", default=900)),
    },
    # Everyone's features rebuilt and scored with the active runs, nightly (TIME_ZONE).
    "refresh-features-and-scores": {
        "task": "analytics.tasks.refresh_features_and_scores",
        "schedule": crontab(minute=30, hour=2),
    },
    # Every behaviour model retrained weekly, Sunday night.
    "retrain-models": {
        "task": "campaigns.tasks.retrain_models",
        "schedule": crontab(minute=0, hour=4, day_of_week="sun"),
    },
    # Ingestion queues deal evaluation for the users it touched; this pass catches whatever that missed.
    "evaluate-deals": {
        "task": "campaigns.tasks.evaluate_deals",
        "schedule": float(env.int("CROSSMKT_DEALS_SECONDS", default=600)),
    },
    "requeue-webhooks": {
        "task": "campaigns.tasks.requeue_webhooks",
        "schedule": 60.0,
    },
}

# Admin login throttling: lock a username+IP pair after repeated failures.
AXES_FAILURE_LIMIT = 5
AXES_COOLOFF_TIME = 1  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True

# Webhook URLs (README, "Webhooks"): https only, unless plain http is allowed (local settings do, for
# development; production never); never to a loopback, private, link-local, multicast, reserved or other
# non-public address, unless its network is listed here, e.g. a partner reached over a VPN: 10.20.0.0/16.
WEBHOOK_ALLOW_HTTP = env.bool("WEBHOOK_ALLOW_HTTP", default=False)
WEBHOOK_ALLOWED_NETWORKS = env.list("WEBHOOK_ALLOWED_NETWORKS", default=[])
try:
    parse_networks(WEBHOOK_ALLOWED_NETWORKS)
except ValueError as error:
    raise ImproperlyConfigured(f"WEBHOOK_ALLOWED_NETWORKS: {error}; give networks such as 10.20.0.0/16") from None

# Bounds on what partners send (README, "Bounds on amounts and times"): the largest amount of one event,
# conversion or order, in CNY (at most 999999999999.99, what the money column holds); and the window of
# plausible event times, from the earliest (read in TIME_ZONE without an offset) to now plus a tolerance
# for clocks that run ahead ("90m", "24h", "1d" or seconds).
CROSSMKT_MAX_AMOUNT = env.str("CROSSMKT_MAX_AMOUNT", default="1000000.00")
try:
    _earliest = datetime.fromisoformat(env.str("CROSSMKT_EARLIEST_EVENT_TIME", default="1990-01-01"))
    CROSSMKT_EARLIEST_EVENT_TIME = (
        _earliest if _earliest.tzinfo else _earliest.replace(tzinfo=zoneinfo.ZoneInfo(TIME_ZONE))
    )
except ValueError as error:
    raise ImproperlyConfigured(f"CROSSMKT_EARLIEST_EVENT_TIME: {error}; give a date such as 1990-01-01") from None
_tolerance = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([smhd]?)", env.str("CROSSMKT_FUTURE_TOLERANCE", default="1d"))
if _tolerance is None:
    raise ImproperlyConfigured("CROSSMKT_FUTURE_TOLERANCE: give a duration such as 90m, 24h, 1d or seconds")
CROSSMKT_FUTURE_TOLERANCE = timedelta(
    seconds=float(_tolerance[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[_tolerance[2]]
)

# Experiment statistics of the campaign report (README, "Experiment statistics"): the days before assignment
# whose spend and purchases adjust the uplift (CUPED); the users at which the always-valid interval of a running
# campaign is narrowest; the share of redemptions rolled back above which the rollback guardrail shows harm.
CROSSMKT_CUPED_PRE_DAYS = env.int("CROSSMKT_CUPED_PRE_DAYS", default=28)
CROSSMKT_SEQUENTIAL_TUNING_USERS = env.int("CROSSMKT_SEQUENTIAL_TUNING_USERS", default=10_000)
CROSSMKT_GUARDRAIL_ROLLBACK_TOLERANCE = env.float("CROSSMKT_GUARDRAIL_ROLLBACK_TOLERANCE", default=0.02)
if CROSSMKT_CUPED_PRE_DAYS < 1 or CROSSMKT_SEQUENTIAL_TUNING_USERS < 2:
    raise ImproperlyConfigured(
        "CROSSMKT_CUPED_PRE_DAYS must be at least 1 and CROSSMKT_SEQUENTIAL_TUNING_USERS at least 2"
    )
if not 0 <= CROSSMKT_GUARDRAIL_ROLLBACK_TOLERANCE < 1:
    raise ImproperlyConfigured("CROSSMKT_GUARDRAIL_ROLLBACK_TOLERANCE: give a share such as 0.02")

# Typed loosely so environments can adjust nested entries (production raises the root level).
LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "crossmkt": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
