"""JSON bodies with amounts read as Decimal and a size limit per endpoint."""

import json
from decimal import Decimal

from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser

from crossmkt_site.api_errors import PayloadTooLarge

DEFAULT_MAX_BODY_BYTES = 64 * 1024


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


class JSONBodyParser(BaseParser):
    """Parse a JSON body; numbers with a fraction become Decimal, so money never passes through float.

    A view sets ``max_body_bytes`` to take larger bodies; a body over the limit is a 413
    before any of it is parsed.
    """

    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        limit = getattr(parser_context.get("view"), "max_body_bytes", DEFAULT_MAX_BODY_BYTES)
        request = parser_context.get("request")
        declared = request.META.get("CONTENT_LENGTH") if request is not None else None
        if declared and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"the body is {int(declared)} bytes; this endpoint takes at most {limit}")
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            raise PayloadTooLarge(f"the body is over {limit} bytes, the most this endpoint takes")
        try:
            return json.loads(raw, parse_float=Decimal, parse_constant=_refuse_constant)
        except (ValueError, RecursionError) as error:
            raise ParseError(f"the body is not valid JSON: {error}") from None
