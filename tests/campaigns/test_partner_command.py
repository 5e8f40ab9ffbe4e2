"""`manage.py partner …` as an operator uses it: keys printed once, stored hashed, revocable."""

import hashlib
import io

import pytest
from django.core.management import CommandError, call_command

from campaigns.models import Partner, PartnerApiKey
from campaigns.services.partners import partner_api_key_authenticate

pytestmark = pytest.mark.django_db


def run(*args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("partner", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_add_then_list_shows_the_partner():
    out, _ = run("add", "yingshi", "--kind", "video", "--name", "影视之家")
    assert "Added partner yingshi" in out
    listing, _ = run("list")
    assert "yingshi" in listing and "影视之家" in listing and "video" in listing


def test_key_is_printed_once_and_only_its_hash_is_stored():
    # given a partner
    run("add", "yingshi", "--kind", "video", "--name", "影视之家")
    # when a key is issued
    raw_key, notice = run("key", "yingshi")
    raw_key = raw_key.strip()
    # then stdout holds just the key, the notice says it is shown once, and the database holds only a hash
    assert "shown only this once" in notice
    stored = PartnerApiKey.objects.get()
    assert raw_key not in (stored.prefix, stored.hashed_key)
    assert stored.hashed_key == hashlib.sha256(raw_key.encode()).hexdigest()
    key = partner_api_key_authenticate(raw_key=raw_key)
    assert key is not None and key.partner.slug == "yingshi"
    assert partner_api_key_authenticate(raw_key=raw_key[:-1] + ("A" if raw_key[-1] != "A" else "B")) is None


def test_several_keys_per_partner_and_revoking_one_leaves_the_other():
    run("add", "yingshi", "--kind", "video", "--name", "影视之家")
    first, _ = run("key", "yingshi")
    second, _ = run("key", "yingshi")
    prefix = PartnerApiKey.objects.get(hashed_key=hashlib.sha256(first.strip().encode()).hexdigest()).prefix

    out, _ = run("revoke-key", "yingshi", prefix)

    assert "revoked" in out
    assert partner_api_key_authenticate(raw_key=first.strip()) is None
    assert partner_api_key_authenticate(raw_key=second.strip()) is not None


@pytest.mark.parametrize(
    "args, message",
    [
        (("key", "nobody"), "no partner 'nobody'"),
        (("revoke-key", "yingshi", "deadbeef"), "has no key with prefix 'deadbeef'"),
        (("add", "yingshi", "--kind", "video", "--name", "again"), "already exists"),
    ],
)
def test_operator_mistakes_give_one_clear_line(args, message):
    run("add", "yingshi", "--kind", "video", "--name", "影视之家")
    with pytest.raises(CommandError, match=message):
        run(*args)
    assert Partner.objects.count() == 1


def test_unknown_kind_exits_non_zero_without_a_traceback():
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "manage.py", "partner", "add", "x", "--kind", "radio", "--name", "X"],
        capture_output=True,
        text=True,
        env={"DJANGO_SETTINGS_MODULE": "crossmkt_site.settings.test", "PATH": ""},
    )
    assert result.returncode != 0
    assert "invalid choice: 'radio'" in result.stderr
    assert "Traceback" not in result.stderr
