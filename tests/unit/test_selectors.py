"""Label and field selectors against upstream's pkg/labels and pkg/fields behaviour."""

from __future__ import annotations

import pytest

from pocketkube.api.errors import Cause
from pocketkube.api.selectors import (
    EQUALS,
    EXISTS,
    IN,
    NOT_EQUALS,
    FieldSelector,
    LabelSelector,
    Requirement,
    SelectorError,
    escape_field_value,
    new_requirement,
    unescape_field_value,
    validate_label_selector,
)

LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used "
    "for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
LABEL_NAME_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
    "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)


# ---- label selector parsing: upstream TestSelectorParse and friends ----

@pytest.mark.parametrize("text", ["x=a,y=b,z=c", "", "x!=a,y=b", "x=", "x= ", "x=,z= ", "x= ,z= ", "!x",
                                  "x>1", "x>1,z<5"])
def test_good_strings_round_trip_without_spaces(text: str) -> None:
    assert str(LabelSelector.parse(text)) == text.replace(" ", "")


@pytest.mark.parametrize("text", ["x=a||y=b", "x==a==b", "!x=a", "x<a"])
def test_bad_strings(text: str) -> None:
    with pytest.raises(SelectorError):
        LabelSelector.parse(text)


@pytest.mark.parametrize(("text", "canonical"), [
    ("a in (x,y),!b", "a in (x,y),!b"),
    ("b in (y, x) , a", "a,b in (x,y)"),  # sorted by key, values sorted, whitespace dropped
    ("environment!=,tier", "environment!=,tier"),
    ("x notin ()", "x notin ()"),  # "()" is the single empty value: valid upstream
    ("x in (foo,,baz),y,z notin ()", "x in (,baz,foo),y,z notin ()"),
    ("x in (a,,)", "x in (,a)"),
    ("x notin (,)", "x notin ()"),
    ("in=notin", "in=notin"),  # keywords are identifiers outside the operator slot
    ("x in (in,notin)", "x in (in,notin)"),
    ("x in(a , b)", "x in (a,b)"),
    ("  x\t==\ty ", "x==y"),
    ("example.com/app=web", "example.com/app=web"),
    ("x=a,a=x", "a=x,x=a"),
])
def test_canonical_string(text: str, canonical: str) -> None:
    assert str(LabelSelector.parse(text)) == canonical


@pytest.mark.parametrize(("text", "message"), [
    ("x==a==b", "found '==', expected: ',' or 'end of string'"),
    ("!x=a", "found '=', expected: ',' or 'end of string'"),
    ("x=a b", "found 'b', expected: ',' or 'end of string'"),
    (",x", "found ',', expected: !, identifier, or 'end of string'"),
    ("x,", "found '', expected: identifier after ','"),
    ("x,,y", "found ',', expected: identifier after ','"),
    ("!", "unable to parse requirement: found '', expected: identifier"),
    ("x y", "unable to parse requirement: found 'y', expected: in, notin, =, ==, !=, gt, lt"),
    ("x!y", "unable to parse requirement: found '!', expected: in, notin, =, ==, !=, gt, lt"),
    ("x in a", "unable to parse requirement: found 'a' expected: '('"),
    ("x in (a", "unable to parse requirement: found '', expected: ',' or ')'"),
    ("x in (a b)", "unable to parse requirement: found 'b', expected: ',' or ')'"),
    ("x in (=)", "unable to parse requirement: found '=', expected: ',', ')' or identifier"),
    ("x in (a,=)", "unable to parse requirement: found '=', expected: ',', or identifier"),
    ("x=(a)", "unable to parse requirement: found '(', expected: identifier"),
    ("x<a", "unable to parse requirement: values[0]: Invalid value: \"a\": "
            "for 'Gt', 'Lt' operators, the value must be an integer"),
    ("x>1.5", "unable to parse requirement: values[0]: Invalid value: \"1.5\": "
              "for 'Gt', 'Lt' operators, the value must be an integer"),
    ("x>-1", f'unable to parse requirement: values[0][x]: Invalid value: "-1": {LABEL_VALUE_MSG}'),
    ("x=a_", f'unable to parse requirement: values[0][x]: Invalid value: "a_": {LABEL_VALUE_MSG}'),
    ("x=" + "a" * 64, 'unable to parse requirement: values[0][x]: Invalid value: "' + "a" * 64
     + '": must be no more than 63 bytes'),
    # Keys are checked with upstream's nil field path, which Go prints as "<nil>".
    ("-foo=bar", f'unable to parse requirement: <nil>: Invalid value: "-foo": {LABEL_NAME_MSG}'),
])
def test_parse_errors_match_upstream_wording(text: str, message: str) -> None:
    with pytest.raises(SelectorError) as info:
        LabelSelector.parse(text)
    assert info.value.message == message
    assert str(info.value) == message


def test_prefix_error_wording() -> None:
    with pytest.raises(SelectorError) as info:
        LabelSelector.parse("Foo_/x")
    assert info.value.message.startswith(
        'unable to parse requirement: <nil>: Invalid value: "Foo_/x": prefix part a lowercase RFC 1123 subdomain')


def test_too_many_slashes_in_key() -> None:
    with pytest.raises(SelectorError) as info:
        LabelSelector.parse("a/b/c")
    assert "a valid label key must consist of" in info.value.message
    assert info.value.message.endswith("with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')")


# ---- matching: upstream TestSelectorMatches ----

@pytest.mark.parametrize(("text", "labels"), [
    ("", {"x": "y"}),
    ("x=y", {"x": "y"}),
    ("x=y,z=w", {"x": "y", "z": "w"}),
    ("x!=y,z!=w", {"x": "z", "z": "a"}),
    ("notin=in", {"notin": "in"}),
    ("x", {"x": "z"}),
    ("!x", {"y": "z"}),
    ("x>1", {"x": "2"}),
    ("x<1", {"x": "0"}),
    ("x in (a,b)", {"x": "b"}),
    ("x notin (a,b)", {"x": "c"}),
    ("x notin (a,b)", {}),
    ("x!=a", {}),
    ("x=", {"x": ""}),
    ("x in ()", {"x": ""}),
    ("a in (x,y),!b", {"a": "y"}),
    ("environment!=,tier", {"environment": "prod", "tier": "web"}),
])
def test_matches(text: str, labels: dict[str, str]) -> None:
    assert LabelSelector.parse(text).matches(labels)


@pytest.mark.parametrize(("text", "labels"), [
    ("x=z", {}),
    ("x=y", {"x": "z"}),
    ("x=y,z=w", {"x": "w", "z": "w"}),
    ("x!=y,z!=w", {"x": "z", "z": "w"}),
    ("x", {"y": "z"}),
    ("!x", {"x": "z"}),
    ("x>1", {"x": "0"}),
    ("x<1", {"x": "2"}),
    ("x>1", {}),
    ("x>1", {"x": "abc"}),  # a non-integer label value never satisfies gt/lt
    ("x in (a,b)", {"x": "c"}),
    ("x in (a,b)", {}),
    ("x notin (a,b)", {"x": "a"}),
    ("a in (x,y),!b", {"a": "x", "b": ""}),
    ("environment!=,tier", {"environment": "", "tier": "web"}),
    ("environment!=,tier", {"environment": "prod"}),
    ("foo=bar,foobar=bar,baz=blah", {"foo": "bar", "baz": "blah"}),
])
def test_does_not_match(text: str, labels: dict[str, str]) -> None:
    assert not LabelSelector.parse(text).matches(labels)


def test_everything_and_nothing() -> None:
    everything, nothing = LabelSelector.everything(), LabelSelector.nothing()
    assert everything.empty and everything.matches({"x": "y"}) and everything.matches(None)
    assert not nothing.empty and not nothing.matches({}) and nothing.matches_nothing
    assert str(nothing) == "" and LabelSelector.parse("").empty
    assert not LabelSelector.parse("x").empty


def test_requires_exact_match() -> None:
    sel = LabelSelector.parse("app=web,tier in (fe),env in (a,b),x!=y,k==v")
    assert sel.requires_exact_match("app") == "web"
    assert sel.requires_exact_match("tier") == "fe"
    assert sel.requires_exact_match("k") == "v"
    assert sel.requires_exact_match("env") is None
    assert sel.requires_exact_match("x") is None
    assert sel.requires_exact_match("missing") is None


def test_requirements_are_sorted_and_typed() -> None:
    sel = LabelSelector.parse("z,a in (2,1)")
    assert sel.requirements == (Requirement("a", IN, ("1", "2")), Requirement("z", EXISTS, ()))


def test_from_set() -> None:
    sel = LabelSelector.from_set({"b": "2", "a": "1"})
    assert str(sel) == "a=1,b=2"
    assert sel.matches({"a": "1", "b": "2", "c": "3"}) and not sel.matches({"a": "1"})
    assert LabelSelector.from_set({}).empty


def test_new_requirement_errors() -> None:
    with pytest.raises(SelectorError) as info:
        new_requirement("x", EQUALS, ["a", "b"])
    assert info.value.message == 'values: Invalid value: ["a","b"]: exact-match compatibility requires one single value'
    with pytest.raises(SelectorError) as info:
        new_requirement("x", "like", [])
    assert info.value.message == ('operator: Unsupported value: "like": supported values: "in", "notin", "=", '
                                  '"==", "!=", "gt", "lt", "exists", "!"')
    # Several problems aggregate into a bracketed list.
    with pytest.raises(SelectorError) as info:
        new_requirement("-x", NOT_EQUALS, [], path="spec.selector")
    assert info.value.message.startswith('[spec.selector.key: Invalid value: "-x": name part must consist')
    assert info.value.message.endswith(
        ', spec.selector.values: Invalid value: []: exact-match compatibility requires one single value]')


# ---- metav1.LabelSelector objects ----

def test_from_dict_semantics() -> None:
    assert LabelSelector.from_dict(None).matches_nothing
    assert not LabelSelector.from_dict(None).matches({"a": "b"})
    assert LabelSelector.from_dict({}).empty
    assert LabelSelector.from_dict({"matchLabels": {}, "matchExpressions": []}).matches({"a": "b"})
    sel = LabelSelector.from_dict({
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["fe", "be"]},
            {"key": "env", "operator": "NotIn", "values": ["dev"]},
            {"key": "track", "operator": "Exists"},
            {"key": "legacy", "operator": "DoesNotExist", "values": []},
        ],
    })
    assert str(sel) == "app=web,env notin (dev),!legacy,tier in (be,fe),track"
    assert sel.matches({"app": "web", "tier": "fe", "track": "x"})
    assert not sel.matches({"app": "web", "tier": "fe", "track": "x", "legacy": "1"})
    assert not sel.matches({"app": "web", "tier": "fe", "track": "x", "env": "dev"})
    assert not sel.matches({"app": "web", "tier": "qa", "track": "x"})


@pytest.mark.parametrize(("selector", "message"), [
    ({"matchExpressions": [{"key": "c", "operator": "In"}]},
     "values: Invalid value: null: for 'in', 'notin' operators, values set can't be empty"),
    ({"matchExpressions": [{"key": "c", "operator": "Exists", "values": ["a"]}]},
     'values: Invalid value: ["a"]: values set must be empty for exists and does not exist'),
    ({"matchExpressions": [{"key": "c", "operator": "Foo"}]}, '"Foo" is not a valid label selector operator'),
    ({"matchLabels": {"a": "b c"}}, f'values[0][a]: Invalid value: "b c": {LABEL_VALUE_MSG}'),
])
def test_from_dict_errors(selector: dict, message: str) -> None:
    with pytest.raises(SelectorError) as info:
        LabelSelector.from_dict(selector)
    assert info.value.message == message


def test_validate_label_selector() -> None:
    assert validate_label_selector(None, "spec.selector") == []
    assert validate_label_selector({"matchLabels": {"a": "b"}}, "spec.selector") == []
    causes = validate_label_selector({
        "matchLabels": {"a": "b_"},
        "matchExpressions": [
            {"key": "k", "operator": "In", "values": []},
            {"key": "k", "operator": "Exists", "values": ["v"]},
            {"key": "-k", "operator": "Near"},
            {"key": "k", "operator": "NotIn", "values": ["ok", "not ok"]},
        ],
    }, "spec.selector")
    assert causes == [
        Cause("spec.selector.matchLabels", f'Invalid value: "b_": {LABEL_VALUE_MSG}', "FieldValueInvalid"),
        Cause("spec.selector.matchExpressions[0].values",
              "Required value: must be specified when `operator` is 'In' or 'NotIn'", "FieldValueRequired"),
        Cause("spec.selector.matchExpressions[1].values",
              "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'", "FieldValueForbidden"),
        Cause("spec.selector.matchExpressions[2].operator", 'Invalid value: "Near": not a valid selector operator',
              "FieldValueInvalid"),
        Cause("spec.selector.matchExpressions[2].key", f'Invalid value: "-k": {LABEL_NAME_MSG}', "FieldValueInvalid"),
        Cause("spec.selector.matchExpressions[3].values[1]", f'Invalid value: "not ok": {LABEL_VALUE_MSG}',
              "FieldValueInvalid"),
    ]
    assert validate_label_selector({"matchExpressions": [{"key": "k", "operator": "In", "values": ["a b"]}]},
                                   "s", allow_invalid_label_value=True) == []


# ---- field selectors ----

def test_field_selector_parse_and_string() -> None:
    sel = FieldSelector.parse("status.phase!=Running,metadata.name==x")
    # Terms are sorted by their raw text; '==' folds into '='.
    assert sel.requirements == [("metadata.name", "=", "x"), ("status.phase", "!=", "Running")]
    assert str(sel) == "metadata.name=x,status.phase!=Running"
    assert FieldSelector.parse("").empty and FieldSelector.parse(",,").empty
    assert str(FieldSelector.parse("spec.nodeName=")) == "spec.nodeName="


def test_field_selector_escaping() -> None:
    sel = FieldSelector.parse(r"a=b\,c\=d\\e,f=g")
    assert sel.requirements == [("a", "=", "b,c=d\\e"), ("f", "=", "g")]
    assert str(sel) == r"a=b\,c\=d\\e,f=g"
    assert escape_field_value("a,b=c\\") == r"a\,b\=c\\"
    assert unescape_field_value(escape_field_value("x,=\\y")) == "x,=\\y"
    # The leftmost operator splits the term.
    assert FieldSelector.parse("a!=b=c".replace("=c", r"\=c")).requirements == [("a", "!=", "b=c")]


@pytest.mark.parametrize(("text", "message"), [
    ("a", "invalid selector: 'a'; can't understand 'a'"),
    ("a=b,c", "invalid selector: 'a=b,c'; can't understand 'c'"),
    (r"a=b\x", r"invalid field selector: invalid escape sequence: \x"),
    ("a=b\\", "invalid field selector: invalid escape sequence: \\"),
    ("a=b=c", "invalid field selector: unescaped character in value: 61"),
])
def test_field_selector_errors(text: str, message: str) -> None:
    with pytest.raises(SelectorError) as info:
        FieldSelector.parse(text)
    assert info.value.message == message


def test_field_selector_matches_and_support() -> None:
    getters = {
        "metadata.name": lambda o: o["metadata"]["name"],
        "status.phase": lambda o: o.get("status", {}).get("phase", ""),
    }
    pod = {"metadata": {"name": "web-1"}, "status": {"phase": "Running"}}
    assert FieldSelector.parse("metadata.name=web-1").matches(getters, pod)
    assert FieldSelector.parse("metadata.name=web-1,status.phase!=Pending").matches(getters, pod)
    assert not FieldSelector.parse("status.phase!=Running").matches(getters, pod)
    assert not FieldSelector.parse("metadata.name=other").matches(getters, pod)
    assert FieldSelector.parse("status.phase=").matches(getters, {"metadata": {"name": "x"}})
    assert FieldSelector.everything().matches(getters, pod)

    sel = FieldSelector.parse("spec.nodeName=n1,metadata.name=x")
    sel.check_supported({"metadata.name", "spec.nodeName"})
    with pytest.raises(SelectorError) as info:
        sel.check_supported({"metadata.name", "metadata.namespace"})
    assert info.value.message == "field label not supported: spec.nodeName"


def test_field_selector_exact_match() -> None:
    sel = FieldSelector.parse("metadata.name=x,metadata.namespace!=kube-system")
    assert sel.exact_match("metadata.name") == "x"
    assert sel.exact_match("metadata.namespace") is None
    assert FieldSelector.parse("metadata.name==y").exact_match("metadata.name") == "y"
    assert FieldSelector.parse("").exact_match("metadata.name") is None
