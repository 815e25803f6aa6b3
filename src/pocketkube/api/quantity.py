"""resource.Quantity: exact fixed-point quantities such as ``500m``, ``1.5Gi`` or ``1e3``.

Ported from k8s.io/apimachinery pkg/api/resource. A value is held as an exact decimal
(``unscaled * 10**-scale``) like upstream's inf.Dec, never as a float. Parsing rounds to the
nearest nanounit away from zero (so ``0.1n`` becomes ``1n``) and caps binary-suffixed values at
2^63-1, exactly as upstream; ``canonical()`` reproduces upstream's serialised form, including
its habit of echoing an input that is already canonical verbatim (``+1`` stays ``+1``).
"""

from __future__ import annotations

import functools
from fractions import Fraction
from functools import total_ordering

DECIMAL_SI = "DecimalSI"
BINARY_SI = "BinarySI"
DECIMAL_EXPONENT = "DecimalExponent"

SPLIT_RE_STRING = "^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
ERR_FORMAT_WRONG = f"quantities must match the regular expression '{SPLIT_RE_STRING}'"
ERR_SUFFIX = "unable to parse quantity's suffix"

_INT64_MAX = 2**63 - 1
_INT64_MIN = -(2**63)
_INT32_MASK = 2**32
_NANO = 9  # digits after the point every parsed value is rounded up to

# suffix -> (base, exponent, format)
_SUFFIXES: dict[str, tuple[int, int, str]] = {
    "": (10, 0, DECIMAL_SI), "n": (10, -9, DECIMAL_SI), "u": (10, -6, DECIMAL_SI), "m": (10, -3, DECIMAL_SI),
    "k": (10, 3, DECIMAL_SI), "M": (10, 6, DECIMAL_SI), "G": (10, 9, DECIMAL_SI), "T": (10, 12, DECIMAL_SI),
    "P": (10, 15, DECIMAL_SI), "E": (10, 18, DECIMAL_SI),
    "Ki": (2, 10, BINARY_SI), "Mi": (2, 20, BINARY_SI), "Gi": (2, 30, BINARY_SI), "Ti": (2, 40, BINARY_SI),
    "Pi": (2, 50, BINARY_SI), "Ei": (2, 60, BINARY_SI),
}
_DECIMAL_SUFFIX_FOR_EXPONENT = {e: s for s, (b, e, _) in _SUFFIXES.items() if b == 10}
_BINARY_SUFFIX_FOR_EXPONENT = {e: s for s, (b, e, _) in _SUFFIXES.items() if b == 2}
_SUFFIX_CHARS = frozenset("eEinumkKMGTP")
_DIGITS = frozenset("0123456789")


def _digits(n: int) -> int:
    return len(str(abs(n))) if n else 0


def _strip_tens(unscaled: int, scale: int) -> tuple[int, int]:
    """Remove trailing decimal zeros from the mantissa: same value, smallest scale."""
    if unscaled == 0:
        return 0, 0
    text = str(abs(unscaled))
    zeros = len(text) - len(text.rstrip("0"))
    if zeros:
        unscaled = (abs(unscaled) // 10**zeros) * (1 if unscaled > 0 else -1)
    return unscaled, scale - zeros


def _cmp_decimal(a: tuple[int, int], b: tuple[int, int]) -> int:
    """Compare unscaled*10^-scale pairs without building 10**huge for far-apart exponents."""
    (ua, sa), (ub, sb) = a, b
    sign_a, sign_b = (ua > 0) - (ua < 0), (ub > 0) - (ub < 0)
    if sign_a != sign_b or sign_a == 0:
        return (sign_a > sign_b) - (sign_a < sign_b)
    # Same non-zero sign: compare magnitudes by order of magnitude first.
    mag_a, mag_b = _digits(ua) - sa, _digits(ub) - sb
    if mag_a != mag_b:
        bigger = 1 if mag_a > mag_b else -1
        return bigger * sign_a
    if sa > sb:
        ub *= 10 ** (sa - sb)
    else:
        ua *= 10 ** (sb - sa)
    return (ua > ub) - (ua < ub)


def _scan(text: str) -> tuple[bool, str, str, str]:
    """parseQuantityString: (positive, num, denom, suffix); num has leading zeros stripped."""
    positive, pos, end = True, 0, len(text)
    if pos < end and text[0] in "+-":
        positive = text[0] == "+"
        pos += 1
    while pos < end and text[pos] == "0":
        pos += 1
    if pos >= end:
        return positive, "0", "", ""
    start = pos
    while pos < end and text[pos] in _DIGITS:
        pos += 1
    num = text[start:pos] or "0"
    denom = ""
    if pos < end and text[pos] == ".":
        pos += 1
        start = pos
        while pos < end and text[pos] in _DIGITS:
            pos += 1
        denom = text[start:pos]
    suffix_start = pos
    while pos < end and text[pos] in _SUFFIX_CHARS:
        pos += 1
    if pos < end and text[pos] in "+-":
        pos += 1
    while pos < end and text[pos] in _DIGITS:
        pos += 1
    if pos < end:
        raise ValueError(ERR_FORMAT_WRONG)
    return positive, num, denom, text[suffix_start:]


def _interpret_suffix(suffix: str) -> tuple[int, int, str]:
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix]
    if len(suffix) > 1 and suffix[0] in "eE":
        digits = suffix[1:]
        sign_free = digits[1:] if digits[0] in "+-" else digits
        if not sign_free or not sign_free.isdigit():
            raise ValueError(ERR_SUFFIX)
        exponent = int(digits)
        if not _INT64_MIN <= exponent <= _INT64_MAX:
            raise ValueError(ERR_SUFFIX)
        # Upstream stores the parsed int64 in an int32, wrapping out-of-range exponents.
        exponent = (exponent + 2**31) % _INT32_MASK - 2**31
        return 10, exponent, DECIMAL_EXPONENT
    raise ValueError(ERR_SUFFIX)


def _keeps_input_string(num: str, denom: str, exponent: int, fmt: str) -> bool:
    """Upstream's fast path remembers the input string as the canonical form in these cases."""
    shifted = num + denom
    if fmt == BINARY_SI:
        if exponent < 0 or denom:
            return False
        precision = 15 - len(num) - (exponent * 3) // 10 - 1
        mantissa = 1 << exponent
        scale = 0
    else:
        precision = 18 - len(shifted)
        mantissa = 1
        scale = exponent - len(denom)
    if precision < 0 or scale < -_NANO:
        return False
    value = int(shifted)
    if value * mantissa > _INT64_MAX:
        return False  # int64Multiply overflow: the slow path never keeps the string
    if fmt == BINARY_SI:
        return exponent % 10 == 0 and value & 0x07 != 0
    return scale % 3 == 0 and not shifted.endswith("000") and shifted[0] != "0"


@total_ordering
class Quantity:
    """An exact quantity plus the format (DecimalSI, BinarySI, DecimalExponent) it prints in."""

    __slots__ = ("_unscaled", "_scale", "format", "_s")

    def __init__(self, unscaled: int = 0, scale: int = 0, fmt: str = DECIMAL_SI, *, _s: str | None = None) -> None:
        self._unscaled, self._scale = _strip_tens(unscaled, scale)
        self.format = fmt
        self._s = _s

    @classmethod
    def from_int(cls, value: int, fmt: str = DECIMAL_SI) -> Quantity:
        """resource.NewQuantity."""
        return cls(value, 0, fmt)

    @classmethod
    def from_milli(cls, value: int, fmt: str = DECIMAL_SI) -> Quantity:
        """resource.NewMilliQuantity."""
        return cls(value, 3, fmt)

    # ---- inspection ----

    def as_fraction(self) -> Fraction:
        if self._scale >= 0:
            return Fraction(self._unscaled, 10**self._scale)
        return Fraction(self._unscaled * 10 ** (-self._scale))

    def is_zero(self) -> bool:
        return self._unscaled == 0

    def sign(self) -> int:
        return (self._unscaled > 0) - (self._unscaled < 0)

    def scaled_value(self, scale: int) -> int:
        """ScaledValue: the value in units of 10**scale, rounded away from zero.

        Upstream returns a wrapped int64 on overflow; this saturates at the int64 bounds instead.
        """
        unscaled, shift = self._unscaled, -self._scale - scale  # value = unscaled * 10**shift units
        if unscaled == 0:
            return 0
        if shift >= 0:
            result = unscaled * 10**shift if shift <= 40 else _INT64_MAX * self.sign()
        elif -shift > _digits(unscaled):
            result = self.sign()  # a non-zero fraction of one unit rounds up to one unit
        else:
            whole, rest = divmod(abs(unscaled), 10**-shift)
            result = (whole + (1 if rest else 0)) * self.sign()
        return max(_INT64_MIN, min(_INT64_MAX, result))

    def value(self) -> int:
        """Value(): whole units, rounded up (``1500m`` -> 2)."""
        return self.scaled_value(0)

    def milli_value(self) -> int:
        """MilliValue(): thousandths, rounded up (``1n`` -> 1)."""
        return self.scaled_value(-3)

    # ---- formatting ----

    def _decimal_canonical(self) -> tuple[int, int]:
        """Mantissa and base-10 exponent with the exponent lowered to a multiple of 3."""
        mantissa, exponent = self._unscaled, -self._scale  # trailing zeros already stripped
        while exponent % 3:
            mantissa *= 10
            exponent -= 1
        return mantissa, exponent

    def canonical(self) -> str:
        """The string upstream serialises: largest suffix that keeps the number an integer."""
        if self._s is not None:
            return self._s
        if self._unscaled == 0:
            return "0"
        fmt = self.format
        if fmt == BINARY_SI:
            # Small or fractional binary values print as DecimalSI ("512", "1536m").
            if -1024 < self.as_fraction() < 1024 or self._scale > 0:
                fmt = DECIMAL_SI
        elif fmt not in (DECIMAL_SI, DECIMAL_EXPONENT):
            fmt = DECIMAL_EXPONENT
        if fmt == BINARY_SI:
            number = self._unscaled * 10 ** (-self._scale)
            power = 0
            while number % 1024 == 0:
                number //= 1024
                power += 10
            return f"{number}{_BINARY_SUFFIX_FOR_EXPONENT.get(power, '')}"
        mantissa, exponent = self._decimal_canonical()
        if fmt == DECIMAL_EXPONENT:
            return f"{mantissa}e{exponent}" if exponent else str(mantissa)
        # Upstream has no suffix beyond E (10^18) and silently prints none; kept as is.
        return f"{mantissa}{_DECIMAL_SUFFIX_FOR_EXPONENT.get(exponent, '')}"

    def __str__(self) -> str:
        return self.canonical()

    def __repr__(self) -> str:
        return f"Quantity({self.canonical()!r})"

    # ---- arithmetic and comparison (results are exact; format as upstream's Add/Sub) ----

    def _aligned(self, other: Quantity) -> tuple[int, int, int]:
        scale = max(self._scale, other._scale)
        return (self._unscaled * 10 ** (scale - self._scale), other._unscaled * 10 ** (scale - other._scale), scale)

    def __add__(self, other: Quantity) -> Quantity:
        if not isinstance(other, Quantity):
            return NotImplemented
        a, b, scale = self._aligned(other)
        return Quantity(a + b, scale, other.format if self.is_zero() else self.format)

    def __sub__(self, other: Quantity) -> Quantity:
        if not isinstance(other, Quantity):
            return NotImplemented
        a, b, scale = self._aligned(other)
        return Quantity(a - b, scale, other.format if self.is_zero() else self.format)

    def __mul__(self, factor: int) -> Quantity:
        if not isinstance(factor, int):
            return NotImplemented
        return Quantity(self._unscaled * factor, self._scale, self.format)

    __rmul__ = __mul__

    def __neg__(self) -> Quantity:
        return Quantity(-self._unscaled, self._scale, self.format)

    def cmp(self, other: Quantity) -> int:
        return _cmp_decimal((self._unscaled, self._scale), (other._unscaled, other._scale))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Quantity):
            return NotImplemented
        return self.cmp(other) == 0

    def __lt__(self, other: Quantity) -> bool:
        if not isinstance(other, Quantity):
            return NotImplemented
        return self.cmp(other) < 0

    def __hash__(self) -> int:
        return hash((self._unscaled, self._scale))  # normalised by _strip_tens, so equal values agree


def parse_quantity(text: str) -> Quantity:
    """resource.ParseQuantity; raises ValueError with upstream's message."""
    if isinstance(text, str):
        return _parse_cached(text)
    return _parse(text)


@functools.lru_cache(maxsize=4096)
def _parse_cached(text: str) -> Quantity:
    # The same few strings ("100m", "500Mi") are parsed for every pod; a Quantity is never modified.
    return _parse(text)


def _parse(text: str) -> Quantity:
    if not text:
        raise ValueError(ERR_FORMAT_WRONG)
    if text == "0":
        return Quantity(0, 0, DECIMAL_SI, _s="0")
    positive, num, denom, suffix = _scan(text)
    base, exponent, fmt = _interpret_suffix(suffix)
    # Decided on the parsed form, before rounding or a format change (upstream's fast path).
    kept = text if _keeps_input_string(num, denom, exponent, fmt) else None
    unscaled = int(num + denom)  # the scanner guarantees digits only, num is never empty
    scale = len(denom)
    if base == 10:
        scale -= exponent
    else:
        unscaled <<= exponent
    if unscaled == 0:
        return Quantity(0, 0, fmt)
    # Round up (away from zero) to whole nanounits.
    if scale > _NANO:
        drop = scale - _NANO
        if drop > _digits(unscaled):
            unscaled = 1
        else:
            whole, rest = divmod(unscaled, 10**drop)
            unscaled = whole + (1 if rest else 0)
        scale = _NANO
    if fmt == BINARY_SI:
        if _cmp_decimal((unscaled, scale), (_INT64_MAX, 0)) > 0:
            unscaled, scale = _INT64_MAX, 0
        if _cmp_decimal((unscaled, scale), (1, 0)) < 0:
            fmt = DECIMAL_SI  # binary suffixes cannot express values below one
    return Quantity(unscaled if positive else -unscaled, scale, fmt, _s=kept)
