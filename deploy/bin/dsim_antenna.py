#!/usr/bin/env python3
"""Entry point of one antenna of an array: derive its dsim command line, then exec dsim.

Installed in the image as ``dsim-antenna``; the Kubernetes StatefulSet runs it as the
container's command. Antenna ``k`` gets digitiser ids ``2k`` and ``2k + 1`` and, for
polarisation ``p``, the multicast groups ``BASE + k * ANTENNA_STRIDE + p * POL_STRIDE``
plus the next ``GROUPS - 1`` (written ``GROUP+7:PORT`` for 8 groups). Every antenna of
the array reads the same settings (one ConfigMap), so all share one sync time and ADC
rate. Arguments given to ``dsim-antenna`` are appended to dsim's.

Settings (environment):
  DSIM_ANTENNA          the antenna index k; default: the ordinal at the end of POD_NAME
                        (a StatefulSet pod is NAME-k; set POD_NAME from metadata.name
                        with the downward API: with hostNetwork, HOSTNAME is the node's)
  DSIM_SYNC_TIME        UNIX time of timestamp 0, shared by the array (required)
  DSIM_ADC_SAMPLE_RATE  ADC samples per second (default 1712e6, MeerKAT L-band)
  DSIM_BASE_GROUP       first multicast group of antenna 0 (default 239.102.0.0)
  DSIM_ANTENNA_STRIDE   groups between antennas (default 16)
  DSIM_POL_STRIDE       groups between an antenna's polarisations (default 8)
  DSIM_GROUPS           groups per polarisation (default 8)
  DSIM_DATA_PORT        UDP port (default 7148)
  DSIM_SIGNALS, DSIM_PERIOD, DSIM_MAX_PERIOD, DSIM_SAMPLE_BITS, DSIM_INTERFACE,
  DSIM_TTL, DSIM_KATCP_PORT (default 7147), DSIM_PROMETHEUS_PORT (default 9100),
  DSIM_KATCP_HOST (default 0.0.0.0: katcp has no authentication)
                        passed on as the dsim options of the same name when not empty
  DSIM_DITHER_SEED      antenna k gets --dither-seed DSIM_DITHER_SEED + k (independent
                        dither per antenna, reproducible); empty: dsim draws one

Exit status 2 with one line on stderr for a bad setting; otherwise dsim's own.
Standard library only, so that it also runs outside the image (tests, plain hosts).
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
import sys
from collections.abc import Mapping, Sequence

PROG = "dsim-antenna"
_ORDINAL = re.compile(r"-(\d+)$")


class SettingError(ValueError):
    """A setting is missing or wrong."""


def _get(env: Mapping[str, str], name: str, default: str = "") -> str:
    return env.get(name, "").strip() or default


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    text = _get(env, name, str(default))
    try:
        value = int(text, 0)
    except ValueError:
        raise SettingError(f"{name}={text!r} is not an integer") from None
    if value < minimum:
        raise SettingError(f"{name}={value} must be at least {minimum}")
    return value


def _number(env: Mapping[str, str], name: str, default: str = "") -> str:
    text = _get(env, name, default)
    if not text:
        raise SettingError(f"{name} is not set")
    try:
        value = float(text)
    except ValueError:
        raise SettingError(f"{name}={text!r} is not a number") from None
    if not 0 <= value < float("inf"):
        raise SettingError(f"{name}={text!r} must be a finite, non-negative number")
    return text


def antenna_index(env: Mapping[str, str]) -> int:
    """The antenna index: DSIM_ANTENNA, else the StatefulSet ordinal in POD_NAME."""
    if _get(env, "DSIM_ANTENNA"):
        return _int(env, "DSIM_ANTENNA", 0)
    name = _get(env, "POD_NAME")
    match = _ORDINAL.search(name)
    if not match:
        raise SettingError(
            f"no antenna index: set DSIM_ANTENNA, or POD_NAME to a StatefulSet pod name "
            f"ending in -ORDINAL (POD_NAME={name!r})"
        )
    return int(match.group(1))


def destinations(env: Mapping[str, str], k: int) -> list[str]:
    """Antenna k's DEST per polarisation: ``GROUP+N:PORT``."""
    text = _get(env, "DSIM_BASE_GROUP", "239.102.0.0")
    try:
        base = ipaddress.IPv4Address(text)
    except ValueError:
        raise SettingError(f"DSIM_BASE_GROUP={text!r} is not an IPv4 address") from None
    groups = _int(env, "DSIM_GROUPS", 8, minimum=1)
    pol_stride = _int(env, "DSIM_POL_STRIDE", 8, minimum=groups)
    antenna_stride = _int(env, "DSIM_ANTENNA_STRIDE", 16, minimum=2 * pol_stride)
    port = _int(env, "DSIM_DATA_PORT", 7148, minimum=1)
    if port > 65535:
        raise SettingError(f"DSIM_DATA_PORT={port} is not a UDP port")
    dests = []
    for pol in (0, 1):
        first = int(base) + k * antenna_stride + pol * pol_stride
        last = first + groups - 1
        if last > int(ipaddress.IPv4Address("239.255.255.255")) or not all(
            ipaddress.IPv4Address(a).is_multicast for a in (first, last)
        ):
            raise SettingError(
                f"antenna {k}, polarisation {pol}: groups from {ipaddress.IPv4Address(first)} "
                f"(DSIM_BASE_GROUP={base}) leave the multicast range"
            )
        count = f"+{groups - 1}" if groups > 1 else ""
        dests.append(f"{ipaddress.IPv4Address(first)}{count}:{port}")
    return dests


def command(env: Mapping[str, str], extra: Sequence[str] = ()) -> list[str]:
    """The dsim command line of this antenna (``dsim`` first)."""
    k = antenna_index(env)
    args = [
        "dsim",
        "--format",
        "meerkat",
        "--digitiser-id",
        str(2 * k),
        "--sync-time",
        _number(env, "DSIM_SYNC_TIME"),
        "--adc-sample-rate",
        _number(env, "DSIM_ADC_SAMPLE_RATE", "1712e6"),
        "--katcp-host",
        _get(env, "DSIM_KATCP_HOST", "0.0.0.0"),
        "--katcp-port",
        str(_int(env, "DSIM_KATCP_PORT", 7147)),
    ]
    optional = {
        "DSIM_PROMETHEUS_PORT": "--prometheus-port",
        "DSIM_SIGNALS": "--signals",
        "DSIM_PERIOD": "--period",
        "DSIM_MAX_PERIOD": "--max-period",
        "DSIM_SAMPLE_BITS": "--sample-bits",
        "DSIM_INTERFACE": "--interface",
        "DSIM_TTL": "--ttl",
    }
    defaults = {"DSIM_PROMETHEUS_PORT": "9100"}
    for name, flag in optional.items():
        value = _get(env, name, defaults.get(name, ""))
        if value:
            args += [flag, value]
    if _get(env, "DSIM_DITHER_SEED"):
        args += ["--dither-seed", str(_int(env, "DSIM_DITHER_SEED", 0) + k)]
    return [*args, *extra, *destinations(env, k)]


def main(argv: Sequence[str] | None = None) -> int:
    extra = list(sys.argv[1:] if argv is None else argv)
    try:
        args = command(os.environ, extra)
    except SettingError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    print(f"{PROG}: {shlex.join(args)}", file=sys.stderr, flush=True)
    try:
        os.execvp(args[0], args)
    except OSError as exc:
        print(f"{PROG}: error: cannot run {args[0]}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
