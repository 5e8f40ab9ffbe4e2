"""Settings for the test suite: fast hashing, eager tasks unless a test asks for a worker."""

import os

from .base import *  # noqa: F403
from .base import env

SECRET_KEY = env("SECRET_KEY", default="test-only-not-a-secret-2c1a7e")
DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Tests run tasks in process; the worker tests switch this off for their own calls.
CELERY_TASK_ALWAYS_EAGER = True
AXES_ENABLED = True
# Each test process has its own queue, and the worker it starts listens only there.
CELERY_TASK_DEFAULT_QUEUE = f"crossmkt-test-{os.getpid()}"
# Each test process counts throttles in its own memory; tests/api/test_throttling.py starts servers that share one.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
