"""python manage.py partner add|list|key|revoke-key: manage partners and their API keys."""

from django.core.management.base import BaseCommand, CommandError

from crossmkt_site.errors import ApplicationError

from ...models import Partner
from ...selectors import partner_get
from ...services.partners import partner_api_key_create, partner_api_key_revoke, partner_create


class Command(BaseCommand):
    help = "Register partners, list them, and issue or revoke their API keys."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True, metavar="{add,list,key,revoke-key}")
        add = sub.add_parser("add", help="Register a partner.")
        add.add_argument("slug")
        add.add_argument("--kind", required=True, choices=Partner.Kind.values)
        add.add_argument("--name", required=True)
        add.add_argument("--webhook-url", default="")
        sub.add_parser("list", help="List partners and their active keys.")
        key = sub.add_parser("key", help="Issue a new API key and print it once.")
        key.add_argument("slug")
        key.add_argument("--name", default="", help="A label to tell keys apart, e.g. 'production'.")
        revoke = sub.add_parser("revoke-key", help="Revoke a key by its prefix.")
        revoke.add_argument("slug")
        revoke.add_argument("prefix")

    def handle(self, *args, action, **options):
        try:
            getattr(self, "handle_" + action.replace("-", "_"))(**options)
        except ApplicationError as error:
            raise CommandError(error.message) from None

    def handle_add(self, *, slug, kind, name, webhook_url, **_):
        partner = partner_create(slug=slug, kind=kind, name=name, webhook_url=webhook_url)
        self.stdout.write(self.style.SUCCESS(f"Added partner {partner.slug} ({partner.get_kind_display()})."))
        self.stdout.write(f"Issue its API key with: python manage.py partner key {partner.slug}")

    def handle_list(self, **_):
        partners = Partner.objects.prefetch_related("api_keys").order_by("slug")
        if not partners:
            self.stdout.write(
                "No partners yet; add one with: python manage.py partner add SLUG --kind KIND --name NAME"
            )
            return
        self.stdout.write(f"{'slug':<20} {'kind':<10} {'keys':>4}  name")
        for partner in partners:
            active = [key.prefix for key in partner.api_keys.all() if key.revoked_at is None]
            self.stdout.write(
                f"{partner.slug:<20} {partner.kind:<10} {len(active):>4}  {partner.name}  {' '.join(active)}"
            )

    def handle_key(self, *, slug, name, **_):
        key, raw_key = partner_api_key_create(partner=partner_get(slug=slug), name=name)
        self.stdout.write(raw_key)
        self.stderr.write(
            f"API key {key.prefix} issued for {slug}. It is shown only this once; "
            f"send it as 'Authorization: Api-Key <key>'. "
            f"Revoke with: python manage.py partner revoke-key {slug} {key.prefix}"
        )

    def handle_revoke_key(self, *, slug, prefix, **_):
        key = partner_api_key_revoke(partner=partner_get(slug=slug), prefix=prefix)
        self.stdout.write(
            self.style.SUCCESS(f"Key {key.prefix} of {slug} revoked at {key.revoked_at:%Y-%m-%d %H:%M:%S %Z}.")
        )
