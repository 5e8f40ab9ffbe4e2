"""Who is calling: partners authenticate with ``Authorization: Api-Key <key>``, throttled per key.

A request with a valid key has ``request.user`` set to the partner and ``request.auth``
to the key; everything else gets a 401 carrying ``WWW-Authenticate: Api-Key``.
"""

import re

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
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
        if not RAW_KEY_PATTERN.fullmatch(raw_key):
            raise AuthenticationFailed(f"malformed API key; send 'Authorization: {KEYWORD} <key>'")
        key = partner_api_key_authenticate(raw_key=raw_key)
        if key is None:
            raise AuthenticationFailed("invalid or revoked API key")
        return key.partner, key

    def authenticate_header(self, request) -> str:
        return f'{KEYWORD} realm="crossmkt"'


class HasPartnerKey(BasePermission):
    """Let a request through only when it carries a valid partner API key."""

    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, PartnerApiKey)


class ApiKeyRateThrottle(SimpleRateThrottle):
    """Limit requests per API key at the ``partner_key`` rate in REST_FRAMEWORK settings."""

    scope = "partner_key"

    def get_cache_key(self, request, view):
        if not isinstance(request.auth, PartnerApiKey):
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.auth.pk}


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
