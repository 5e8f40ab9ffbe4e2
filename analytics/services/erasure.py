"""Erasing a user's analytics data: personal data goes, anonymous counts stay.

Identity is per partner (``identity``). A partner's erasure request (``DELETE users/{id}/``)
for an id it reaches through a link (consented, or one that stopped applying when consent was
withdrawn) removes only what that partner sent: the link and its events for the person, with
its id for them put on the suppression list, and the outcomes it imported for them
pseudonymised and detached; the person and everything else stay. Its own user
of that id (it is their home partner) is erased everywhere, as follows.

What happens to a user's data on erasure by the home partner:

- the user row stays, so offers, the redemption ledger, conversions and campaign
  assignments (which arm the user was in) keep adding up in settlements and reports;
  its personal fields (age, education, occupation, gender, acquisition channel,
  sign-up time) are cleared, both consents switched off, ``erased_at`` set, and its
  pseudonymous id replaced by a random one, so the partner's id no longer leads to it;
- behaviour events (those every linked partner sent too), per-user features, the imported
  per-user row, per-user scores, the links to other partners and the alliance id are deleted:
  they are a profile of the person. Trained model runs (aggregates over all
  users) are kept;
- offers still open are revoked first, by the campaigns side (``campaigns.services.erasure``),
  which tells this erasure how many it revoked;
- imported experiment outcomes (``ExperimentOutcome``) attached to the person (under any
  partner's id for them), and unattached ones of the id in the home partner's campaigns or in
  campaigns naming no partner, keep their arm, conversion and revenue, as anonymous rows under
  the user row's new random id; another partner's person of the same id keeps theirs; the admin's history of
  the row names it by that id too; webhook payloads stored by the campaigns side are
  rewritten the same way there;
- the person goes on the suppression list (``ErasedIdentity``, a keyed hash of partner and id,
  see ``suppression``) under the home partner's id and every linked partner's id for them, so
  imports and the API refuse those partners' rows for them from then on;
- an ``ErasureLogEntry`` records who asked (partner and key prefix), the pseudonymous id
  as the partner knew it, when, and what was removed. It is read-only in the admin.
"""

import secrets
from dataclasses import dataclass

from django.contrib.admin.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.db.models import Q
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
    UserLink,
    UserScore,
)
from .features import features_build_for_users
from .suppression import erased_digest

PERSONAL_FIELDS = ("age", "education", "occupation", "gender", "acquisition_channel", "signed_up_at")


@dataclass(frozen=True)
class ErasureTarget:
    """What a partner's erasure request reaches: one of its own users, or its link to another partner's user."""

    user: EndUser
    link: UserLink | None = None


def enduser_lock_erasable(*, partner_id: int, external_id: str) -> ErasureTarget:
    """Return what the partner's id stands for, locked for erasure (inside a transaction); anything else is a 404.

    As ids resolve: its consented link, its own user, then a link that stopped applying.
    """
    link = user = None
    if len(external_id) <= EndUser.EXTERNAL_ID_MAX_LENGTH and "\x00" not in external_id:
        link = (
            UserLink.objects.select_for_update()
            .select_related("user")
            .filter(partner_id=partner_id, external_id=external_id, user__erased_at__isnull=True)
            .first()
        )
        if link is None or not link.user.data_sharing_consent:
            user = (
                EndUser.objects.select_for_update()
                .filter(external_id=external_id, home_partner_id=partner_id, erased_at__isnull=True)
                .first()
            )
    if user is not None:
        return ErasureTarget(user=user)
    if link is not None:
        return ErasureTarget(user=link.user, link=link)
    raise ApplicationError("no such user", code="not_found", field="user_id", status=404)


def _suppress(*, partner_id: int, external_id: str, now) -> None:
    ErasedIdentity.objects.get_or_create(
        digest=erased_digest(partner_id=partner_id, external_id=external_id),
        defaults={"partner_id": partner_id, "erased_at": now},
    )


@transaction.atomic
def enduser_link_erase(*, link: UserLink, api_key_prefix: str = "") -> ErasureLogEntry:
    """Remove a linked partner's link and the events it sent for the person, suppress its id, log it.

    The person, the home partner's data and other partners' stay; the person's features are
    rebuilt from the events that are left.
    """
    now = timezone.now()
    user = link.user
    _, deleted = BehaviorEvent.objects.filter(user=user, partner_id=link.partner_id).delete()
    # Outcomes the linked partner imported for them under its id: pseudonymised and no longer theirs.
    for outcome in ExperimentOutcome.objects.filter(user=user, campaign__owner_id=link.partner_id):
        outcome.user = None
        outcome.user_ref = f"erased-{secrets.token_hex(16)}"
        outcome.save(update_fields=["user", "user_ref"])
    link.delete()
    _suppress(partner_id=link.partner_id, external_id=link.external_id, now=now)
    features_build_for_users(user_ids=[user.pk])
    return ErasureLogEntry.objects.create(
        user=user,
        pseudonymous_id=link.external_id,
        partner_id=link.partner_id,
        api_key_prefix=api_key_prefix,
        scope=ErasureLogEntry.Scope.PARTNER,
        erased_at=now,
        events_deleted=deleted.get(BehaviorEvent._meta.label, 0),
    )


@transaction.atomic
def enduser_erase(
    *, user: EndUser, pseudonymous_id: str, partner_id: int, api_key_prefix: str = "", offers_revoked: int = 0
) -> ErasureLogEntry:
    """Delete the user's profile data, clear their personal fields, suppress their id and log the erasure.

    ``pseudonymous_id`` is the id the home partner knows the user by.
    """
    now = timezone.now()
    for link in UserLink.objects.filter(user=user):
        _suppress(partner_id=link.partner_id, external_id=link.external_id, now=now)
    UserLink.objects.filter(user=user).delete()
    _, deleted = BehaviorEvent.objects.filter(user=user).delete()
    events_deleted = deleted.get(BehaviorEvent._meta.label, 0)
    for model in (UserFeatures, ImportedBehavior, UserScore):
        model.objects.filter(user=user).delete()
    user.age = None
    user.signed_up_at = None
    user.education = user.occupation = user.gender = user.acquisition_channel = ""
    user.marketing_consent = False
    user.data_sharing_consent = False
    user.alliance_id = None
    user.erased_at = now
    user.external_id = f"erased-{secrets.token_hex(16)}"
    user.save(
        update_fields=[
            *PERSONAL_FIELDS,
            "marketing_consent",
            "data_sharing_consent",
            "alliance_id",
            "erased_at",
            "external_id",
        ]
    )
    # Their imported outcomes: those attached to them (under any partner's id for them), and unattached
    # ones of their id in their home partner's campaigns or in campaigns that name no partner. Another
    # partner's person of the same id keeps theirs.
    ExperimentOutcome.objects.filter(
        Q(user=user)
        | Q(
            Q(campaign__owner_id=user.home_partner_id) | Q(campaign__owner__isnull=True),
            user__isnull=True,
            user_ref=pseudonymous_id,
        )
    ).update(user_ref=user.external_id)
    # The admin's history names a user it changed by the user's id.
    LogEntry.objects.filter(content_type=ContentType.objects.get_for_model(EndUser), object_id=str(user.pk)).update(
        object_repr=user.external_id
    )
    _suppress(partner_id=user.home_partner_id, external_id=pseudonymous_id, now=now)
    return ErasureLogEntry.objects.create(
        user=user,
        pseudonymous_id=pseudonymous_id,
        partner_id=partner_id,
        api_key_prefix=api_key_prefix,
        erased_at=now,
        events_deleted=events_deleted,
        offers_revoked=offers_revoked,
    )
