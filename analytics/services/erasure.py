"""Erasing a user's analytics data at their home partner's request: personal data goes, anonymous counts stay.

What happens to a user's data on erasure:

- the user row stays, so offers, the redemption ledger, conversions and campaign
  assignments (which arm the user was in) keep adding up in settlements and reports;
  its personal fields (age, education, occupation, gender, acquisition channel,
  sign-up time) are cleared, both consents switched off, ``erased_at`` set, and its
  pseudonymous id replaced by a random one, so the partner's id no longer leads to it;
- behaviour events, per-user features, the imported per-user row and per-user scores are
  deleted: they are a profile of the person. Trained model runs (aggregates over all
  users) are kept;
- offers still open are revoked first, by the campaigns side (``campaigns.services.erasure``),
  which tells this erasure how many it revoked;
- imported experiment outcomes (``ExperimentOutcome``) of the id keep their arm, conversion
  and revenue, as anonymous rows under the user row's new random id; the admin's history of
  the row names it by that id too; webhook payloads stored by the campaigns side are
  rewritten the same way there;
- the person goes on the suppression list (``ErasedIdentity``, a keyed hash of home partner
  and id, see ``suppression``), so imports and the API refuse their rows from then on;
- an ``ErasureLogEntry`` records who asked (partner and key prefix), the pseudonymous id
  as the partner knew it, when, and what was removed. It is read-only in the admin.
"""

import secrets

from django.contrib.admin.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.utils import timezone

from crossmkt_site.errors import ApplicationError

from ..models import (
    BehaviorEvent,
    EndUser,
    ErasedIdentity,
    ErasureLogEntry,
    ExperimentOutcome,
    ImportedBehavior,
    UserFeatures,
    UserScore,
)
from .suppression import erased_digest

PERSONAL_FIELDS = ("age", "education", "occupation", "gender", "acquisition_channel", "signed_up_at")


def enduser_lock_erasable(*, partner_id: int, external_id: str) -> EndUser:
    """Return one of the partner's own users, locked for erasure (inside a transaction); anyone else's is a 404."""
    user = None
    if len(external_id) <= EndUser.EXTERNAL_ID_MAX_LENGTH and "\x00" not in external_id:
        user = (
            EndUser.objects.select_for_update()
            .filter(external_id=external_id, home_partner_id=partner_id, erased_at__isnull=True)
            .first()
        )
    if user is None:
        raise ApplicationError("no such user", code="not_found", field="user_id", status=404)
    return user


@transaction.atomic
def enduser_erase(
    *, user: EndUser, pseudonymous_id: str, partner_id: int, api_key_prefix: str = "", offers_revoked: int = 0
) -> ErasureLogEntry:
    """Delete the user's profile data, clear their personal fields, suppress their id and log the erasure.

    ``pseudonymous_id`` is the id the home partner knows the user by.
    """
    now = timezone.now()
    _, deleted = BehaviorEvent.objects.filter(user=user).delete()
    events_deleted = deleted.get(BehaviorEvent._meta.label, 0)
    for model in (UserFeatures, ImportedBehavior, UserScore):
        model.objects.filter(user=user).delete()
    user.age = None
    user.signed_up_at = None
    user.education = user.occupation = user.gender = user.acquisition_channel = ""
    user.marketing_consent = False
    user.data_sharing_consent = False
    user.erased_at = now
    user.external_id = f"erased-{secrets.token_hex(16)}"
    user.save(update_fields=[*PERSONAL_FIELDS, "marketing_consent", "data_sharing_consent", "erased_at", "external_id"])
    ExperimentOutcome.objects.filter(user_ref=pseudonymous_id).update(user_ref=user.external_id)
    # The admin's history names a user it changed by the user's id.
    LogEntry.objects.filter(content_type=ContentType.objects.get_for_model(EndUser), object_id=str(user.pk)).update(
        object_repr=user.external_id
    )
    ErasedIdentity.objects.get_or_create(
        digest=erased_digest(partner_id=user.home_partner_id, external_id=pseudonymous_id),
        defaults={"partner_id": user.home_partner_id, "erased_at": now},
    )
    return ErasureLogEntry.objects.create(
        user=user,
        pseudonymous_id=pseudonymous_id,
        partner_id=partner_id,
        api_key_prefix=api_key_prefix,
        erased_at=now,
        events_deleted=events_deleted,
        offers_revoked=offers_revoked,
    )
