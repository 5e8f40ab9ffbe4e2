"""Who is calling: partners authenticate with ``Authorization: Api-Key <key>``, throttled per key.

A request with a valid key has ``request.user`` set to the partner and ``request.auth``
to the key; everything else gets a 401 carrying ``WWW-Authenticate: Api-Key``. An address
that sends too many wrong keys gets a 429 for every key, right or wrong, until its window ends.
Every count lives in the default cache, which all server processes share (see settings' CACHES).
"""

import math
import re

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed, Throttled
from rest_framework.permissions import BasePermission
from rest_framework.throttling import SimpleRateThrottle

from ..models import PartnerApiKey
from ..services.partners import partner_api_key_authenticate

KEYWORD = "Api-Key"
# Issued keys are "cmk_<prefix>_<urlsafe token>"; anything else is refused before touching the database.
RAW_KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,128}")


class ApiKeyAuthentication(BaseAuthentication):
    """Authenticate a partner by the API key in the Authorization header."""

    def authenticate(self, request):
        scheme, _, credentials = get_authorization_header(request).partition(b" ")
        if scheme.lower() != KEYWORD.lower().encode():
            return None
        raw_key = credentials.strip().decode("latin-1")
        malformed = not RAW_KEY_PATTERN.fullmatch(raw_key)
        key = None if malformed else partner_api_key_authenticate(raw_key=raw_key)
        failures = FailedKeyThrottle()
        # The failure is counted with one atomic increment, so simultaneous guesses cannot all slip under the
        # limit; and a right key from an address over it is refused too, so a lucky guess looks like a wrong one.
        within_limit = failures.allows_another(request) if key is not None else failures.record(request)
        if not within_limit:
            raise Throttled(wait=failures.wait(), detail="too many failed API key attempts from this address.")
        if malformed:
            raise AuthenticationFailed(f"malformed API key; send 'Authorization: {KEYWORD} <key>'")
        if key is None:
            raise AuthenticationFailed("invalid or revoked API key")
        return key.partner, key

    def authenticate_header(self, request) -> str:
        return f'{KEYWORD} realm="crossmkt"'


class HasPartnerKey(BasePermission):
    """Let a request through only when it carries a valid partner API key."""

    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, PartnerApiKey)


class SharedCounterThrottle(SimpleRateThrottle):
    """Count requests in fixed windows with the cache's atomic increment: processes sharing the cache share counts.

    DRF's own throttles keep a list of timestamps that each request reads, extends and writes
    back; requests served at the same moment by two processes overwrite each other's entries and
    more get through than the rate allows. One counter per window, raised with ``cache.incr``
    (a single INCR on Redis), loses none. The price of fixed windows: a client may spend one
    window's allowance at its end and the next one's at the start of the next.
    """

    num_requests: int
    duration: int
    window_ends: float

    def _counter(self) -> tuple[str, float]:
        """Return the cache key of the current window's counter and the time the window ends."""
        now = self.timer()
        start = now - now % self.duration
        self.window_ends = start + self.duration
        return f"{self.key}_{int(start)}", self.window_ends

    def _increase(self) -> int:
        counter, ends = self._counter()
        timeout = math.ceil(ends - self.timer()) + 1
        try:
            return self.cache.incr(counter)
        except ValueError:  # the window's first request: open its counter, unless another process just did
            if self.cache.add(counter, 1, timeout=timeout):
                return 1
            return self.cache.incr(counter)

    def allow_request(self, request, view) -> bool:
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        return self._increase() <= self.num_requests

    def wait(self) -> float:
        """Return the seconds until the current window ends (at least one)."""
        return max(1.0, self.window_ends - self.timer())


class ApiKeyRateThrottle(SharedCounterThrottle):
    """Limit requests per API key at the ``partner_key`` rate in REST_FRAMEWORK settings."""

    scope = "partner_key"

    def get_cache_key(self, request, view):
        if not isinstance(request.auth, PartnerApiKey):
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.auth.pk}


class FailedKeyThrottle(SharedCounterThrottle):
    """Count wrong or malformed API keys per client address at the ``failed_key`` rate in REST_FRAMEWORK settings.

    The address is REMOTE_ADDR, or the one the trusted proxies put in X-Forwarded-For when
    REST_FRAMEWORK's NUM_PROXIES (``API_NUM_PROXIES``) says how many there are.
    """

    scope = "failed_key"

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}

    def allows_another(self, request) -> bool:
        """Tell whether this address is still under its limit of failures in the current window."""
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, None)
        counter, _ends = self._counter()
        return self.cache.get(counter, 0) < self.num_requests

    def record(self, request) -> bool:
        """Count one failed key from this address; tell whether it is still within the limit."""
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, None)
        return self._increase() <= self.num_requests


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """Describe the Api-Key scheme in the OpenAPI schema."""

    target_class = ApiKeyAuthentication
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": (
                f"`{KEYWORD} <key>`. Keys are issued with `manage.py partner key SLUG` or from the admin; "
                "a key sees only its own partner's data."
            ),
        }
