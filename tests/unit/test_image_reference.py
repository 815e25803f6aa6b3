"""Docker reference parsing and normalisation (distribution/reference behaviour)."""

from __future__ import annotations

import pytest

from pocketkube.engine.images.reference import InvalidReference, Reference, is_image_id, parse_reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "domain", "path", "tag", "digest"),
    [
        ("busybox", "docker.io", "library/busybox", "latest", None),
        ("busybox:1.36", "docker.io", "library/busybox", "1.36", None),
        ("library/busybox", "docker.io", "library/busybox", "latest", None),
        ("docker.io/busybox", "docker.io", "library/busybox", "latest", None),
        ("docker.io/library/busybox:latest", "docker.io", "library/busybox", "latest", None),
        ("index.docker.io/x", "docker.io", "library/x", "latest", None),
        ("index.docker.io/user/x:1", "docker.io", "user/x", "1", None),
        ("user/app:1", "docker.io", "user/app", "1", None),
        ("localhost/app", "localhost", "app", "latest", None),
        ("localhost:5000/a/b:c", "localhost:5000", "a/b", "c", None),
        ("registry.example.com/team/app:v1.2-rc_3", "registry.example.com", "team/app", "v1.2-rc_3", None),
        ("Registry.Example.com/app", "Registry.Example.com", "app", "latest", None),
        ("[::1]:5000/app", "[::1]:5000", "app", "latest", None),
        ("a__b/c-d.e--f", "docker.io", "a__b/c-d.e--f", "latest", None),
        (f"busybox@{DIGEST}", "docker.io", "library/busybox", None, DIGEST),
        (f"busybox:1.36@{DIGEST}", "docker.io", "library/busybox", "1.36", DIGEST),
        (f"localhost:5000/x@{DIGEST}", "localhost:5000", "x", None, DIGEST),
    ],
)
def test_parse_and_normalise(text: str, domain: str, path: str, tag: str | None, digest: str | None) -> None:
    ref = parse_reference(text)
    assert (ref.domain, ref.path, ref.tag, ref.digest) == (domain, path, tag, digest)
    assert str(ref) == f"{domain}/{path}" + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    assert ref.name == f"{domain}/{path}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Busybox", "invalid reference format: repository name (library/Busybox) must be lowercase"),
        ("user/App:1", "invalid reference format: repository name (user/App) must be lowercase"),
        ("a:b:c", "invalid reference format"),
        (":tag", "invalid reference format"),
        ("a//b", "invalid reference format"),
        ("busybox:", "invalid reference format"),
        ("busybox@", "invalid reference format"),
        ("", "invalid reference format"),
        ("-busybox", "invalid reference format"),
        ("busybox:" + "t" * 129, "invalid reference format"),
        ("busybox@sha256:abc", "invalid reference format"),
        ("busybox@sha256:" + "AB" * 32, "invalid checksum digest format"),
        ("busybox@sha256:" + "ab" * 20, "invalid checksum digest length"),
        ("busybox@md5:" + "ab" * 16, "unsupported digest algorithm"),
        ("ab" * 32, f"invalid repository name ({'ab' * 32}), cannot specify 64-byte hexadecimal strings"),
        ("x/" + "a" * 260, "repository name must not be more than 255 characters"),
    ],
)
def test_invalid_references(text: str, message: str) -> None:
    with pytest.raises(InvalidReference) as raised:
        parse_reference(text)
    assert str(raised.value) == message


def test_default_tag_only_without_tag_or_digest() -> None:
    assert parse_reference("busybox", default_tag=None).tag is None
    assert parse_reference("busybox", default_tag="stable").tag == "stable"
    assert parse_reference(f"busybox@{DIGEST}").tag is None


@pytest.mark.parametrize(
    ("text", "familiar", "familiar_name"),
    [
        ("busybox", "busybox:latest", "busybox"),
        ("docker.io/library/busybox:1", "busybox:1", "busybox"),
        ("user/app:1", "user/app:1", "user/app"),
        ("library/a/b", "library/a/b:latest", "library/a/b"),
        ("localhost:5000/x:y", "localhost:5000/x:y", "localhost:5000/x"),
        ("quay.io/org/app", "quay.io/org/app:latest", "quay.io/org/app"),
        (f"busybox@{DIGEST}", f"busybox@{DIGEST}", "busybox"),
    ],
)
def test_familiar_round_trip(text: str, familiar: str, familiar_name: str) -> None:
    ref = parse_reference(text)
    assert ref.familiar() == familiar
    assert ref.familiar_name() == familiar_name
    assert parse_reference(ref.familiar()) == ref
    assert parse_reference(str(ref)) == ref


def test_reference_is_hashable_value() -> None:
    assert parse_reference("busybox") == Reference("docker.io", "library/busybox", "latest")
    assert len({parse_reference("busybox"), parse_reference("docker.io/library/busybox:latest")}) == 1


def test_is_image_id() -> None:
    assert is_image_id("ab" * 32)
    assert is_image_id("sha256:" + "ab" * 32)
    assert not is_image_id("ab" * 31)
    assert not is_image_id("sha512:" + "ab" * 32)
    assert not is_image_id("AB" * 32)
    assert not is_image_id("busybox")
