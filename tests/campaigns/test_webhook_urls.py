"""Webhooks go only to public HTTPS endpoints: every URL is checked when it is saved and again when an attempt connects.

Names are resolved by a scripted resolver put where the sender and the validator look one
up, so a test can say what a name resolves to, change it between save and send, and see
that the sender connects to the address it vetted rather than looking the name up again.
"""

import io
import os
import secrets
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import translation

from campaigns.models import Partner, WebhookAttempt, WebhookDelivery
from campaigns.services.webhook_outbox import webhook_attempt, webhook_deliveries_create
from crossmkt_site import outbound_urls
from tests.campaigns.partner_endpoint import Reply
from tests.factories import PartnerFactory

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
# A public address the scripted resolver hands out; nothing ever connects to it.
PUBLIC = "93.184.215.14"


class ScriptedDNS:
    """Answer lookups from a table (a queued answer first, if any) and record every name looked up."""

    def __init__(self):
        self.table: dict[str, list[str]] = {}
        self.queued: dict[str, list[list[str]]] = {}
        self.lookups: list[str] = []

    def answer(self, host: str, *addresses: str) -> None:
        self.table[host] = list(addresses)

    def answer_next(self, host: str, *addresses: str) -> None:
        """Answer the next lookup of ``host`` with these addresses (queued answers go first, in order)."""
        self.queued.setdefault(host, []).append(list(addresses))

    def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        if self.queued.get(host):
            return self.queued[host].pop(0)
        if host in self.table:
            return self.table[host]
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


@pytest.fixture
def dns(monkeypatch) -> ScriptedDNS:
    scripted = ScriptedDNS()
    monkeypatch.setattr(outbound_urls, "resolver", scripted)
    return scripted


def refusal(url: str) -> ValidationError:
    """Validate a partner with this webhook URL as the admin and the services do; return the URL's error."""
    with pytest.raises(ValidationError) as refused:
        PartnerFactory.build(webhook_url=url).full_clean()
    (error,) = refused.value.error_dict["webhook_url"]
    return error


def english(error: ValidationError) -> str:
    with translation.override("en"):
        return " ".join(error.messages)


# --- at save -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("https://127.0.0.1:8000/hooks", "loopback"),
        ("https://127.1.2.3/hooks", "loopback"),
        ("https://[::1]/hooks", "loopback"),
        ("https://[::ffff:127.0.0.1]/hooks", "loopback"),
        ("https://169.254.169.254/latest/meta-data/", "link-local"),
        ("https://[fe80::1]/hooks", "link-local"),
        ("https://10.0.0.8/hooks", "private"),
        ("https://172.16.5.4/hooks", "private"),
        ("https://192.168.1.20/hooks", "private"),
        ("https://[fd00::5]/hooks", "private"),
        ("https://0.0.0.0/hooks", "unspecified"),
        ("https://[::]/hooks", "unspecified"),
        ("https://224.0.0.251/hooks", "multicast"),
        ("https://[ff02::1]/hooks", "multicast"),
        ("https://240.0.0.1/hooks", "reserved"),
        ("https://100.64.0.1/hooks", "non-public"),
        ("https://192.0.2.10/hooks", "private"),  # documentation addresses count as private in Python
    ],
)
def test_an_address_that_is_not_public_is_refused_at_save_naming_its_kind(url, kind):
    error = refusal(url)

    assert error.code == "address_not_public"
    message = english(error)
    assert f"a {kind} address" in message and "public internet addresses" in message


def test_a_name_is_refused_when_any_of_its_addresses_is_not_public(dns):
    dns.answer("internal.partner.example", "10.20.30.40")
    dns.answer("mixed.partner.example", PUBLIC, "127.0.0.1")

    assert "internal.partner.example resolves to 10.20.30.40, a private address" in english(
        refusal("https://internal.partner.example/hooks")
    )
    assert "resolves to 127.0.0.1, a loopback address" in english(refusal("https://mixed.partner.example/hooks"))


def test_localhost_is_refused_by_what_it_resolves_to():
    # the machine's own resolver: localhost is loopback wherever the suite runs
    error = refusal("https://localhost:8443/hooks")

    assert error.code == "address_not_public"
    assert "localhost resolves to" in english(error) and "a loopback address" in english(error)


@pytest.mark.parametrize(
    "url", ["ftp://files.partner.example/hooks", "file:///etc/passwd", "gopher://hooks.partner.example/", "//x/y"]
)
def test_only_https_urls_are_accepted(url, dns):
    dns.answer("files.partner.example", PUBLIC)
    dns.answer("hooks.partner.example", PUBLIC)

    error = refusal(url)

    assert error.code == "scheme_not_allowed"
    assert "https://" in english(error)


def test_plain_http_is_refused_unless_the_settings_allow_it_for_development(dns, settings):
    dns.answer("hooks.partner.example", PUBLIC)
    settings.WEBHOOK_ALLOW_HTTP = False
    assert "Use an https:// URL" in english(refusal("http://hooks.partner.example/hooks"))

    settings.WEBHOOK_ALLOW_HTTP = True
    PartnerFactory.build(webhook_url="http://hooks.partner.example/hooks").full_clean()
    # allowing http allows no more destinations
    assert "a loopback address" in english(refusal("http://127.0.0.1:8000/hooks"))


@pytest.mark.parametrize(
    "url", ["https://user:secret@hooks.partner.example/hooks", "https://token@hooks.partner.example/hooks"]
)
def test_credentials_in_the_url_are_refused(url, dns):
    dns.answer("hooks.partner.example", PUBLIC)

    error = refusal(url)

    assert error.code == "credentials_in_url"
    assert "user name and password" in english(error)


def test_a_name_that_does_not_resolve_is_refused(dns):
    error = refusal("https://nowhere.partner.example/hooks")

    assert error.code == "host_not_resolved"
    assert "nowhere.partner.example does not resolve" in english(error)


def test_a_public_https_url_is_accepted_and_an_allowed_network_is_let_through(dns, settings):
    dns.answer("hooks.partner.example", PUBLIC)
    dns.answer("vpn.partner.example", "10.20.30.40")
    dns.answer("other.partner.example", "10.21.0.1")
    PartnerFactory.build(webhook_url="https://hooks.partner.example:8443/crossmkt?via=hooks").full_clean()

    settings.WEBHOOK_ALLOWED_NETWORKS = ["10.20.0.0/16"]

    PartnerFactory.build(webhook_url="https://vpn.partner.example/hooks").full_clean()
    assert "a private address" in english(refusal("https://other.partner.example/hooks"))


def test_the_admin_shows_why_a_url_is_refused_and_saves_nothing(manager_client):
    response = manager_client.post(
        reverse("admin:campaigns_partner_add"),
        {
            "slug": "cinema",
            "name": "Cinema",
            "kind": "cinema",
            "webhook_url": "https://169.254.169.254/latest/meta-data/",
            "webhook_secret": "s3cret",
            "is_active": "on",
            "api_keys-TOTAL_FORMS": "0",
            "api_keys-INITIAL_FORMS": "0",
        },
    )

    assert response.status_code == 200
    page = response.content.decode()
    # the admin speaks Chinese by default
    assert "169.254.169.254 是链路本地地址" in page
    assert not Partner.objects.exists()


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("file:///etc/passwd", "Use an https:// URL"),
        ("https://127.0.0.1:8000/hooks", "a loopback address"),
        ("https://admin:pw@169.254.169.254/", "user name and password"),
    ],
)
def test_the_partner_command_refuses_a_bad_url_in_one_line(url, words):
    with pytest.raises(CommandError) as refused:
        call_command("partner", "add", "cinema", "--kind", "cinema", "--name", "Cinema", "--webhook-url", url)

    message = str(refused.value)
    assert words in message and "\n" not in message
    assert not Partner.objects.exists()


def test_the_partner_command_accepts_a_public_https_url(dns):
    dns.answer("hooks.cinema.example", PUBLIC)
    out = io.StringIO()

    call_command(
        "partner", "add", "cinema", "--kind", "cinema", "--name", "Cinema", "--webhook-url",
        "https://hooks.cinema.example/crossmkt", stdout=out,
    )  # fmt: skip

    assert Partner.objects.get().webhook_url == "https://hooks.cinema.example/crossmkt"


# --- at connect ----------------------------------------------------------------------------


def saved_partner(url: str) -> Partner:
    partner = PartnerFactory.build(webhook_url=url, kind=Partner.Kind.CINEMA)
    partner.full_clean()
    partner.save()
    return partner


def stored_unchecked(url: str) -> Partner:
    """Store a partner whose URL was never validated, as one saved before these checks existed."""
    return Partner.objects.create(slug=f"cinema-{secrets.token_hex(4)}", name="Cinema", kind="cinema", webhook_url=url)


def one_delivery(partner: Partner) -> WebhookDelivery:
    (delivery,) = webhook_deliveries_create(events=[(partner, "offer.revoked", {"code": "X"})])
    return delivery


def test_a_name_that_resolves_elsewhere_after_save_is_refused_at_connect_for_good(dns):
    # given a partner saved while its name pointed at a public address
    dns.answer("hooks.cinema.example", PUBLIC)
    partner = saved_partner("https://hooks.cinema.example/crossmkt")
    delivery = one_delivery(partner)

    # when the name is pointed at a private address before the attempt
    dns.answer("hooks.cinema.example", "10.0.0.7")
    result = webhook_attempt(delivery_id=delivery.pk, attempt=1)

    # then the attempt is refused and recorded, and the delivery fails for good rather than retrying
    delivery.refresh_from_db()
    attempt = WebhookAttempt.objects.get()
    assert (result.outcome, result.retry_in) == ("failed", None)
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("failed", 1, None)
    assert attempt.status_code is None and attempt.outcome == "failed"
    assert attempt.error.startswith("refused:")
    assert "hooks.cinema.example resolves to 10.0.0.7, a private address" in attempt.error
    assert delivery.last_error == attempt.error


def test_a_url_stored_before_the_check_is_refused_at_connect_without_connecting(endpoint, settings):
    # given a partner whose loopback URL was stored without validation, and an endpoint listening there
    server = endpoint()
    delivery = one_delivery(stored_unchecked(server.url))
    settings.WEBHOOK_ALLOWED_NETWORKS = []

    # when an attempt is made
    result = webhook_attempt(delivery_id=delivery.pk, attempt=1)

    # then nothing reached the endpoint and the attempt says why
    assert result.outcome == "failed"
    assert server.received == []
    assert "127.0.0.1 is a loopback address" in WebhookAttempt.objects.get().error


def test_a_name_that_no_longer_resolves_is_retried(dns):
    dns.answer("hooks.cinema.example", PUBLIC)
    delivery = one_delivery(saved_partner("https://hooks.cinema.example/crossmkt"))
    del dns.table["hooks.cinema.example"]

    result = webhook_attempt(delivery_id=delivery.pk, attempt=1)

    assert result.outcome == "retry" and result.retry_in
    assert "hooks.cinema.example does not resolve" in WebhookAttempt.objects.get().error


def test_the_sender_connects_to_the_address_it_vetted_and_names_the_host(endpoint, dns):
    # given a name that only the scripted resolver knows, answering 127.0.0.1 (allowed here) twice,
    # then a private address to anyone who asks again (a rebinding attack)
    server = endpoint()
    dns.answer_next("hooks.cinema.test", "127.0.0.1")
    dns.answer_next("hooks.cinema.test", "127.0.0.1")
    dns.answer("hooks.cinema.test", "10.9.9.9")
    partner = saved_partner(server.url_for("hooks.cinema.test"))
    delivery = one_delivery(partner)

    # when an attempt is made
    result = webhook_attempt(delivery_id=delivery.pk, attempt=1)

    # then it went to the address vetted at connect time, under the partner's host name, after one lookup
    assert result.outcome == "delivered"
    assert dns.lookups == ["hooks.cinema.test", "hooks.cinema.test"]  # one at save, one at connect
    (received,) = server.received
    assert received.headers["Host"] == f"hooks.cinema.test:{server.port}"


def test_a_path_and_query_outside_ascii_are_sent_percent_encoded(endpoint):
    server = endpoint()
    delivery = one_delivery(stored_unchecked(server.url.replace("/hooks/crossmkt", "/回调/crossmkt?合作=影视&a=%2F")))

    result = webhook_attempt(delivery_id=delivery.pk, attempt=1)

    assert result.outcome == "delivered"
    assert server.received[0].path == "/%E5%9B%9E%E8%B0%83/crossmkt?%E5%90%88%E4%BD%9C=%E5%BD%B1%E8%A7%86&a=%2F"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> Path:
    """Make a test CA and certificates for hooks.cinema.test signed by it (with the openssl command)."""
    folder = tmp_path_factory.mktemp("tls")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=crossmkt test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=hooks.cinema.test")
    (folder / "server.ext").write_text(
        "subjectAltName=DNS:hooks.cinema.test\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid,issuer\nsubjectKeyIdentifier=hash\n"
    )
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "server.ext",
    )  # fmt: skip
    return folder


def test_https_goes_to_the_vetted_address_with_the_host_name_for_sni_and_the_certificate(
    endpoint, dns, certificates, monkeypatch, settings
):
    # given an HTTPS endpoint with a certificate for hooks.cinema.test from a CA this process trusts
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates / "ca.pem"))
    settings.WEBHOOK_ALLOW_HTTP = False
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(certificates / "server.pem", certificates / "server.key")
    server = endpoint(tls=tls)
    dns.answer("hooks.cinema.test", "127.0.0.1")
    dns.answer("impostor.cinema.test", "127.0.0.1")
    right = saved_partner(server.url_for("hooks.cinema.test"))
    wrong = saved_partner(server.url_for("impostor.cinema.test"))

    # when each is sent an event
    delivered = webhook_attempt(delivery_id=one_delivery(right).pk, attempt=1)
    mismatched = webhook_attempt(delivery_id=one_delivery(wrong).pk, attempt=1)

    # then the right name was asked for in the handshake and verified against the certificate
    assert delivered.outcome == "delivered"
    assert server.server_names[0] == "hooks.cinema.test"
    assert server.received[0].headers["Host"] == f"hooks.cinema.test:{server.port}"
    # and a name the certificate does not cover is not sent to, though the address is the same
    assert mismatched.outcome == "retry"
    assert len(server.received) == 1
    assert "certificate" in WebhookAttempt.objects.get(delivery__partner=wrong).error.lower()


def test_a_redirect_is_not_followed(endpoint):
    # given an endpoint that redirects to the cloud metadata service
    server = endpoint(Reply(307, headers={"Location": "http://169.254.169.254/latest/meta-data/"}))
    delivery = one_delivery(stored_unchecked(server.url))

    result = webhook_attempt(delivery_id=delivery.pk, attempt=1)

    # then nothing followed it: one request, failed for good, and the attempt says so
    assert result.outcome == "failed"
    assert len(server.received) == 1
    attempt = WebhookAttempt.objects.get()
    assert attempt.status_code == 307
    assert "redirect not followed" in attempt.error


def test_the_attempt_keeps_only_a_short_clean_excerpt_of_a_failed_answers_body(endpoint):
    # given an endpoint answering 500 with a long body full of control characters, then 200 with a body
    noisy = b"internal\x1b[31m stack\r\ntrace\x00\x07 " + b"x" * 5000
    server = endpoint(Reply(500, body=noisy), Reply(200, body=b"secret-looking 200 body"))
    delivery = one_delivery(stored_unchecked(server.url))

    webhook_attempt(delivery_id=delivery.pk, attempt=1)
    webhook_attempt(delivery_id=delivery.pk, attempt=2)

    failed, delivered = WebhookAttempt.objects.order_by("number")
    # then the failed attempt keeps its status, timing and at most 200 printable characters of the body
    assert failed.status_code == 500 and failed.duration_ms >= 0
    excerpt = failed.error.partition(": ")[2]
    assert excerpt.startswith("internal [31m stack trace")
    assert len(excerpt) <= 200
    assert failed.error.isprintable()
    # and a delivered one keeps none of it
    assert (delivered.status_code, delivered.error) == (200, "")


# --- settings ------------------------------------------------------------------------------


def settings_value(module: str, name: str, **env: str) -> str:
    base = {key: value for key, value in os.environ.items() if not key.startswith("WEBHOOK_")}
    result = subprocess.run(
        [sys.executable, "-c", f"from django.conf import settings; print(settings.{name})"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={
            **base,
            "DJANGO_SETTINGS_MODULE": f"crossmkt_site.settings.{module}",
            "SECRET_KEY": secrets.token_urlsafe(64),
            "ALLOWED_HOSTS": "crossmkt.example.com",
            **env,
        },
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_production_sends_only_https_even_if_the_environment_asks_for_http():
    assert settings_value("production", "WEBHOOK_ALLOW_HTTP", WEBHOOK_ALLOW_HTTP="true") == "False"
    assert settings_value("local", "WEBHOOK_ALLOW_HTTP") == "True"
    assert settings_value("production", "WEBHOOK_ALLOWED_NETWORKS", WEBHOOK_ALLOWED_NETWORKS="10.20.0.0/16") == (
        "['10.20.0.0/16']"
    )


# --- the check itself, without Django ------------------------------------------------------


def check(url: str, table: dict[str, list[str]] | None = None) -> outbound_urls.Destination:
    return outbound_urls.outbound_url_check(url, allow_http=False, resolve=lambda host, port: (table or {})[host])


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("https://[2002:7f00:1::]/hooks", "loopback"),  # 6to4 around 127.0.0.1
        ("https://[64:ff9b::a00:1]/hooks", "private"),  # NAT64 around 10.0.0.1
        ("https://[::ffff:a9fe:a9fe]/hooks", "link-local"),  # 169.254.169.254, mapped
    ],
)
def test_ipv4_addresses_inside_ipv6_ones_are_judged_as_ipv4(url, kind):
    with pytest.raises(outbound_urls.OutboundURLRefused) as refused:
        check(url)

    assert f"a {kind} address" in refused.value.message


def test_the_destination_names_the_host_as_sent_and_keeps_the_vetted_addresses():
    idn = check("https://回调.example./hooks/收?x=1", {"xn--zbss05j.example": ["2606:4700:4700::1111", PUBLIC]})
    literal = check("https://[2606:4700:4700::1111]:8443/hooks")

    assert (idn.host, idn.port, idn.addresses) == ("xn--zbss05j.example", 443, ("2606:4700:4700::1111", PUBLIC))
    assert idn.target == "/hooks/%E6%94%B6?x=1"
    assert (literal.host, literal.port, literal.addresses) == ("2606:4700:4700::1111", 8443, ("2606:4700:4700::1111",))


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("https://hooks.partner.example:99999/hooks", "bad_port"),
        ("https:///hooks", "no_host"),
        ("https://a..b/hooks", "bad_host"),
    ],
)
def test_a_url_without_a_usable_host_or_port_is_refused(url, code):
    with pytest.raises(outbound_urls.OutboundURLRefused) as refused:
        check(url, {"hooks.partner.example": [PUBLIC]})

    assert refused.value.code == code
