"""URLs of the benchmark's server only: the product's, and the same offers answer written as a bare Django view.

``bench`` starts gunicorn with ``CROSSMKT_URLCONF=demo.bench.urls``. The bare view
does what ``GET /api/v1/users/{id}/offers/`` does (check the key, find the user the partner
may see, list their open offers) in plain SQL with a ``JsonResponse``, no DRF: the API's
request rate is compared with it, so the ratio is what the framework (DRF, the ORM,
serializers, throttling) costs.
"""

import hmac
from datetime import UTC, datetime
from decimal import Decimal

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.urls import path

from analytics.selectors import VISIBLE_USER_SQL
from campaigns.models import Offer
from campaigns.selectors import OPEN_OFFERS_SQL
from campaigns.services.partners import KEY_SCHEME, _hash_secret
from crossmkt_site.urls import handler404  # noqa: F401 - handler404 is looked up here
from crossmkt_site.urls import urlpatterns as product_urlpatterns


def _money(value: Decimal | None) -> str | None:
    return None if value is None else f"{value:.2f}"


def bare_user_offers(request: HttpRequest, user_id: str) -> JsonResponse:
    scheme, _, raw_key = request.headers.get("Authorization", "").partition(" ")
    parts = raw_key.split("_", 2)
    if scheme != "Api-Key" or len(parts) != 3 or parts[0] != KEY_SCHEME:
        return JsonResponse({"error": "unauthorized"}, status=401)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT k.partner_id, k.hashed_key FROM campaigns_partnerapikey k JOIN campaigns_partner p "
            "ON p.id = k.partner_id WHERE k.prefix = %s AND k.revoked_at IS NULL AND p.is_active",
            [parts[1]],
        )
        row = cursor.fetchone()
        if row is None or not hmac.compare_digest(row[1], _hash_secret(raw_key)):
            return JsonResponse({"error": "unauthorized"}, status=401)
        partner_id = row[0]
        cursor.execute(VISIBLE_USER_SQL, {"partner": partner_id, "id": user_id})
        user = cursor.fetchone()
        if user is None:
            return JsonResponse({"error": "not found"}, status=404)
        # The API's own statement: the comparison is about everything around it.
        cursor.execute(
            OPEN_OFFERS_SQL,
            [user[0], *Offer.OPEN_STATUSES, datetime.now(UTC), partner_id, partner_id, partner_id],
        )
        offers = [
            {
                "code": r[0],
                "kind": r[1],
                "status": r[2],
                "campaign": r[3],
                "honoured_by": r[4],
                "deal": r[5],
                "amount_off": _money(r[6]),
                "percent_off": _money(r[7]),
                "min_spend": _money(r[8]),
                "days": r[9],
                "issued_at": r[10].isoformat(),
                "expires_at": r[11].isoformat(),
            }
            for r in cursor.fetchall()
        ]
    return JsonResponse({"user_id": user_id, "offers": offers})


urlpatterns = [path("bench/bare/users/<str:user_id>/offers/", bare_user_offers), *product_urlpatterns]
