#!/usr/bin/env python3
"""Build src/pocketkube/apiserver/protobuf_schema.json from local checkouts of k8s.io/api and k8s.io/apimachinery.

Dev-time tool. The protobuf decoder needs only wire facts: for every message, each field's number, its
JSON name, its type and how Go's encoding/json treats it (pointer, omitempty, omitzero, inlined). The
numbers and types come from each package's generated.proto; the JSON facts come from the struct tags of
the Go types in the same directory, matched by field number. Nothing else from upstream is kept.

Usage:
    scripts/gen_proto_schema.py --api PATH --apimachinery PATH [--api-rev SHA] [--apimachinery-rev SHA]

A PATH may be a git checkout (its HEAD is recorded) or an exported tree (then pass the revision).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "src/pocketkube/apiserver/protobuf_schema.json"
# Only stable versions are served; apimachinery contributes the shared meta, runtime and value types.
_STABLE = re.compile(r"^v\d+$")
_APIMACHINERY_DIRS = ("pkg/apis/meta/v1", "pkg/runtime", "pkg/util/intstr", "pkg/api/resource")

_PACKAGE = re.compile(r"^package\s+([\w.]+)\s*;", re.M)
_MESSAGE = re.compile(r"^message\s+(\w+)\s*\{")
_FIELD = re.compile(r"^\s*(optional|repeated)?\s*(map<\s*(\w+)\s*,\s*([\w.]+)\s*>|[\w.]+)\s+(\w+)\s*=\s*(\d+)\s*;")
_GO_STRUCT = re.compile(r"^(?:type\s+)?(\w+)\s+struct\s*\{\s*$")
_GO_FIELD = re.compile(r"^\s*(?:(\w+)\s+)?([\w.*\[\]]+)\s+`([^`]*)`")
_GO_TAG = re.compile(r'(\w+):"([^"]*)"')
_SCALARS = {"string", "bytes", "bool", "int32", "int64", "uint32", "uint64", "double", "float",
            "fixed32", "fixed64", "sfixed32", "sfixed64", "sint32", "sint64"}


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def parse_proto(path: Path) -> tuple[str, dict[str, list[dict]], set[str]]:
    """Messages of one generated.proto: name -> fields, plus the messages marked nullable (list wrappers)."""
    raw = path.read_text()
    list_wrappers = set(re.findall(r"\+protobuf\.nullable=true\s*\n(?://[^\n]*\n)*message\s+(\w+)", raw))
    text = _strip_comments(raw)
    package = _PACKAGE.search(text).group(1)
    messages: dict[str, list[dict]] = {}
    current: list[dict] | None = None
    for line in text.splitlines():
        if current is None:
            m = _MESSAGE.match(line.strip())
            if m:
                current = messages.setdefault(m.group(1), [])
            continue
        if line.strip() == "}":
            current = None
            continue
        m = _FIELD.match(line)
        if m:
            label, ftype, key, value, name, number = m.groups()
            if key:
                ftype = f"map<{key},{_resolve(value, package)}>"
            else:
                ftype = _resolve(ftype, package)
            current.append({"number": int(number), "proto_name": name, "type": ftype,
                            "repeated": label == "repeated"})
        elif line.strip():
            raise SystemExit(f"{path}: cannot parse line {line!r}")
    return package, messages, list_wrappers


def _resolve(name: str, package: str) -> str:
    if name in _SCALARS:
        return name
    if name.startswith("."):
        return name[1:]
    return f"{package}.{name}"


def parse_go_structs(directory: Path) -> dict[str, dict[int, dict]]:
    """Go struct name -> protobuf field number -> JSON facts, from the struct tags of a package's types."""
    structs: dict[str, dict[int, dict]] = {}
    for path in sorted(directory.glob("*.go")):
        if path.name.endswith("_test.go") or path.name.startswith(("zz_generated", "generated.")):
            continue
        current: dict[int, dict] | None = None
        depth = 0
        for line in path.read_text().splitlines():
            # Comments may hold braces (examples in doc text); struct tags never hold "//".
            line = line.split("//", 1)[0]
            if current is None:
                m = _GO_STRUCT.match(line.strip())
                if m:
                    current = structs.setdefault(m.group(1), {})
                    depth = 1
                continue
            depth += line.count("{") - line.count("}")
            if depth <= 0:
                current = None
                continue
            m = _GO_FIELD.match(line)
            if not m or depth != 1:
                continue
            go_name, go_type, tag_text = m.groups()
            tags = dict(_GO_TAG.findall(tag_text))
            if "protobuf" not in tags or "json" not in tags:
                continue
            number = int(tags["protobuf"].split(",")[1])
            json_name, *options = tags["json"].split(",")
            if json_name == "-":
                continue
            embedded = go_name is None
            if not json_name and not embedded:
                json_name = go_name
            current[number] = {"json": json_name, "pointer": go_type.startswith("*"),
                               "omitempty": "omitempty" in options, "omitzero": "omitzero" in options,
                               "inline": embedded and not json_name}
    return {name: fields for name, fields in structs.items() if fields}


def collect(root: Path, dirs: list[str], schema: dict, wrappers: set[str], unmatched: list[str]) -> None:
    for rel in dirs:
        proto = root / rel / "generated.proto"
        package, messages, list_wrappers = parse_proto(proto)
        go = parse_go_structs(root / rel)
        for name, fields in messages.items():
            full = f"{package}.{name}"
            if name in list_wrappers:
                wrappers.add(full)
            go_fields = go.get(name, {})
            if fields and not go_fields:
                unmatched.append(full)
            rows = []
            for field in sorted(fields, key=lambda f: f["number"]):
                facts = go_fields.get(field["number"])
                flags = "r" if field["repeated"] else ""
                if facts is None:
                    json_name = field["proto_name"]
                else:
                    json_name = facts["json"]
                    flags += "".join(c for c, key in (("p", "pointer"), ("e", "omitempty"), ("z", "omitzero"),
                                                      ("i", "inline")) if facts[key])
                rows.append([field["number"], json_name, field["type"], flags])
            schema[full] = rows


def revision(path: Path, given: str | None) -> str:
    if given:
        return given
    try:
        return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], check=True, capture_output=True,
                              text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        raise SystemExit(f"{path} is not a git checkout: pass its revision") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--api", type=Path, required=True, help="checkout of k8s.io/api")
    parser.add_argument("--apimachinery", type=Path, required=True, help="checkout of k8s.io/apimachinery")
    parser.add_argument("--api-rev")
    parser.add_argument("--apimachinery-rev")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    api_dirs = sorted(str(p.parent.relative_to(args.api)) for p in args.api.glob("*/*/generated.proto")
                      if _STABLE.match(p.parent.name))
    schema: dict[str, list] = {}
    wrappers: set[str] = set()
    unmatched: list[str] = []
    collect(args.api, api_dirs, schema, wrappers, unmatched)
    collect(args.apimachinery, list(_APIMACHINERY_DIRS), schema, wrappers, unmatched)
    document = {
        "sources": {"k8s.io/api": revision(args.api, args.api_rev),
                    "k8s.io/apimachinery": revision(args.apimachinery, args.apimachinery_rev)},
        "listWrappers": sorted(wrappers),
        "messages": {name: schema[name] for name in sorted(schema)},
    }
    # One message per line keeps the file diffable without making it large.
    lines = [f"  {json.dumps(name)}: {json.dumps(rows, separators=(',', ':'))}"
             for name, rows in document["messages"].items()]
    head = {k: v for k, v in document.items() if k != "messages"}
    text = json.dumps(head, indent=2, sort_keys=True)[:-2] + ',\n  "messages": {\n'
    text += ",\n".join("  " + line for line in lines) + "\n  }\n}\n"
    json.loads(text)  # the hand-assembled layout must still be valid JSON
    args.out.write_text(text)
    if unmatched:
        print("messages without Go struct tags (handled by name in protobuf.py):", *unmatched, sep="\n  ",
              file=sys.stderr)
    print(f"wrote {args.out}: {len(schema)} messages")


if __name__ == "__main__":
    main()
