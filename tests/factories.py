"""factory_boy factories for the domain, so a test states only what matters to it.

Each factory is generic over its model, so `OfferFactory.create(...)` is typed as an `Offer`. Tests call
`.create()` (the default strategy of a DjangoModelFactory) rather than `OfferFactory(...)`: the bare call goes
through factory_boy's untyped metaclass and type checkers read it as an instance of the factory.
"""

from datetime import timedelta
from decimal import Decimal

import factory
from django.utils import timezone

from analytics.models import BehaviorEvent, EndUser, UserLink
from campaigns.models import Campaign, Course, Deal, Film, Offer, Partner, Rule


class PartnerFactory(factory.django.DjangoModelFactory[Partner]):
    class Meta:
        model = Partner

    slug = factory.Sequence(lambda n: f"partner-{n}")
    name = factory.Sequence(lambda n: f"Partner {n}")
    kind = Partner.Kind.KNOWLEDGE


class CourseFactory(factory.django.DjangoModelFactory[Course]):
    class Meta:
        model = Course

    partner = factory.SubFactory(PartnerFactory)
    sku = factory.Sequence(lambda n: f"C{n:05d}")
    title = factory.Sequence(lambda n: f"Course {n}")
    category = "economics"
    price = Decimal("199.00")


class FilmFactory(factory.django.DjangoModelFactory[Film]):
    class Meta:
        model = Film

    partner = factory.SubFactory(PartnerFactory, kind=Partner.Kind.VIDEO)
    external_id = factory.Sequence(lambda n: f"F{n:05d}")
    title = factory.Sequence(lambda n: f"Film {n}")
    category = "economics"
    licence_start = factory.LazyFunction(lambda: timezone.now() - timedelta(days=30))
    licence_end = factory.LazyFunction(lambda: timezone.now() + timedelta(days=300))


class DealFactory(factory.django.DjangoModelFactory[Deal]):
    class Meta:
        model = Deal

    slug = factory.Sequence(lambda n: f"deal-{n}")
    name = factory.Sequence(lambda n: f"Deal {n}")
    source_partner = factory.SubFactory(PartnerFactory)
    target_partner = factory.SubFactory(PartnerFactory, kind=Partner.Kind.VIDEO)
    trigger = Deal.Trigger.COURSE_PURCHASE
    benefit = Deal.Benefit.VIDEO_MEMBERSHIP
    benefit_days = 30
    starts_at = factory.LazyFunction(timezone.now)
    ends_at = factory.LazyFunction(lambda: timezone.now() + timedelta(days=90))
    settlement_price = Decimal("8.00")


class CampaignFactory(factory.django.DjangoModelFactory[Campaign]):
    class Meta:
        model = Campaign

    slug = factory.Sequence(lambda n: f"campaign-{n}")
    name = factory.Sequence(lambda n: f"Campaign {n}")
    owner = factory.SubFactory(PartnerFactory)
    status = Campaign.Status.RUNNING
    starts_at = factory.LazyFunction(lambda: timezone.now() - timedelta(days=1))
    ends_at = factory.LazyFunction(lambda: timezone.now() + timedelta(days=30))
    budget = Decimal("1000.00")


class RuleFactory(factory.django.DjangoModelFactory[Rule]):
    class Meta:
        model = Rule

    campaign = factory.SubFactory(CampaignFactory)
    name = factory.Sequence(lambda n: f"Rule {n}")
    condition = factory.LazyFunction(lambda: {"field": "watching_count", "op": ">", "value": 10})
    offer_kind = Rule.OfferKind.COUPON
    amount_off = Decimal("20.00")
    cost = Decimal("20.00")


class EndUserFactory(factory.django.DjangoModelFactory[EndUser]):
    class Meta:
        model = EndUser

    external_id = factory.Sequence(lambda n: f"u{n:07d}")
    home_partner = factory.SubFactory(PartnerFactory)
    age = 30
    education = "本科"
    occupation = "工程师"
    marketing_consent = True
    data_sharing_consent = True


class UserLinkFactory(factory.django.DjangoModelFactory[UserLink]):
    """Another partner's id for a user (by default the user's own id, as an alliance-id match makes it)."""

    class Meta:
        model = UserLink

    user = factory.SubFactory(EndUserFactory)
    partner = factory.SubFactory(PartnerFactory)
    external_id = factory.LazyAttribute(lambda link: link.user.external_id)
    via = UserLink.Via.HOME_PARTNER


class OfferFactory(factory.django.DjangoModelFactory[Offer]):
    class Meta:
        model = Offer

    campaign = factory.SubFactory(CampaignFactory)
    user = factory.SubFactory(EndUserFactory)
    kind = Rule.OfferKind.COUPON
    amount_off = Decimal("20.00")
    # Created outside issuance, so nothing was reserved from the budget for it.
    cost = Decimal("0.00")
    issued_at = factory.LazyFunction(timezone.now)
    expires_at = factory.LazyAttribute(lambda offer: offer.issued_at + timedelta(days=14))


class BehaviorEventFactory(factory.django.DjangoModelFactory[BehaviorEvent]):
    class Meta:
        model = BehaviorEvent

    partner = factory.SubFactory(PartnerFactory)
    event_id = factory.Sequence(lambda n: f"e{n:08d}")
    user = factory.SubFactory(EndUserFactory)
    kind = BehaviorEvent.Kind.FILM_WATCH
    item_id = "F00001"
    amount = Decimal("0.00")
    occurred_at = factory.LazyFunction(timezone.now)


def end_users_of(partner: Partner, external_ids) -> list[EndUser]:
    """Create the partner's own users of these ids in one statement (for files that name many)."""
    return EndUser.objects.bulk_create([EndUser(home_partner=partner, external_id=str(i)) for i in external_ids])
