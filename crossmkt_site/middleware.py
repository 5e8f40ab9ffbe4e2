"""Site-wide response rules: the API's one language, and the Content-Security-Policy of every page."""

from collections.abc import Callable

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
