"""Erasing a user at their home partner's request: open offers are revoked, then the analytics data goes.

Offers still open are revoked and the money they reserved goes back to the campaign; offers,
the redemption ledger, conversions and campaign assignments stay, so settlements and reports
keep adding up. What happens to the user's own data is ``analytics.services.erasure``'s to say.
"""

from django.db import transaction

from analytics.models import ErasureLogEntry
from analytics.services.erasure import enduser_erase, enduser_lock_erasable
from crossmkt_site.errors import ApplicationError

from ..models import Offer, Partner
from .offers import offer_revoke


@transaction.atomic
def user_erase(*, partner: Partner, external_id: str, api_key_prefix: str = "") -> ErasureLogEntry:
    """Revoke the open offers of one of the partner's own users and erase their data; anyone else's is a 404."""
    user = enduser_lock_erasable(partner_id=partner.pk, external_id=external_id)
    open_codes = list(Offer.objects.filter(user=user, status__in=Offer.OPEN_STATUSES).values_list("code", flat=True))
    offers_revoked = 0
    for code in open_codes:
        try:
            offer_revoke(code=code)
            offers_revoked += 1
        except ApplicationError as error:
            # Redeemed or expired since it was listed: there is nothing left to revoke.
            if error.code != "not_open":
                raise
    return enduser_erase(
        user=user,
        pseudonymous_id=external_id,
        partner_id=partner.pk,
        api_key_prefix=api_key_prefix,
        offers_revoked=offers_revoked,
    )
