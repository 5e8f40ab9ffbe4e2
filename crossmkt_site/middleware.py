"""Site-wide response rules: the API's one language, and the Content-Security-Policy of every page."""

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import translation

API_LANGUAGE = "en"
# As api_errors.API_PREFIX; not imported from there, since that loads DRF, whose settings load the API's modules.
API_PREFIX = "/api/"


class ApiLanguageMiddleware:
    """Answer everything under /api/ in English, whatever Accept-Language or the language cookie asks for.

    The API's own messages are English, and a partner's client parses one language; without this,
    DRF's and Django's messages would follow LocaleMiddleware (zh-hans by default) and a single error
    response would mix the two. The admin and the dashboard keep the user's language. Placed after
    LocaleMiddleware, so that Content-Language says ``en`` too.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info.startswith(API_PREFIX):
            translation.activate(API_LANGUAGE)
            request.LANGUAGE_CODE = API_LANGUAGE
        return self.get_response(request)


class ContentSecurityPolicyMiddleware:
    """Send the Content-Security-Policy of settings.CONTENT_SECURITY_POLICY with every response.

    The policy allows scripts, styles and fonts only from our own origin, with no inline script
    or style and no eval, so an injected ``<script>`` does not run; the admin (Django 5.2 has no
    inline scripts), the dashboard (a stylesheet, SVG drawn with attributes) and Swagger UI (its
    split view and a stylesheet, from drf-spectacular-sidecar) are written to work under it. With
    CONTENT_SECURITY_POLICY_REPORT_ONLY the browser reports violations instead of blocking them.
    Django's own debug pages (DEBUG only, never in production) draw with inline styles and
    scripts, so an error answer with DEBUG on goes without the header.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response
        self.header = (
            "Content-Security-Policy-Report-Only"
            if settings.CONTENT_SECURITY_POLICY_REPORT_ONLY
            else "Content-Security-Policy"
        )
        self.policy = "; ".join(
            f"{directive} {' '.join(sources)}" for directive, sources in settings.CONTENT_SECURITY_POLICY.items()
        )

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if self.policy and not (settings.DEBUG and response.status_code >= 400):
            response.headers.setdefault(self.header, self.policy)
        return response
