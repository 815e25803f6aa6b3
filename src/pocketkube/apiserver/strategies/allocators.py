"""Cluster IP and node port allocation for Services (upstream pkg/registry/core/service/{ipallocator,portallocator}).

State lives in memory and is rebuilt from the stored Services at start-up (`load_existing`), which is what
upstream's repair controllers guarantee: the stored Services are the source of truth.
"""

from __future__ import annotations

import ipaddress
import random

# Upstream error texts (ipallocator.ErrAllocated / ErrFull, portallocator.ErrAllocated / ErrFull).
IP_ALLOCATED = "provided IP is already allocated"
PORT_ALLOCATED = "provided port is already allocated"
RANGE_FULL = "range is full"


class AllocationError(Exception):
    """A requested value cannot be had: already taken, outside the range, or the range is full."""

    def __init__(self, message: str, *, full: bool = False) -> None:
        super().__init__(message)
        self.full = full


class _Range:
    """A set of integers [low, high] with a static lower band that random allocation avoids while it can.

    Upstream (KEP-3070 for IPs, KEP-3668 for node ports) splits each range so that dynamically assigned
    values come from the upper band first, leaving the lower band for values users ask for explicitly.
    """

    def __init__(self, low: int, high: int, static_size: int, rng: random.Random) -> None:
        self.low = low
        self.high = high
        self.static_end = min(high, low + static_size - 1)
        self.used: set[int] = set()
        self._rng = rng

    def contains(self, value: int) -> bool:
        return self.low <= value <= self.high

    def take_next(self, low: int | None = None) -> int:
        start_low = self.low if low is None else low
        for band_low, band_high in ((self.static_end + 1, self.high), (start_low, self.static_end)):
            value = self._scan(band_low, band_high)
            if value is not None:
                self.used.add(value)
                return value
        raise AllocationError(RANGE_FULL, full=True)

    def _scan(self, low: int, high: int) -> int | None:
        if low > high:
            return None
        size = high - low + 1
        offset = self._rng.randrange(size)
        for step in range(size):
            candidate = low + (offset + step) % size
            if candidate not in self.used:
                return candidate
        return None


class ClusterIPAllocator:
    """Hands out addresses of the service CIDR; never the network or broadcast address.

    The first usable address is reserved for the `kubernetes` Service: random allocation never returns it,
    only an explicit request does.
    """

    def __init__(self, cidr: str, rng: random.Random | None = None) -> None:
        self.network = ipaddress.ip_network(cidr, strict=False)
        if self.network.version == 4:
            # Network and broadcast addresses are not usable.
            low, high = int(self.network.network_address) + 1, int(self.network.broadcast_address) - 1
        else:
            # IPv6 has no broadcast; the subnet-router anycast address (the base) is still skipped.
            low, high = int(self.network.network_address) + 1, int(self.network.broadcast_address)
        if high < low:
            raise ValueError(f"service CIDR {cidr} is too small")
        size = high - low + 1
        self._range = _Range(low, high, min(max(16, size // 16), 256), rng or random.Random())

    @property
    def family(self) -> str:
        return "IPv4" if self.network.version == 4 else "IPv6"

    @property
    def first_address(self) -> str:
        """The address the `kubernetes` Service asks for."""
        return str(ipaddress.ip_address(self._range.low))

    def allocate(self, ip: str) -> None:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            raise AllocationError(f"failed to parse IP {ip}") from None
        value = int(addr)
        if addr.version != self.network.version or not self._range.contains(value):
            raise AllocationError(f"the provided IP ({ip}) is not in the valid range. "
                                  f"The range of valid IPs is {self.network}")
        if value in self._range.used:
            raise AllocationError(IP_ALLOCATED)
        self._range.used.add(value)

    def allocate_next(self) -> str:
        value = self._range.take_next(low=self._range.low + 1)
        return str(ipaddress.ip_address(value))

    def release(self, ip: str) -> None:
        try:
            self._range.used.discard(int(ipaddress.ip_address(ip)))
        except ValueError:
            pass

    def has(self, ip: str) -> bool:
        try:
            return int(ipaddress.ip_address(ip)) in self._range.used
        except ValueError:
            return False

    def contains(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return addr.version == self.network.version and self._range.contains(int(addr))

    def used(self) -> int:
        return len(self._range.used)


class NodePortAllocator:
    """Hands out ports of the node port range (default 30000-32767)."""

    def __init__(self, port_range: tuple[int, int] = (30000, 32767), rng: random.Random | None = None) -> None:
        low, high = port_range
        if high < low:
            raise ValueError(f"invalid node port range {low}-{high}")
        self.low, self.high = low, high
        size = high - low + 1
        self._range = _Range(low, high, min(max(16, size // 32), 128), rng or random.Random())

    def allocate(self, port: int) -> None:
        if not self._range.contains(port):
            raise AllocationError(f"provided port is not in the valid range. "
                                  f"The range of valid ports is {self.low}-{self.high}")
        if port in self._range.used:
            raise AllocationError(PORT_ALLOCATED)
        self._range.used.add(port)

    def allocate_next(self) -> int:
        return self._range.take_next()

    def release(self, port: int) -> None:
        self._range.used.discard(port)

    def has(self, port: int) -> bool:
        return port in self._range.used

    def contains(self, port: int) -> bool:
        return self._range.contains(port)

    def used(self) -> int:
        return len(self._range.used)
