"""Outbound URLs we connect to on someone else's say-so: only public addresses, checked when saved and at connect.

A partner chooses where its webhooks go, so the URL must not turn our server into a way of
reaching what only it can reach (the cloud metadata service, the database, an admin port on
the private network). ``outbound_url_check`` takes a URL and a resolver and returns the
destination with the addresses it vetted, or raises ``OutboundURLRefused`` saying why:

- the scheme is ``https`` (``http`` only when the caller allows it, for development);
- there are no credentials in the URL, and there is a host and a valid port;
- the host resolves, and every address it resolves to is a public internet address: none
  loopback, private, link-local, multicast, reserved, unspecified or otherwise not globally
  routable (IPv4 addresses inside IPv6 ones are judged as IPv4), unless the caller allows
  its network explicitly.

``pinned_connection`` then connects to one of the vetted addresses, never to the name
again, so a name that resolves differently between the check and the connection (DNS
rebinding) cannot redirect it; the host name still goes in the ``Host`` header and, for
https, in the TLS handshake (SNI) and the certificate check.

Standard library only: the Django side reads its settings and passes them in.
"""

import http.client
import ipaddress
import os
import socket
import ssl
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache, partial
from urllib.parse import quote, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# host, port -> the addresses it resolves to; raises OSError when it does not resolve.
Resolver = Callable[[str, int], Sequence[str]]

DEFAULT_PORTS = {"https": 443, "http": 80}
# Characters left as they are in a path or query (RFC 3986's reserved and unreserved ones, and "%").
_URL_SAFE = "!#$%&'()*+,/:;=?@[]~"


def gettext_noop(message: str) -> str:
    """Mark a message for translation without translating it (the Django side translates it when it shows it)."""
    return message


# How each kind of refused address is named in a message.
ADDRESS_KINDS = {
    "unspecified": gettext_noop("unspecified"),
    "loopback": gettext_noop("loopback"),
    "link-local": gettext_noop("link-local"),
    "multicast": gettext_noop("multicast"),
    "reserved": gettext_noop("reserved"),
    "private": gettext_noop("private"),
    "non-public": gettext_noop("non-public"),
}


class OutboundURLRefused(ValueError):
    """Why a URL may not be connected to: a code, a message template and its parameters.

    ``message`` is the English text; a caller that shows it in another language translates
    ``template`` (and the ``kind`` parameter, from ``ADDRESS_KINDS``) and fills in ``params``.
    ``transient`` is true when the same URL may pass later without being changed (the name
    did not resolve).
    """

    def __init__(self, code: str, template: str, transient: bool = False, **params: str):
        self.code, self.template, self.params, self.transient = code, template, params, transient
        super().__init__(template % params if params else template)

    @property
    def message(self) -> str:
        return str(self)


@dataclass(frozen=True)
class Destination:
    """A checked URL: where to connect (``addresses``, all vetted) and what to ask for there."""

    url: str
    scheme: str
    host: str  # as it goes in the Host header and the TLS handshake: IDNA-encoded, IPv6 without brackets
    port: int
    target: str  # path and query
    addresses: tuple[str, ...] = field(default=())


def system_resolve(host: str, port: int) -> list[str]:
    """Return the addresses the system resolver gives for a host, in its order of preference, without repeats."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


# The resolver every check uses; a test puts a scripted one here.
resolver: Resolver = system_resolve


def address_kind(address: IPAddress) -> str | None:
    """Return why an address is not a public internet address (a key of ``ADDRESS_KINDS``), or None if it is."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return address_kind(embedded)
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("non-public", not address.is_global),
    )
    return next((kind for kind, applies in checks if applies), None)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    # ::ffff:a.b.c.d reaches a.b.c.d on a dual-stack socket; 6to4 and NAT64 carry one too, and
    # Python before 3.13 does not look inside them (::ffff:127.0.0.1 is not "loopback" there).
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def parse_networks(networks: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Read networks such as ``10.20.0.0/16`` or ``fd00:1::/64``; raise ValueError naming a bad one."""
    parsed = []
    for network in networks:
        try:
            parsed.append(ipaddress.ip_network(network.strip(), strict=False))
        except ValueError as error:
            raise ValueError(f"not a network: {network!r} ({error})") from None
    return tuple(parsed)


def outbound_url_check(
    url: str,
    *,
    allow_http: bool,
    allowed_networks: Iterable[str] = (),
    resolve: Resolver | None = None,
) -> Destination:
    """Check a URL and resolve its host once; return the destination with its vetted addresses.

    Raise ``OutboundURLRefused`` for a scheme other than https (or http when ``allow_http``),
    credentials in the URL, a missing host, a bad port, a host that does not resolve, or any
    resolved address that is not public and not inside ``allowed_networks``.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    schemes = ("https", "http") if allow_http else ("https",)
    if not scheme:
        raise OutboundURLRefused("scheme_not_allowed", gettext_noop("Give the full URL, starting with https://."))
    if scheme not in schemes:
        template = (
            gettext_noop("Use an https:// or http:// URL; %(scheme)s:// is not allowed.")
            if allow_http
            else gettext_noop("Use an https:// URL; %(scheme)s:// is not allowed.")
        )
        raise OutboundURLRefused("scheme_not_allowed", template, scheme=scheme)
    if parts.username is not None or parts.password is not None:
        raise OutboundURLRefused(
            "credentials_in_url",
            gettext_noop(
                "Remove the user name and password from the URL; requests are authenticated by their signature."
            ),
        )
    if not parts.hostname:
        raise OutboundURLRefused("no_host", gettext_noop("The URL has no host."))
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise OutboundURLRefused("bad_port", gettext_noop("The port must be a number from 1 to 65535.")) from None
    host = parts.hostname.rstrip(".") if not _is_ip(parts.hostname) else parts.hostname
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise OutboundURLRefused(
            "bad_host", gettext_noop("%(host)s is not a valid host name."), host=parts.hostname
        ) from None
    literal = _is_ip(host)
    if literal:
        addresses = [host]
    else:
        try:
            addresses = list((resolve or resolver)(host, port))
        except (OSError, UnicodeError) as error:
            raise OutboundURLRefused(
                "host_not_resolved", gettext_noop("%(host)s does not resolve (%(error)s)."), transient=True,
                host=host, error=_resolver_error(error),
            ) from None  # fmt: skip
        if not addresses:
            raise OutboundURLRefused(
                "host_not_resolved", gettext_noop("%(host)s does not resolve (%(error)s)."), transient=True,
                host=host, error="no addresses",
            )  # fmt: skip
    allowed = parse_networks(allowed_networks)
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        if any(address in network for network in allowed if network.version == address.version):
            continue
        kind = address_kind(address)
        if kind is None:
            continue
        if literal:
            raise OutboundURLRefused(
                "address_not_public",
                gettext_noop("%(address)s is a %(kind)s address; only public internet addresses are allowed."),
                address=text, kind=ADDRESS_KINDS[kind],
            )  # fmt: skip
        raise OutboundURLRefused(
            "address_not_public",
            gettext_noop(
                "%(host)s resolves to %(address)s, a %(kind)s address; "
                "only public internet addresses are allowed."
            ),
            host=host, address=text, kind=ADDRESS_KINDS[kind],
        )  # fmt: skip
    # As browsers and requests do: percent-encode what may not go on the request line, keep existing escapes.
    target = quote(parts.path or "/", safe=_URL_SAFE)
    if parts.query:
        target = f"{target}?{quote(parts.query, safe=_URL_SAFE)}"
    return Destination(url=url, scheme=scheme, host=host, port=port, target=target, addresses=tuple(addresses))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _resolver_error(error: BaseException) -> str:
    if isinstance(error, socket.gaierror) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


class PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to a checked destination that connects only to its vetted addresses."""

    def __init__(self, destination: Destination, *, timeout: float):
        super().__init__(destination.host, destination.port, timeout=timeout)
        # http.client opens its socket through this attribute, with (host, port): the name is never resolved again.
        self._create_connection = partial(_pinned, destination.addresses)


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """An HTTPS connection to a checked destination; the handshake and certificate name the host, not the address."""

    def __init__(self, destination: Destination, *, timeout: float, context: ssl.SSLContext):
        super().__init__(destination.host, destination.port, timeout=timeout, context=context)
        self._create_connection = partial(_pinned, destination.addresses)


def _pinned(addresses: Sequence[str], address: tuple[str, int], timeout, source_address=None) -> socket.socket:
    """Open a TCP connection to the first vetted address that answers, on the destination's port."""
    last_error: OSError | None = None
    for vetted in addresses:
        try:
            return socket.create_connection((vetted, address[1]), timeout, source_address)
        except OSError as error:
            last_error = error
    raise last_error or OSError("no address to connect to")


def pinned_connection(
    destination: Destination, *, timeout: float, context: ssl.SSLContext | None = None
) -> http.client.HTTPConnection:
    """Return an unopened connection to a checked destination that will use only its vetted addresses.

    For https the certificate is verified against the host name, with ``context`` or the
    default one (the system's trusted CAs, or those ``SSL_CERT_FILE``/``SSL_CERT_DIR`` name).
    """
    if destination.scheme == "https":
        return PinnedHTTPSConnection(destination, timeout=timeout, context=context or default_tls_context())
    return PinnedHTTPConnection(destination, timeout=timeout)


def default_tls_context() -> ssl.SSLContext:
    """Return the default client TLS context, made once per CA configuration in the environment."""
    return _tls_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


# Loading the CA bundle takes tens of milliseconds (68 ms measured), too much to repeat per attempt.
@lru_cache(maxsize=4)
def _tls_context(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    # The arguments only key the cache: the default context reads the same variables itself.
    return ssl.create_default_context()
