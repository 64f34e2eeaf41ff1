"""Which network addresses a result download may reach: public ones, and networks a setting allows.

A provider's result URL, and every redirect after it, is chosen by a third
party; fetched blindly it could read the cloud metadata service
(169.254.169.254), a database on the private network or the server itself.
So every address a host name resolves to is checked, and the download then
connects to the checked address itself, so a DNS answer that changes
between the check and the connection (rebinding) cannot redirect it.
IPv6 forms that carry an IPv4 address (``::ffff:a.b.c.d``, 6to4, NAT64)
are judged by that IPv4 address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Instance metadata services (AWS, GCP, Azure: 169.254.169.254; AWS IPv6; ECS tasks; Alibaba; Oracle).
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address)
    for address in ("169.254.169.254", "fd00:ec2::254", "169.254.170.2", "100.100.100.200", "192.0.0.192")
)
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class AddressRefused(Exception):
    """A host that is, or resolves to, an address downloads may not reach; the message says which and why."""


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Public addresses, plus ``allowed`` networks (for tests and a provider on the local network)."""

    allowed: tuple[IPNetwork, ...] = ()

    @classmethod
    def allowing(cls, networks: Iterable[str]) -> AddressPolicy:
        """From addresses or CIDR networks (``127.0.0.1``, ``10.0.0.0/8``); ValueError names a bad one."""
        parsed: list[IPNetwork] = []
        for text in networks:
            try:
                parsed.append(ipaddress.ip_network(text.strip(), strict=False))
            except ValueError:
                raise ValueError(f"{text.strip()!r} is not an IP address or network") from None
        return cls(tuple(parsed))

    def refusal(self, address: IPAddress) -> str | None:
        """Why ``address`` may not be reached (``"a loopback address"``), or None when it may."""
        embedded = _embedded_ipv4(address)
        if any(candidate in network for candidate in (address, embedded) if candidate is not None
               for network in self.allowed if candidate.version == network.version):
            return None
        if embedded is not None:
            reason = _refusal(embedded)
            return None if reason is None else f"{reason} (IPv4 {embedded})"
        return _refusal(address)


PUBLIC_ONLY = AddressPolicy()


async def resolve_allowed(host: str, port: int, policy: AddressPolicy) -> list[str]:
    """The addresses to connect to for ``host``, in the resolver's order, once every one of them is allowed.

    Raises AddressRefused when any is not (a name that resolves to a public and
    a private address is refused: which one a client reaches is not ours to
    choose), and ``socket.gaierror`` when the name does not resolve.
    """
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise socket.gaierror(f"{host} resolves to no address")
    for text in addresses:
        address = ipaddress.ip_address(text)
        reason = policy.refusal(address)
        if reason is not None:
            where = f"{text} is" if text == host else f"{host} resolves to {text},"
            raise AddressRefused(f"{where} {reason}")
    return addresses


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _refusal(address: IPAddress) -> str | None:
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private address"
    if isinstance(address, ipaddress.IPv4Address) and address in _SHARED:
        return "a shared (carrier-grade NAT) address"
    if address.is_reserved or not address.is_global:
        return "a reserved address"
    return None
