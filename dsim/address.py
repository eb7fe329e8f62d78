"""Addresses as users write them: ``host:port``, MeerKAT's ``ADDRESS+N:port``, interfaces.

Both ends use these: dsim for its destinations and sending interface, and
dsim-verify for what it listens on, so that one spelling means one thing.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from .errors import ConfigError
from .spead import DEFAULT_DATA_PORT

#: ADDRESS+N: at most this N (MeerKAT writes +7 or +15; each address costs ring memory,
#: and a receiver joins at most a few hundred groups).
MAX_FANOUT = 255


@dataclass(frozen=True)
class Endpoint:
    """A resolved destination: numeric IPv4 address and UDP port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def is_multicast(self) -> bool:
        return ipaddress.ip_address(self.host).is_multicast


def parse_port(text: str, where: str) -> int:
    """A port written as plain decimal digits (not ``+80``, ``8_0`` or ``0x50``), 1-65535."""
    if not text.isascii() or not text.isdigit():
        raise ConfigError(f"{where}: bad port {text!r}")
    port = int(text)
    if not 1 <= port <= 65535:
        raise ConfigError(f"{where}: port must be 1-65535, not {port}")
    return port


def parse_destination(
    text: str, default_port: int = DEFAULT_DATA_PORT, *, fanout: bool = True
) -> list[Endpoint]:
    """Parse ``host[:port]`` or ``address+N[:port]`` into its endpoints.

    ``239.102.0.64+7:7148`` is MeerKAT's way of writing eight consecutive
    multicast groups (``.64`` to ``.71``) on one port: a digitiser spreads each
    polarisation over them, heap ``i`` to group ``i mod 8``.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = text, str(default_port)
    if not host:
        raise ConfigError(f"destination {text!r} has no host (expected host:port)")
    port = parse_port(port_text, f"destination {text!r}")
    base, plus, count_text = host.partition("+")
    if plus:
        if not fanout:
            raise ConfigError(f"{text!r}: one address expected, not a range")
        if not count_text.isascii() or not count_text.isdigit():
            raise ConfigError(f"destination {text!r}: expected ADDRESS+N with a whole N")
        try:
            first = ipaddress.IPv4Address(base)
        except ValueError:
            raise ConfigError(
                f"destination {text!r}: ADDRESS+N needs a numeric IPv4 address, not {base!r}"
            ) from None
        extra = int(count_text)
        if extra > MAX_FANOUT:
            raise ConfigError(
                f"destination {text!r}: at most {MAX_FANOUT + 1} addresses (ADDRESS+{MAX_FANOUT})"
            )
        if int(first) + extra > int(ipaddress.IPv4Address("255.255.255.255")):
            raise ConfigError(f"destination {text!r} runs past the last IPv4 address")
        last = first + extra
        if first.is_multicast != last.is_multicast:
            raise ConfigError(f"destination {text!r} leaves the multicast range")
        return [Endpoint(str(first + k), port) for k in range(extra + 1)]
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
        raise ConfigError(f"destination host {host!r} does not resolve: {reason}") from None
    return [Endpoint(str(infos[0][4][0]), port)]


def resolve_interface(address: str) -> str:
    """The numeric IPv4 address of a local interface, named by address or host name.

    Checked by binding a socket to it, so that a typo is one clear line here
    rather than an error from deep inside spead2 later.
    """
    if not address.strip():
        raise ConfigError("interface is empty: give the IPv4 address of the NIC to use")
    try:
        numeric = str(ipaddress.IPv4Address(address))
    except ValueError:
        try:
            numeric = socket.gethostbyname(address)
        except (OSError, UnicodeError):
            raise ConfigError(
                f"interface {address!r} is not an IPv4 address (or a name that resolves to one)"
            ) from None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((numeric, 0))
            # A broadcast address binds too; only an interface's own can send multicast.
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(numeric))
        except OSError:
            raise ConfigError(
                f"interface address {numeric} is not an address of this machine"
            ) from None
    return numeric
