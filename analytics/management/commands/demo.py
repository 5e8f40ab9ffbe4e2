"""python manage.py demo: prepare the demo end to end and print how to log in."""

from datetime import timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from campaigns.models import Campaign, Partner, Rule

DEMO_USERNAME = "admin"
DEMO_PASSWORD = "crossmkt-demo"


class Command(BaseCommand):
    help = "Create the demo admin login and the demo data if the database is empty, then print the login."

    def handle(self, *args, **options):
        self.ensure_admin()
        if Partner.objects.exists():
            self.stdout.write("Database already has data; leaving it as it is.")
        else:
            self.load_catalog()
            self.stdout.write(self.style.SUCCESS("Loaded the demo partners and the article's campaign."))
        self.stdout.write("")
        self.stdout.write(self.style.SUCCESS("crossmkt demo ready."))
        self.stdout.write("  Admin:    http://127.0.0.1:8000/admin/")
        self.stdout.write(f"  Login:    {DEMO_USERNAME} / {DEMO_PASSWORD}   (demo only; change it anywhere else)")
        self.stdout.write("  API docs: http://127.0.0.1:8000/api/docs/")

    def ensure_admin(self):
        users = get_user_model().objects
        if not users.filter(username=DEMO_USERNAME).exists():
            users.create_superuser(DEMO_USERNAME, "admin@example.com", DEMO_PASSWORD)

    @transaction.atomic
    def load_catalog(self):
        partners = {
            slug: Partner.objects.create(slug=slug, kind=kind, name=name)
            for slug, kind, name in [
                ("zhixue", Partner.Kind.KNOWLEDGE, "知学课堂"),
                ("yingshi", Partner.Kind.VIDEO, "影视之家"),
                ("lanjing", Partner.Kind.VIDEO, "蓝鲸视频"),
                ("huanying", Partner.Kind.CINEMA, "环影影城"),
                ("jilu", Partner.Kind.STUDIO, "纪录工坊"),
            ]
        }
        now = timezone.now()
        campaign = Campaign.objects.create(
            slug="member-day",
            name="联合会员日：会员专享优惠",
            owner=partners["zhixue"],
            status=Campaign.Status.DRAFT,
            starts_at=now,
            ends_at=now + timedelta(days=30),
            budget=Decimal("50000.00"),
        )
        campaign.partners.set([partners["yingshi"], partners["huanying"]])
        Rule.objects.create(
            campaign=campaign, name="重度用户：立减20元 + 免费观影一周", priority=200, exclusive=True,
            condition={"all": [
                {"field": "purchasing_count", "op": ">", "value": 5},
                {"field": "watching_count", "op": ">", "value": 10},
            ]},
            offer_kind=Rule.OfferKind.COUPON, amount_off=Decimal("20.00"), cost=Decimal("20.00"),
        )
        Rule.objects.create(
            campaign=campaign, name="其他会员：立减10元 + 免费电影票", priority=100, exclusive=True,
            condition={"all": []}, offer_kind=Rule.OfferKind.COUPON, amount_off=Decimal("10.00"), cost=Decimal("10.00"),
        )
