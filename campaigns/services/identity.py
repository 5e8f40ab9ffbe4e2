"""Links between partners for one person, as the partner API asks for them: partners named by slug.

The rules (consent, who may link, what a link does) are ``analytics.services.identity``'s; this
module only turns the other partner's slug into that partner.
"""

from analytics.models import EndUser, UserLink
from analytics.services import identity
from crossmkt_site.errors import ApplicationError

from ..models import Partner


def _partner_id(slug: str, *, status: int) -> int:
    partner_id = Partner.objects.filter(slug=slug).values_list("pk", flat=True).first()
    if partner_id is None:
        raise ApplicationError(f"no partner {slug!r}", code="unknown_partner", field="partner", status=status)
    return partner_id


def user_link_create(*, partner: Partner, user_id: str, other_partner: str, other_user_id: str) -> UserLink:
    """Link one of the partner's own users to another partner's id for them (the user must consent to sharing)."""
    return identity.user_link_create(
        home_partner_id=partner.pk,
        external_id=user_id,
        partner_id=_partner_id(other_partner, status=404),
        partner_user_id=other_user_id,
    )


def user_link_delete(*, partner: Partner, user_id: str, other_partner: str) -> None:
    """Remove the link between one of the partner's own users and another partner."""
    identity.user_link_delete(
        home_partner_id=partner.pk, external_id=user_id, partner_id=_partner_id(other_partner, status=404)
    )


def user_alliance_id_set(*, partner: Partner, user_id: str, alliance_id: str | None) -> EndUser:
    """Register or clear the alliance id of one of the partner's own users."""
    return identity.enduser_alliance_id_set(home_partner_id=partner.pk, external_id=user_id, alliance_id=alliance_id)
