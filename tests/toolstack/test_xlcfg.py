"""Tests for the xl.cfg parser (pyxen.toolstack.xlcfg)."""

import json
import pickle

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyxen.toolstack.xlcfg import (
    COMMAND_LINE,
    MAX_LIST_DEPTH,
    Config,
    XlCfgError,
    apply_overrides,
    parse,
    parse_c_integer,
    parse_file,
)


def err(text, filename="t.cfg"):
    with pytest.raises(XlCfgError) as info:
        parse(text, filename)
    return info.value


# ---------------------------------------------------------------------------
# values
# ---------------------------------------------------------------------------

class TestStrings:
    def test_double_and_single_quotes(self):
        c = parse('a = "hello"\nb = \'world\'\n')
        assert c["a"] == "hello"
        assert c["b"] == "world"

    def test_empty_strings(self):
        c = parse("a = ''\nb = \"\"")
        assert c["a"] == "" and c["b"] == ""

    def test_other_quote_inside(self):
        c = parse("""a = "it's"\nb = 'say "hi"'""")
        assert c["a"] == "it's"
        assert c["b"] == 'say "hi"'

    def test_simple_escapes(self):
        c = parse(r'a = "q\"s\'b\\ a\a b\b f\f n\n r\r t\t v\v"')
        assert c["a"] == "q\"s'b\\ a\a b\b f\f n\n r\r t\t v\v"

    def test_escapes_in_single_quotes(self):
        c = parse(r"a = 'it\'s\tok'")
        assert c["a"] == "it's\tok"

    def test_numeric_escapes(self):
        c = parse(r'a = "\x41\x7a\101\60\0601"')
        assert c["a"] == "AzA001"

    def test_hash_inside_string_is_not_a_comment(self):
        c = parse('a = "x # y" # real comment\n')
        assert c["a"] == "x # y"

    def test_non_ascii_and_tabs_in_strings(self):
        c = parse('a = "héllo\twörld ✓"')
        assert c["a"] == "héllo\twörld ✓"

    def test_spec_strings_keep_their_content(self):
        c = parse("disk = [ 'format=raw, vdev=xvda, access=rw, target=/x/y.img' ]")
        assert c["disk"] == ["format=raw, vdev=xvda, access=rw, target=/x/y.img"]


class TestNumbers:
    @pytest.mark.parametrize("text,value", [
        ("0", 0), ("7", 7), ("128", 128), ("4096", 4096),
        ("0x10", 16), ("0xff", 255), ("0XFF", 255), ("0x0", 0),
        ("010", 8), ("0777", 511), ("00", 0),
        ("123456789012345678901234567890", 123456789012345678901234567890),
    ])
    def test_number_forms(self, text, value):
        c = parse(f"n = {text}")
        assert c["n"] == value
        assert isinstance(c["n"], int)

    def test_quoted_number_stays_a_string(self):
        assert parse('n = "12"')["n"] == "12"

    @pytest.mark.parametrize("text", ["08", "09", "0x", "0xg", "1e5", "12abc", "1.5", "0x1.0", "1_000"])
    def test_bad_numbers(self, text):
        e = err(f"a = 1\nn = {text}\n")
        assert str(e) == f"t.cfg:2: syntax error: invalid number '{text}'"

    def test_negative_numbers_are_not_syntax(self):
        e = err("n = -1")
        assert str(e).startswith("t.cfg:1: lexical error: unexpected character '-'")
        assert "Python" in str(e)

    @pytest.mark.parametrize("text,value", [
        ("12", 12), (" 12 ", 12), ("+3", 3), ("-3", -3), ("0x1F", 31), ("017", 15), ("0", 0),
    ])
    def test_parse_c_integer(self, text, value):
        assert parse_c_integer(text) == value

    @pytest.mark.parametrize("text", ["", " ", "-", "0x", "08", "1e3", "12 mb", "abc", "--1"])
    def test_parse_c_integer_rejects(self, text):
        assert parse_c_integer(text) is None


class TestLists:
    def test_simple_list(self):
        assert parse("a = [ 'x', 'y' ]")["a"] == ["x", "y"]

    def test_empty_list(self):
        assert parse("a = []")["a"] == []
        assert parse("a = [\n\n]")["a"] == []

    def test_trailing_comma(self):
        assert parse("a = [ 'x', 'y', ]")["a"] == ["x", "y"]
        assert parse("a = [1,]")["a"] == [1]

    def test_multi_line_list_with_comments(self):
        text = (
            "disk = [\n"
            "    # the root disk\n"
            "    'phy:/dev/vg/root,xvda,w',   # trailing comment\n"
            "\n"
            "    'file:/tmp/data.img,xvdb,r'\n"
            "    ,\n"
            "]\n"
            "name = 'x'\n"
        )
        c = parse(text)
        assert c["disk"] == ["phy:/dev/vg/root,xvda,w", "file:/tmp/data.img,xvdb,r"]
        assert c.line("disk") == 1
        assert c.line("name") == 8

    def test_heterogeneous_and_nested(self):
        c = parse('vnuma = [ ["pnode=0", "size=512"], [1, "x", []], 3 ]')
        assert c["vnuma"] == [["pnode=0", "size=512"], [1, "x", []], 3]

    def test_nesting_limit(self):
        ok = "a = " + "[" * MAX_LIST_DEPTH + "]" * MAX_LIST_DEPTH
        assert parse(ok)["a"] is not None
        e = err("a = " + "[" * (MAX_LIST_DEPTH + 1) + "]" * (MAX_LIST_DEPTH + 1))
        assert str(e) == "t.cfg:1: syntax error: lists nested too deeply"

    def test_very_deep_nesting_never_recurses(self):
        e = err("a = " + "[" * 100000)
        assert "nested too deeply" in str(e)

    def test_missing_comma(self):
        e = err("a = [ 'x'\n  'y' ]")
        assert str(e) == "t.cfg:2: syntax error: expected ',' or ']' in the list value of 'a', got string 'y'"

    def test_leading_or_double_comma(self):
        assert str(err("a = [ , 'x' ]")).startswith("t.cfg:1: syntax error: expected a list element or ']'")
        assert str(err("a = [ 'x',\n , ]")).startswith("t.cfg:2: syntax error: expected a list element or ']'")


# ---------------------------------------------------------------------------
# statements, comments, separators
# ---------------------------------------------------------------------------

class TestStatements:
    def test_semicolons_and_newlines(self):
        c = parse('name="h0"; type="hvm"\nmemory=128;\n;;\nvcpus=2')
        assert c.to_dict() == {"name": "h0", "type": "hvm", "memory": 128, "vcpus": 2}

    def test_no_final_newline(self):
        assert parse("a = 1")["a"] == 1
        assert parse("a = [1,\n2]")["a"] == [1, 2]

    def test_comments_and_blank_lines(self):
        c = parse("# header\n\n   # indented comment\na = 1 # tail\n\n# last comment without newline")
        assert c.to_dict() == {"a": 1}
        assert c.line("a") == 4

    def test_whitespace_is_optional(self):
        c = parse("a=1\nb\t=\t'x'\nc=[1,2]")
        assert c.to_dict() == {"a": 1, "b": "x", "c": [1, 2]}

    def test_key_characters(self):
        c = parse("a.b_c9 = 1\nx1 = 2\n")
        assert c.to_dict() == {"a.b_c9": 1, "x1": 2}

    def test_crlf_line_endings(self):
        c = parse("a = 1\r\nb = [2,\r\n3]\r\nc = 'x'\r\n")
        assert c.to_dict() == {"a": 1, "b": [2, 3], "c": "x"}
        assert c.line("c") == 4

    def test_empty_input(self):
        c = parse("")
        assert len(c) == 0 and c.to_dict() == {}

    def test_last_assignment_wins(self):
        c = parse("a = 1\nb = 2\na = 'x'\n")
        assert c["a"] == "x"
        assert c.line("a") == 3
        assert c.keys() == ["a", "b"]
        assert [(s.key, s.line) for s in c.history()] == [("a", 1), ("b", 2), ("a", 3)]

    def test_line_numbers(self):
        text = "\n# c\nname = 'x'\n\nmemory = 64; vcpus = 2\ndisk = [\n'a',\n'b']\nextra = 'q'\n"
        c = parse(text, "dir/dom.cfg")
        assert {k: c.line(k) for k in c} == {"name": 3, "memory": 5, "vcpus": 5, "disk": 6, "extra": 9}
        assert c.location("extra") == "dir/dom.cfg:9"
        s = c.setting("disk")
        assert s is not None and s.filename == "dir/dom.cfg" and s.line == 6


class TestAppend:
    def test_append_string(self):
        c = parse("extra = 'console=hvc0'\nextra += ' quiet'\n")
        assert c["extra"] == "console=hvc0 quiet"
        assert c.line("extra") == 2
        assert c.setting("extra").op == "+="

    def test_append_list(self):
        c = parse("disk = ['a']\ndisk += ['b', 'c']\ndisk += []\n")
        assert c["disk"] == ["a", "b", "c"]

    def test_append_without_previous_value(self):
        assert parse("extra += 'x'")["extra"] == "x"
        assert parse("disk += ['x']")["disk"] == ["x"]

    def test_append_mismatched_types(self):
        e = err("a = 'x'\na += ['y']")
        assert str(e) == "t.cfg:2: can't add a list to a string or vice versa ('a' was set at t.cfg:1)"
        e = err("a = ['x']\n\na += 'y'")
        assert str(e).startswith("t.cfg:3: can't add a list to a string")

    def test_append_numbers(self):
        assert str(err("a = 1\na += 2")).startswith("t.cfg:2: can't use += with numbers")
        assert str(err("a = 'x'\na += 2")).startswith("t.cfg:2: can't use += with numbers")
        assert str(err("a += 2")).startswith("t.cfg:1: can't use += with numbers")

    def test_plus_alone_is_an_error(self):
        assert str(err("a + = 1")).startswith("t.cfg:1: lexical error: unexpected character '+'")


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------

class TestErrors:
    def test_error_format(self):
        e = err("name = 'x'\n\nkernel = \"/boot/vmlinuz\n", "examples/bad.cfg")
        assert str(e) == "examples/bad.cfg:3: syntax error: unterminated string"
        assert (e.filename, e.line, e.message) == ("examples/bad.cfg", 3, "syntax error: unterminated string")

    @pytest.mark.parametrize("text", [
        "a = 'abc", 'a = "abc', "a = 'abc\n'", "a = \"abc\\\"", "a = 'x\\\ny'", "a = [ 'x', \"y ]",
    ])
    def test_unterminated_string(self, text):
        assert str(err("ok = 1\n" + text)) == "t.cfg:2: syntax error: unterminated string"

    def test_missing_equals(self):
        assert str(err("a = 1\nname 'x'")) == "t.cfg:2: syntax error: missing '=' after 'name' (got string 'x')"
        assert str(err("name\n= 'x'")) == "t.cfg:1: syntax error: missing '=' after 'name' (got newline)"
        assert str(err("memory")) == "t.cfg:1: syntax error: missing '=' after 'memory' (got end of file)"

    def test_missing_value(self):
        assert str(err("a =\n1")) == "t.cfg:1: syntax error: missing value for 'a'"
        assert str(err("a = ;")) == "t.cfg:1: syntax error: missing value for 'a'"
        assert str(err("a =")) == "t.cfg:1: syntax error: missing value for 'a'"
        assert str(err("a = ]")) == "t.cfg:1: syntax error: expected a value for 'a', got ']'"

    def test_unquoted_string(self):
        e = err("\non_crash = destroy\n")
        assert str(e) == ("t.cfg:2: syntax error: unquoted string 'destroy' in the value of "
                          "'on_crash' (strings must be quoted)")

    def test_two_statements_on_a_line(self):
        e = err("a = 1 b = 2")
        assert str(e) == "t.cfg:1: syntax error: expected newline or ';' after the value of 'a', got 'b'"

    def test_unclosed_list_at_eof(self):
        e = err("name = 'x'\ndisk = [ 'a',\n  'b'\n")
        assert str(e) == "t.cfg:2: syntax error: unclosed list in the value of 'disk': '[' has no matching ']'"

    def test_unclosed_list_before_next_setting(self):
        e = err("disk = [ 'a',\n  'b'\n\nname = 'x'\n")
        assert str(e) == ("t.cfg:1: syntax error: unclosed list in the value of 'disk': "
                          "'[' has no matching ']' (reached 'name' on line 4)")
        e = err("vif = [ 'bridge=br0',\nmemory += 1\n")
        assert str(e).startswith("t.cfg:1: syntax error: unclosed list")

    def test_unclosed_nested_list_reports_inner_bracket(self):
        e = err("a = [ 1,\n [ 2,\n")
        assert str(e).startswith("t.cfg:2: syntax error: unclosed list")

    def test_extra_closing_bracket(self):
        assert str(err("a = [1]]")).startswith("t.cfg:1: syntax error: expected newline or ';'")

    @pytest.mark.parametrize("key", ["Name", "_x", "mem-ory", "a.B"])
    def test_invalid_key(self, key):
        e = err(f"{key} = 1")
        assert str(e).startswith("t.cfg:1: ")
        assert "error" in str(e)

    def test_uppercase_key_message(self):
        assert str(err("Name = 'x'")).startswith("t.cfg:1: syntax error: invalid setting name 'Name'")

    def test_key_must_be_a_name(self):
        assert str(err("'a' = 1")) == "t.cfg:1: syntax error: expected a setting name, got string 'a'"
        assert str(err("\n= 1")) == "t.cfg:2: syntax error: expected a setting name, got '='"
        assert str(err("5 = 1")) == "t.cfg:1: syntax error: expected a setting name, got '5'"

    @pytest.mark.parametrize("text,char", [
        ("a = 1 % 2", "%"), ("a = (1)", "("), ("a = x.y()", "("), ("a = {}", "{"), ("a = `x`", "`"),
        ("a = 1\x0c", "\\x0c"), ("a = 1\r", "\\r"), ("\x00", "\\x00"),
    ])
    def test_lexical_errors(self, text, char):
        e = err(text)
        assert str(e).startswith(f"t.cfg:1: lexical error: unexpected character '{char}'") or \
            str(e).startswith("t.cfg:1: syntax error")

    def test_python_hint(self):
        assert "Python" in str(err("import os"))  or "error" in str(err("import os"))
        assert "Python" in str(err("a = (1, 2)"))

    @pytest.mark.parametrize("text", [r'a = "\q"', r'a = "\x4"', r'a = "\xzz"', r'a = "\x00"', r'a = "\0"'])
    def test_bad_escapes(self, text):
        e = err("\n" + text)
        assert str(e).startswith("t.cfg:2: lexical error:")

    def test_nul_in_string(self):
        assert str(err('a = "x\x00y"')).startswith("t.cfg:1: lexical error: string contains a NUL")

    def test_error_is_pickleable(self):
        e = err("a = 'x")
        e2 = pickle.loads(pickle.dumps(e))
        assert str(e2) == str(e) and e2.line == 1

    def test_non_str_input(self):
        with pytest.raises(XlCfgError):
            parse(b"a = 1")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------

class TestFiles:
    def test_parse_file(self, tmp_path):
        p = tmp_path / "dom.cfg"
        p.write_text("name = 'x'\nmemory = 64\n")
        c = parse_file(p)
        assert c.to_dict() == {"name": "x", "memory": 64}
        assert c.filename == str(p) and c.path == str(p)
        c2 = parse_file(str(p))
        assert c2 == c

    def test_parse_file_error_names_file(self, tmp_path):
        p = tmp_path / "bad.cfg"
        p.write_text("name = 'x'\nmemory = lots\n")
        with pytest.raises(XlCfgError) as info:
            parse_file(p)
        assert str(info.value).startswith(f"{p}:2: syntax error: unquoted string 'lots'")

    def test_missing_file(self, tmp_path):
        p = tmp_path / "nope.cfg"
        with pytest.raises(XlCfgError) as info:
            parse_file(p)
        assert str(info.value).startswith(f"{p}: cannot read config file:")
        assert info.value.line is None

    def test_directory(self, tmp_path):
        with pytest.raises(XlCfgError):
            parse_file(tmp_path)

    def test_non_utf8_bytes(self, tmp_path):
        p = tmp_path / "latin1.cfg"
        p.write_bytes(b"# Configuraci\xf3n\nname = 'x'\nextra = 'caf\xe9'\n")
        with pytest.raises(XlCfgError) as info:
            parse_file(p)
        assert str(info.value).startswith(f"{p}:3: lexical error")

    def test_utf8_file(self, tmp_path):
        p = tmp_path / "u.cfg"
        p.write_bytes("name = 'dömü'\n".encode())
        assert parse_file(p)["name"] == "dömü"

    def test_examples_parse(self):
        import pathlib
        root = pathlib.Path(__file__).resolve().parents[2] / "examples"
        for cfg in sorted(root.glob("*.cfg")):
            parse_file(cfg)


# ---------------------------------------------------------------------------
# overrides
# ---------------------------------------------------------------------------

class TestOverrides:
    def test_override_replaces_value(self):
        c = parse("name = 'x'\nmemory = 64\n", "d.cfg")
        out = apply_overrides(c, ["memory=128", "vcpus=2"])
        assert out is c
        assert c["memory"] == 128 and c["vcpus"] == 2
        assert c.location("memory") == f"{COMMAND_LINE}:1"
        assert c.location("name") == "d.cfg:1"

    def test_override_append(self):
        c = parse("extra = 'a'\ndisk = ['x']\n")
        apply_overrides(c, ["extra+=' b'", "disk += [ 'y' ]"])
        assert c["extra"] == "a b" and c["disk"] == ["x", "y"]

    def test_override_full_grammar(self):
        c = parse("")
        apply_overrides(c, ['name="a"; memory=0x40', "vif=['bridge=br0',]", "  cmdline = 'x y'  "])
        assert c.to_dict() == {"name": "a", "memory": 64, "vif": ["bridge=br0"], "cmdline": "x y"}

    def test_override_order(self):
        c = apply_overrides(parse(""), ["a=1", "a=2"])
        assert c["a"] == 2

    def test_override_errors(self):
        c = parse("a = 1")
        with pytest.raises(XlCfgError) as info:
            apply_overrides(c, ["memory=128", "name='x"])
        assert str(info.value) == "<command line>:1: syntax error: unterminated string"
        with pytest.raises(XlCfgError) as info:
            apply_overrides(c, ["memory"])
        assert str(info.value).startswith("<command line>:1: syntax error: missing '='")
        with pytest.raises(XlCfgError) as info:
            apply_overrides(c, ["a+=1"])
        assert str(info.value).startswith("<command line>:1: can't use += with numbers")

    def test_unquoted_override_hint(self):
        with pytest.raises(XlCfgError) as info:
            apply_overrides(parse(""), ["kernel=/boot/vmlinuz"])
        assert str(info.value) == ("<command line>:1: lexical error: unexpected character '/' "
                                   "(string values must be quoted, e.g. 'kernel=\"...\"')")
        with pytest.raises(XlCfgError) as info:
            apply_overrides(parse(""), ["on_crash=restart"])
        assert str(info.value) == ("<command line>:1: syntax error: unquoted string 'restart' in the "
                                   "value of 'on_crash' (string values must be quoted, e.g. 'on_crash=\"...\"')")

    def test_single_string_and_empty(self):
        c = apply_overrides(parse(""), "a=1")
        assert c["a"] == 1
        assert apply_overrides(parse("a=1"), []).to_dict() == {"a": 1}
        assert apply_overrides(parse("a=1"), [""]).to_dict() == {"a": 1}


# ---------------------------------------------------------------------------
# Config object
# ---------------------------------------------------------------------------

class TestConfigObject:
    def test_mapping_behaviour(self):
        c = parse("a = 1\nb = 'x'\nc = [1, 'y']")
        assert "a" in c and "z" not in c
        assert list(c) == ["a", "b", "c"]
        assert len(c) == 3
        assert c.get("z") is None and c.get("z", 5) == 5
        assert c.items() == [("a", 1), ("b", "x"), ("c", [1, "y"])]
        with pytest.raises(KeyError):
            c["z"]
        with pytest.raises(KeyError):
            c.line("z")

    def test_to_dict_is_json_and_a_copy(self):
        c = parse("c = [1, ['y']]")
        d = c.to_dict()
        json.dumps(d)
        d["c"][1].append("z")
        assert c["c"] == [1, ["y"]]

    def test_error_helper(self):
        c = parse("\nmemory = 'x'", "f.cfg")
        assert str(c.error("memory", "bad")) == "f.cfg:2: bad"
        assert str(c.error("name", "missing")) == "f.cfg:1: missing"

    def test_copy_is_independent(self):
        c = parse("a = 1")
        d = c.copy()
        apply_overrides(d, ["a = 2"])
        assert c["a"] == 1 and d["a"] == 2

    def test_repr(self):
        assert "Config(" in repr(parse("a=1"))
        assert isinstance(parse("a=1"), Config)


# ---------------------------------------------------------------------------
# fuzzing: any text either parses or raises XlCfgError
# ---------------------------------------------------------------------------

_ALPHABET = st.sampled_from(list("ab xyz019_.=+[],;#'\"\\\n\t-()%\r\x00é") + ["0x", "+=", "\\x4", "\n#"])
_fragments = st.lists(_ALPHABET, max_size=80).map("".join)


def _check(text):
    try:
        c = parse(text, "fuzz.cfg")
    except XlCfgError as e:
        s = str(e)
        assert s.startswith("fuzz.cfg:")
        assert e.line is not None and 1 <= e.line <= text.replace("\r\n", "\n").count("\n") + 1
        return None
    for k in c:
        assert 1 <= c.line(k)
    json.dumps(c.to_dict())
    return c


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_fuzz_random_text(text):
    _check(text)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(_fragments)
def test_fuzz_config_like_text(text):
    _check(text)


_atom = st.one_of(
    st.integers(min_value=0, max_value=2**40),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\n\\'"), max_size=20),
)
_value = st.recursive(_atom, lambda inner: st.lists(inner, max_size=4), max_leaves=12)
_key = st.from_regex(r"[a-z][a-z0-9_.]{0,10}", fullmatch=True)


def _render(v):
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return "'" + v + "'"
    if not v:
        return "[ ]"
    return "[\n " + ",\n ".join(_render(x) for x in v) + ", ]"


@settings(max_examples=300)
@given(st.dictionaries(_key, _value, max_size=8))
def test_fuzz_round_trip(settings_dict):
    text = "\n".join(f"{k} = {_render(v)}  # c" for k, v in settings_dict.items())
    c = parse(text)
    assert c.to_dict() == settings_dict


@settings(max_examples=200)
@given(st.lists(st.text(max_size=40), max_size=4))
def test_fuzz_overrides(overrides):
    c = parse("a = 'x'\nl = [1]\n")
    try:
        apply_overrides(c, overrides)
    except XlCfgError as e:
        assert str(e).startswith("<command line>:")
