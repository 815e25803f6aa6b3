"""resource.Quantity parsing, canonical form and arithmetic (upstream quantity_test.go cases)."""

from __future__ import annotations

from fractions import Fraction

import pytest

from pocketkube.api.quantity import (
    BINARY_SI,
    DECIMAL_EXPONENT,
    DECIMAL_SI,
    ERR_FORMAT_WRONG,
    ERR_SUFFIX,
    Quantity,
    parse_quantity,
)

F = Fraction


@pytest.mark.parametrize(("text", "value", "fmt"), [
    ("0", F(0), DECIMAL_SI), ("0n", F(0), DECIMAL_SI), ("0Ki", F(0), BINARY_SI), ("0T", F(0), DECIMAL_SI),
    ("1", F(1), DECIMAL_SI),
    ("1Ki", F(1024), BINARY_SI), ("7Mi", F(7 * 2**20), BINARY_SI), ("3Ei", F(3 * 2**60), BINARY_SI),
    ("5n", F(5, 10**9), DECIMAL_SI), ("4u", F(4, 10**6), DECIMAL_SI), ("3m", F(3, 1000), DECIMAL_SI),
    ("50k", F(50000), DECIMAL_SI), ("40T", F(40 * 10**12), DECIMAL_SI), ("1E", F(10**18), DECIMAL_SI),
    ("1E-3", F(1, 1000), DECIMAL_EXPONENT), ("1e3", F(1000), DECIMAL_EXPONENT), ("1E18", F(10**18), DECIMAL_EXPONENT),
    ("100.035k", F(100035), DECIMAL_SI), ("0.0005k", F(1, 2), DECIMAL_SI), (".001", F(1, 1000), DECIMAL_SI),
    ("1.2e3", F(1200), DECIMAL_EXPONENT), ("1.3E+6", F(1300000), DECIMAL_EXPONENT),
    ("0.5e-2", F(5, 1000), DECIMAL_EXPONENT), ("6.987654321G", F(6987654321), DECIMAL_SI),
    ("1.01E", F(101 * 10**16), DECIMAL_SI),
    # Rounded up to whole nanounits, away from zero.
    ("3.001n", F(4, 10**9), DECIMAL_SI), ("1.1E-9", F(2, 10**9), DECIMAL_EXPONENT),
    ("0.0000000001", F(1, 10**9), DECIMAL_SI), ("0.00000012345", F(124, 10**9), DECIMAL_SI),
    ("0.9n", F(1, 10**9), DECIMAL_SI),
    # Binary values are capped at 2^63-1.
    ("9Ei", F(2**63 - 1), BINARY_SI), ("9223372036854775807Ki", F(2**63 - 1), BINARY_SI),
    ("12E", F(12 * 10**18), DECIMAL_SI),
    ("100.035Ki", F(10243584, 100), BINARY_SI), ("0.5Mi", F(2**19), BINARY_SI),
    # Fractional binary values below one switch to DecimalSI.
    ("0.000000000001Ki", F(2, 10**9), DECIMAL_SI),
    ("1.", F(1), DECIMAL_SI), ("1.G", F(10**9), DECIMAL_SI),
])
def test_parse_values_and_formats(text: str, value: Fraction, fmt: str) -> None:
    for prefix, sign in (("", 1), ("+", 1), ("-", -1)):
        q = parse_quantity(prefix + text)
        assert q.as_fraction() == sign * value, prefix + text
        assert q.format == fmt


@pytest.mark.parametrize(("text", "message"), [
    ("", ERR_FORMAT_WRONG), ("1.1.M", ERR_FORMAT_WRONG), ("1+1.0M", ERR_FORMAT_WRONG),
    ("0.1am", ERR_FORMAT_WRONG), ("aoeu", ERR_FORMAT_WRONG), (" 1", ERR_FORMAT_WRONG), ("1 ", ERR_FORMAT_WRONG),
    ("1Gb", ERR_FORMAT_WRONG), ("10%", ERR_FORMAT_WRONG),
    ("0.1mi", ERR_SUFFIX), (".5i", ERR_SUFFIX), ("1i", ERR_SUFFIX), ("-3.01i", ERR_SUFFIX),
    ("-3.01e-", ERR_SUFFIX), ("1e", ERR_SUFFIX), ("1KiB", ERR_FORMAT_WRONG), ("1ki", ERR_SUFFIX),
])
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_quantity(text)
    assert str(info.value) == message


def test_error_message_text() -> None:
    assert ERR_FORMAT_WRONG == (
        "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")


@pytest.mark.parametrize(("text", "canonical"), [
    # Brief examples.
    ("1000m", "1"), ("1.5Gi", "1536Mi"), ("0.1", "100m"),
    # TestQuantityParseEmit.
    ("1Ki", "1Ki"), ("1024Mi", "1Gi"), ("1000M", "1G"), (".001Ki", "1024m"), (".000001Ki", "1024u"),
    (".000000001Ki", "1024n"), (".000000000001Ki", "2n"),
    # TestQuantityString alternates.
    ("307200Ki", "300Mi"), ("1025024Mi", "1001Gi"), ("1024Gi", "1Ti"), ("5000m", "5"), ("0.5", "500m"),
    ("0.001T", "1G"), ("1000u", "1m"), ("1.08", "1080m"), ("1080000000n", "1080m"), (".001e12", "1e9"),
    ("0.001e0", "1e-3"), ("1000e-12", "1e-9"), ("00", "0"),
    # Binary values that are small or fractional print as DecimalSI.
    ("0.5Ki", "512"), ("1.5Ki", "1536"), ("1023Ki", "1023Ki"), ("100.035Ki", "102435840m"),
    ("9Ei", "9223372036854775807"), ("8Ki", "8Ki"), ("2048Ki", "2Mi"),
    ("1.1E-9", "2e-9"), ("10e3", "10e3"), ("3.001n", "4n"), ("300.2T", "300200G"),
    ("-1.5", "-1500m"), ("-1024Mi", "-1Gi"), ("-0", "0"), (".", "0"),
    # Upstream echoes inputs that its fast path deems canonical, even when oddly written.
    ("+1", "+1"), ("01", "01"), ("1E3", "1E3"), ("1.G", "1.G"), ("100m", "100m"), ("1Gi", "1Gi"),
    # No suffix exists beyond E, and upstream then prints the bare mantissa.
    ("1000E", "1"),
])
def test_canonical(text: str, canonical: str) -> None:
    q = parse_quantity(text)
    assert q.canonical() == canonical
    assert str(q) == canonical


@pytest.mark.parametrize("text", ["1Gi", "300Mi", "6Ki", "5", "500m", "1G", "1m", "80m", "1080m", "1234567M",
                                  "3k", "1025", "0", "1e9", "1e-3", "80e-3", "300e6", "1n", "1080u"])
def test_canonical_forms_are_fixed_points(text: str) -> None:
    assert parse_quantity(text).canonical() == text
    assert parse_quantity("-" + text).canonical() == ("0" if text == "0" else "-" + text)


@pytest.mark.parametrize(("text", "value", "milli"), [
    ("1", 1, 1000), ("1500m", 2, 1500), ("1n", 1, 1), ("0.1", 1, 100), ("1Gi", 2**30, 2**30 * 1000),
    ("-1.5", -2, -1500), ("-1n", -1, -1), ("0", 0, 0), ("123456789n", 1, 124),
    ("9Ei", 2**63 - 1, 2**63 - 1),  # milli saturates (upstream would overflow)
    ("1e-999999999", 1, 1), ("1e999999999", 2**63 - 1, 2**63 - 1),
])
def test_value_and_milli_value_round_up(text: str, value: int, milli: int) -> None:
    q = parse_quantity(text)
    assert q.value() == value
    assert q.milli_value() == milli


def test_huge_exponents_stay_cheap() -> None:
    q = parse_quantity("1e999999999")
    assert q.canonical() == "1e999999999"
    assert q > parse_quantity("9Ei")
    assert parse_quantity("1e-999999999").canonical() == "1e-9"
    assert parse_quantity("-1e999999999") < parse_quantity("-1")


def test_comparison_and_equality() -> None:
    assert parse_quantity("1") == parse_quantity("1000m")
    assert parse_quantity("1Ki") == parse_quantity("1024")
    assert hash(parse_quantity("1")) == hash(parse_quantity("1000m"))
    assert parse_quantity("999m") < parse_quantity("1")
    assert parse_quantity("1Mi") > parse_quantity("1M")
    assert parse_quantity("-2") < parse_quantity("-1") < parse_quantity("0") < parse_quantity("1n")
    assert sorted(parse_quantity(s) for s in ["1Gi", "1G", "500m", "2"]) == [
        parse_quantity("500m"), parse_quantity("2"), parse_quantity("1G"), parse_quantity("1Gi")]
    assert parse_quantity("1").cmp(parse_quantity("2")) == -1
    assert parse_quantity("1") != "1"


def test_arithmetic() -> None:
    total = parse_quantity("100m") + parse_quantity("1.5")
    assert total.canonical() == "1600m" and total.format == DECIMAL_SI
    assert (parse_quantity("1Gi") - parse_quantity("512Mi")).canonical() == "512Mi"
    # Adding to zero adopts the other operand's format, as upstream's Add.
    assert (parse_quantity("0") + parse_quantity("1Ki")).canonical() == "1Ki"
    assert (parse_quantity("1Ki") + parse_quantity("1")).canonical() == "1025"
    assert (parse_quantity("250m") * 4).canonical() == "1"
    assert (3 * parse_quantity("1Mi")).canonical() == "3Mi"
    assert (-parse_quantity("1.5Gi")).canonical() == "-1536Mi"
    # Arithmetic drops the remembered input string.
    assert (parse_quantity("+1") + parse_quantity("0")).canonical() == "1"
    assert parse_quantity("1").sign() == 1 and parse_quantity("-1m").sign() == -1 and parse_quantity("0").is_zero()


def test_constructors() -> None:
    assert Quantity.from_int(5).canonical() == "5"
    assert Quantity.from_int(2048, BINARY_SI).canonical() == "2Ki"
    assert Quantity.from_milli(1500).canonical() == "1500m"
    assert Quantity.from_milli(1500).value() == 2
    assert Quantity.from_int(1000, DECIMAL_EXPONENT).canonical() == "1e3"
    assert repr(Quantity.from_milli(250)) == "Quantity('250m')"
