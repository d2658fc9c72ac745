"""Calls to an address someone else named (a connector's endpoint, a consumer's push address):
SSRF-guarded, DNS-pinned, no redirects, short timeout. Used by the broker (``broker/catalog/netguard.py``)
and by a connector pushing to a consumer. No server state: the allow-list is a parameter.

``check(endpoint, allow_networks)`` normalises the endpoint, parses every spelling of an IP literal
(decimal ``2130706433``, octal ``0177.0.0.1``, hex ``0x7f.1``, short ``127.1``, IPv4-mapped/compatible,
NAT64 and 6to4 IPv6, bracketed IPv6), or resolves the name once (``socket.getaddrinfo``), and refuses
private, loopback, link-local, multicast, reserved, unspecified and CGNAT addresses unless each such
address lies in ``allow_networks`` (CIDRs). It returns the address it checked (``Pinned``).

``request(allow_networks, method, endpoint, path, ...)`` connects to exactly that address (the URL is
rewritten to the IP, the original ``Host`` header is sent, and for https the TLS SNI and certificate
check use the original host name), so a second DNS answer (rebinding) cannot redirect it.

Every failure — refused range, DNS failure, malformed URL, connection refused, timeout, TLS error,
oversized answer — raises the same ``BadGateway`` with the same detail, so the broker is no port
scanner. A response with an HTTP status (any status) is returned to the caller.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from twinspace.dataplane import normalise_endpoint
from twinspace.errors import BadGateway, TwinSpaceError

DETAIL = "The connector could not be reached."
CODE = "connector_unreachable"
DEFAULT_PORTS = {"http": 80, "https": 443}
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_V4_COMPAT = ipaddress.ip_network("::/96")


def unreachable() -> BadGateway:
    """The single error of this module (same text for every cause)."""
    return BadGateway(DETAIL, code=CODE)


@dataclass(frozen=True)
class Pinned:
    """A checked endpoint: its normalised spelling and the one address the broker will connect to."""

    endpoint: str          # normalised (the connector's audience)
    scheme: str
    host: str              # host name or IP literal as written (lower case, no brackets)
    port: int
    base_path: str         # path prefix of the endpoint ("" or "/x/y")
    ip: str                # the checked address connected to
    addresses: tuple[str, ...]

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    def url(self, path: str) -> str:
        ip = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{self.scheme}://{ip}:{self.port}{self.base_path}{path}"


def _unwrap(addr: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address embeds (mapped, compatible, NAT64, 6to4), else itself."""
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return addr.ipv4_mapped
        if addr.sixtofour is not None:
            return addr.sixtofour
        if addr in _NAT64 or (addr in _V4_COMPAT and int(addr) > 1):
            return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return addr


def parse_ip_literal(host: str) -> IPAddress | None:
    """``host`` as an IP address in any spelling the resolver would accept, or None for a name."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host.split("%", 1)[0] if ":" in host else host)
    except ValueError:
        pass
    if ":" in host:
        return None
    # Legacy IPv4 forms (decimal, octal, hex, short): what inet_aton, and so most resolvers, accept.
    if host and all(ch in "0123456789abcdefx." for ch in host.lower()) and any(ch.isdigit() for ch in host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except (OSError, ValueError):
            return None
    return None


def _networks(allow_networks) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    nets = []
    for cidr in allow_networks or []:
        try:
            nets.append(ipaddress.ip_network(str(cidr), strict=False))
        except ValueError:
            continue
    return nets


def is_special(addr: IPAddress) -> bool:
    """Not a public unicast address: private, loopback, link-local, multicast, reserved, unspecified, CGNAT."""
    return (addr.is_private or addr.is_loopback or addr.is_link_local or addr.is_multicast or addr.is_reserved
            or addr.is_unspecified or (isinstance(addr, ipaddress.IPv4Address) and addr in _CGNAT)
            or not addr.is_global)


def allowed(addr: IPAddress, allow_networks) -> bool:
    inner = _unwrap(addr)
    nets = _networks(allow_networks)
    if any(inner.version == n.version and inner in n for n in nets) or \
            any(addr.version == n.version and addr in n for n in nets):
        return True
    return not (is_special(addr) or is_special(inner))


def _resolve(host: str, port: int) -> list[IPAddress]:
    literal = parse_ip_literal(host)
    if literal is not None:
        return [literal]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError):
        raise unreachable() from None
    out: list[IPAddress] = []
    for info in infos:
        try:
            addr = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        except (ValueError, IndexError, TypeError):
            continue
        if addr not in out:
            out.append(addr)
    if not out:
        raise unreachable()
    return out


def check(endpoint: str, allow_networks) -> Pinned:
    """Normalise, resolve once and check ``endpoint``; the address to connect to. ``BadGateway`` otherwise."""
    try:
        normal = normalise_endpoint(endpoint)
        parts = urlsplit(normal)
        host = (parts.hostname or "").lower()
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except (TwinSpaceError, ValueError, KeyError):
        raise unreachable() from None
    if not host:
        raise unreachable()
    addresses = _resolve(host, port)
    if not all(allowed(a, allow_networks) for a in addresses):
        raise unreachable()
    ip = _unwrap(addresses[0])
    return Pinned(endpoint=normal, scheme=parts.scheme, host=host, port=port, base_path=parts.path,
                  ip=str(ip), addresses=tuple(str(a) for a in addresses))


def request(allow_networks, method: str, endpoint: str, path: str, *, json: Any = None,
            content: bytes | None = None, timeout: float = 10.0, headers: dict[str, str] | None = None,
            max_bytes: int = 1 << 20) -> httpx.Response:
    """One request to ``{endpoint}{path}`` at the checked address; the response (body read, at most
    ``max_bytes``) whatever its status; ``BadGateway`` for every failure to get one."""
    if path and not path.startswith("/"):
        path = "/" + path
    pinned = check(endpoint, allow_networks)
    limit, wait = max_bytes, timeout
    send_headers = {**(headers or {}), "Host": pinned.host_header}
    extensions = {"sni_hostname": pinned.host} if pinned.scheme == "https" and parse_ip_literal(pinned.host) is None \
        else {}
    try:
        with httpx.Client(timeout=wait, follow_redirects=False, trust_env=False) as http:
            req = http.build_request(method, pinned.url(path), json=json, content=content, headers=send_headers,
                                     extensions=extensions)
            response = http.send(req, stream=True)
            try:
                chunks, size = [], 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise unreachable()
                    chunks.append(chunk)
            finally:
                response.close()
    except BadGateway:
        raise
    except (httpx.HTTPError, OSError, ValueError, UnicodeError):
        raise unreachable() from None
    kept = [(k, v) for k, v in response.headers.multi_items()
             if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")]
    return httpx.Response(response.status_code, headers=kept, content=b"".join(chunks), request=req)
