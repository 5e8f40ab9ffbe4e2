"""Identity per partner: which user an id a partner sends stands for, and the links that share a person.

Each partner writes only into its own users. When a partner sends an id, it means, in order:

1. the person it is linked to under that id (``UserLink``), while that person consents to data
   sharing and is not erased;
2. its own user of that id;
3. a person of another partner who consents to data sharing and whose alliance id (registered by
   their home partner) is that id, unless the partner is already linked to them: a link is made;
4. otherwise a new user of its own (no consents).

Reads (``analytics.selectors.enduser_id_visible``) resolve the same way without writing.
A link stops applying when the person withdraws data-sharing consent: the partner's later events
go to a user of its own, and the person is no longer visible to it; what it sent while the link
applied stays with the person (as the consent given then allowed) until the partner erases it
(its ``DELETE users/{id}/``) or the home partner erases the person.
"""

from django.db import transaction

from crossmkt_site.errors import ApplicationError

from ..models import EndUser, UserLink
from .suppression import erased_mask


def _check_id(value: str, field: str) -> None:
    if not value or len(value) > EndUser.EXTERNAL_ID_MAX_LENGTH or "\x00" in value:
        raise ApplicationError(
            f"an id is 1 to {EndUser.EXTERNAL_ID_MAX_LENGTH} characters without NUL", field=field, code="invalid"
        )


def enduser_get_own(*, partner_id: int, external_id: str, lock: bool = False) -> EndUser:
    """Return one of the partner's own users (not erased) by id; anyone else's is a 404."""
    user = None
    if len(external_id) <= EndUser.EXTERNAL_ID_MAX_LENGTH and "\x00" not in external_id:
        users = EndUser.objects.select_for_update() if lock else EndUser.objects.all()
        user = users.filter(home_partner_id=partner_id, external_id=external_id, erased_at__isnull=True).first()
    if user is None:
        raise ApplicationError(
            "no such user among this partner's own users", code="not_found", field="user_id", status=404
        )
    return user


def _require_sharing_consent(user: EndUser) -> None:
    if not user.data_sharing_consent:
        raise ApplicationError(
            "this user has not consented to data sharing with partners; record their consent first",
            code="no_data_sharing_consent",
            field="user_id",
            status=409,
        )


@transaction.atomic
def user_link_create(*, home_partner_id: int, external_id: str, partner_id: int, partner_user_id: str) -> UserLink:
    """Link one of the home partner's users to another partner's id for them; the user must consent to sharing."""
    _check_id(partner_user_id, "partner_user_id")
    user = enduser_get_own(partner_id=home_partner_id, external_id=external_id, lock=True)
    if partner_id == home_partner_id:
        raise ApplicationError(
            "a user cannot be linked to their own home partner", code="self_link", field="partner", status=422
        )
    _require_sharing_consent(user)
    existing = UserLink.objects.filter(partner_id=partner_id, user=user).first()
    if existing is not None:
        raise ApplicationError(
            "this user is already linked to that partner; remove that link first",
            code="already_linked",
            field="partner",
            status=409,
        )
    if UserLink.objects.filter(partner_id=partner_id, external_id=partner_user_id).exists():
        raise ApplicationError(
            "that partner's id is already linked to another user",
            code="already_linked",
            field="partner_user_id",
            status=409,
        )
    if EndUser.objects.filter(home_partner_id=partner_id, external_id=partner_user_id).exists():
        raise ApplicationError(
            "that partner already has a user of its own with this id; a link cannot take it over",
            code="partner_user_exists",
            field="partner_user_id",
            status=409,
        )
    if erased_mask(partner_ids=[partner_id], external_ids=[partner_user_id])[0]:
        raise ApplicationError(
            "that partner's id belongs to an erased person", code="erased", field="partner_user_id", status=409
        )
    return UserLink.objects.create(
        user=user, partner_id=partner_id, external_id=partner_user_id, via=UserLink.Via.HOME_PARTNER
    )


@transaction.atomic
def user_link_delete(*, home_partner_id: int, external_id: str, partner_id: int) -> None:
    """Remove the link between one of the home partner's users and another partner; the partner's events stay."""
    user = enduser_get_own(partner_id=home_partner_id, external_id=external_id, lock=True)
    deleted, _ = UserLink.objects.filter(user=user, partner_id=partner_id).delete()
    if not deleted:
        raise ApplicationError("this user has no link to that partner", code="not_found", field="partner", status=404)


@transaction.atomic
def enduser_alliance_id_set(*, home_partner_id: int, external_id: str, alliance_id: str | None) -> EndUser:
    """Register (or with None clear) the alliance id of one of the home partner's users; they must consent."""
    user = enduser_get_own(partner_id=home_partner_id, external_id=external_id, lock=True)
    if alliance_id is not None:
        _check_id(alliance_id, "alliance_id")
        _require_sharing_consent(user)
        if EndUser.objects.filter(alliance_id=alliance_id).exclude(pk=user.pk).exists():
            raise ApplicationError(
                "this alliance id is registered for another user",
                code="alliance_id_taken",
                field="alliance_id",
                status=409,
            )
    user.alliance_id = alliance_id
    user.save(update_fields=["alliance_id"])
    return user
