r"""Parser for xl domain configuration files (the libxl "xlu" syntax).

The accepted language follows xl.cfg(5) and the grammar of libxlutil's
flex/bison parser (tools/libs/util/libxlu_cfg_l.l, libxlu_cfg_y.y and the
helpers in libxlu_cfg.c):

    file     := { stmt }                       (last statement needs no terminator)
    stmt     := endstmt | KEY op value endstmt
    endstmt  := NEWLINE | ';'                  ('#' starts a comment up to end of line)
    op       := '=' | '+='
    value    := STRING | NUMBER | '[' nl* [ items ] ']'
    items    := value nl* { ',' nl* value nl* } [ ',' nl* ]
    KEY      := [a-z][a-z0-9_.]*
    NUMBER   := decimal | 0-prefixed octal | 0x-prefixed hex   (C strtol base 0)
    STRING   := '...' or "..." on one line, with backslash escapes
                \\ \" \' \a \b \f \n \r \t \v \xHH \ooo

Newlines (and therefore comments) may appear anywhere between the tokens of
a list, nowhere else inside a statement.  Lists may nest and may mix strings
and numbers.  A key set twice keeps the last value; ``key += value`` appends
to an earlier string or list value of the same key.

Deliberate differences from libxlu, all on the lenient side or affecting only
error reporting:

* numbers are validated while parsing (xl only complains when the key is
  read), and ``0X``/upper-case hex digits are accepted;
* ``\xHH`` and ``\ooo`` escapes produce the character they name (libxlu's
  implementation of these is broken and drops the character);
* CRLF line endings are accepted, and a final ``# comment`` needs no newline;
* parsing stops at the first error.

Every problem is reported as :class:`XlCfgError`, whose ``str()`` is
``"FILE:LINE: message"``; nothing else is ever raised for bad input.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Iterable, Iterator, Union

__all__ = [
    "Config",
    "Setting",
    "Value",
    "XlCfgError",
    "apply_overrides",
    "parse",
    "parse_file",
    "parse_c_integer",
    "COMMAND_LINE",
]

#: A configuration value: a string, a number, or a (possibly nested) list.
Value = Union[str, int, list["Value"]]

#: Pseudo file name used for ``xl create FILE key=value`` overrides.
COMMAND_LINE = "<command line>"

#: Maximum nesting depth of lists (libxlu's bison stack gives out too).
MAX_LIST_DEPTH = 64


class XlCfgError(Exception):
    """A configuration error, located at ``filename:line`` when known."""

    def __init__(self, filename: str, line: int | None, message: str):
        self.filename = filename
        self.line = line
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.filename}: {self.message}"
        return f"{self.filename}:{self.line}: {self.message}"

    def __reduce__(self):
        return (type(self), (self.filename, self.line, self.message))


@dataclass(frozen=True)
class Setting:
    """One ``key = value`` (or ``key += value``) statement after evaluation.

    ``value`` is the resulting value (for ``+=`` already concatenated with
    the previous one); ``filename``/``line`` locate the statement.
    """

    key: str
    value: Value
    filename: str
    line: int
    op: str = "="

    @property
    def location(self) -> str:
        return f"{self.filename}:{self.line}"

    def error(self, message: str) -> XlCfgError:
        return XlCfgError(self.filename, self.line, message)


class Config:
    """The parsed settings of one configuration file (plus overrides).

    Behaves like a read-only mapping ``key -> value``; ``line(key)`` and
    ``setting(key)`` give where each key was (last) set.
    """

    def __init__(self, filename: str = "<string>", path: str | None = None):
        #: Name used in messages (as given by the caller).
        self.filename = filename
        #: Real path of the file when parsed from disk, else None.
        self.path = path
        self._settings: dict[str, Setting] = {}
        self._history: list[Setting] = []

    # -- mapping-like access -------------------------------------------------
    def __getitem__(self, key: str) -> Value:
        return self._settings[key].value

    def __contains__(self, key: object) -> bool:
        return key in self._settings

    def __iter__(self) -> Iterator[str]:
        return iter(self._settings)

    def __len__(self) -> int:
        return len(self._settings)

    def __repr__(self) -> str:
        return f"Config({self.filename!r}, {self.to_dict()!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Config):
            return NotImplemented
        return self._settings == other._settings

    def keys(self) -> list[str]:
        return list(self._settings)

    def items(self) -> list[tuple[str, Value]]:
        return [(k, s.value) for k, s in self._settings.items()]

    def get(self, key: str, default: Value | None = None) -> Value | None:
        s = self._settings.get(key)
        return default if s is None else s.value

    def setting(self, key: str) -> Setting | None:
        """The statement that gave ``key`` its current value, or None."""
        return self._settings.get(key)

    def settings(self) -> list[Setting]:
        """Current setting of every key, in order of first appearance."""
        return list(self._settings.values())

    def history(self) -> list[Setting]:
        """Every statement evaluated, in order (including overridden ones)."""
        return list(self._history)

    def line(self, key: str) -> int:
        """Line number of the statement that last set ``key`` (KeyError if unset)."""
        return self._settings[key].line

    def location(self, key: str) -> str:
        """``"FILE:LINE"`` of the statement that last set ``key``."""
        return self._settings[key].location

    def error(self, key: str | None, message: str) -> XlCfgError:
        """An XlCfgError located at ``key``'s statement (line 1 if unset)."""
        s = self._settings.get(key) if key is not None else None
        if s is None:
            return XlCfgError(self.filename, 1, message)
        return s.error(message)

    def to_dict(self) -> dict[str, Value]:
        return {k: _copy_value(s.value) for k, s in self._settings.items()}

    def copy(self) -> "Config":
        new = Config(self.filename, self.path)
        new._settings = dict(self._settings)
        new._history = list(self._history)
        return new

    def set(self, key: str, value: Value, filename: str, line: int) -> None:
        """Set ``key`` as a statement at ``filename:line`` would (defaults
        filled in from elsewhere, e.g. xl.conf)."""
        self._store(key, "=", value, filename, line)

    # -- mutation (used by the parser) ---------------------------------------
    def _store(self, key: str, op: str, value: Value, filename: str, line: int) -> None:
        if op == "+=":
            if isinstance(value, int):
                raise XlCfgError(filename, line, f"can't use += with numbers (key '{key}')")
            prev = self._settings.get(key)
            if prev is not None:
                old = prev.value
                if isinstance(old, int):
                    raise XlCfgError(
                        filename, line,
                        f"can't use += with numbers ('{key}' was set to a number "
                        f"at {prev.location})")
                if isinstance(old, list) != isinstance(value, list):
                    raise XlCfgError(
                        filename, line,
                        f"can't add a list to a string or vice versa ('{key}' was set "
                        f"at {prev.location})")
                value = old + value  # type: ignore[operator]
        setting = Setting(key, value, filename, line, op)
        self._settings[key] = setting
        self._history.append(setting)


def _copy_value(v: Value) -> Value:
    if isinstance(v, list):
        return [_copy_value(x) for x in v]
    return v


def parse_c_integer(text: str) -> int | None:
    """Convert ``text`` like C ``strtol(text, &end, 0)`` with nothing left over.

    Accepts optional leading whitespace and sign, decimal, 0-prefixed octal
    and 0x-prefixed hex.  Returns None if ``text`` is not such a number.
    """
    s = text.strip(" \t\n\v\f\r")
    neg = False
    if s[:1] in ("+", "-"):
        neg = s[0] == "-"
        s = s[1:]
    if not s:
        return None
    try:
        if s[:2] in ("0x", "0X"):
            digits = s[2:]
            if not digits or any(c not in "0123456789abcdefABCDEF" for c in digits):
                return None
            n = int(digits, 16)
        elif s[0] == "0":
            if any(c not in "01234567" for c in s):
                return None
            n = int(s, 8)
        else:
            if any(c not in "0123456789" for c in s):
                return None
            n = int(s, 10)
    except ValueError:
        return None
    return -n if neg else n


# ---------------------------------------------------------------------------
# Lexer
# ---------------------------------------------------------------------------

# token kinds
_NL = "newline"
_SEMI = ";"
_EQ = "="
_ADD = "+="
_LBR = "["
_RBR = "]"
_COMMA = ","
_WORD = "word"
_STR = "string"
_NUM = "number"
_EOF = "end of file"

_KEY_START = frozenset("abcdefghijklmnopqrstuvwxyz")
_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_.")
_WORD_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.")
_DIGITS = frozenset("0123456789")
_PYTHONISH = frozenset("+-.():")

_SIMPLE_ESCAPES = {
    '"': '"', "'": "'", "\\": "\\",
    "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
}
_HEX = frozenset("0123456789abcdefABCDEF")
_OCT = frozenset("01234567")


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    line: int
    value: Value | None = None


def _describe(tok: _Tok) -> str:
    if tok.kind in (_NL, _EOF):
        return tok.kind
    if tok.kind == _STR:
        return f"string {_short(tok.text)}"
    return f"'{_short(tok.text)}'"


def _short(s: str, limit: int = 40) -> str:
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _is_bad_char(ch: str) -> bool:
    return ch == "\0" or "\ud800" <= ch <= "\udfff"


def _tokenize(text: str, filename: str, first_line: int = 1) -> Iterator[_Tok]:
    text = text.replace("\r\n", "\n")
    n = len(text)
    i = 0
    line = first_line

    def err(msg: str, at_line: int | None = None) -> XlCfgError:
        return XlCfgError(filename, line if at_line is None else at_line, msg)

    while i < n:
        ch = text[i]
        if ch == " " or ch == "\t":
            i += 1
        elif ch == "\n":
            yield _Tok(_NL, "\n", line)
            line += 1
            i += 1
        elif ch == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j  # the newline itself becomes a NEWLINE token
        elif ch == ";":
            yield _Tok(_SEMI, ch, line)
            i += 1
        elif ch == "=":
            yield _Tok(_EQ, ch, line)
            i += 1
        elif ch == "+" and text.startswith("+=", i):
            yield _Tok(_ADD, "+=", line)
            i += 2
        elif ch == "[":
            yield _Tok(_LBR, ch, line)
            i += 1
        elif ch == "]":
            yield _Tok(_RBR, ch, line)
            i += 1
        elif ch == ",":
            yield _Tok(_COMMA, ch, line)
            i += 1
        elif ch in _WORD_START:
            j = i + 1
            while j < n and text[j] in _WORD_CHARS:
                j += 1
            yield _Tok(_WORD, text[i:j], line)
            i = j
        elif ch in _DIGITS:
            j = i + 1
            while j < n and text[j] in _WORD_CHARS:
                j += 1
            word = text[i:j]
            value = parse_c_integer(word)
            if value is None:
                raise err(f"syntax error: invalid number '{_short(word)}'")
            yield _Tok(_NUM, word, line, value)
            i = j
        elif ch == '"' or ch == "'":
            quote = ch
            j = i + 1
            out: list[str] = []
            while True:
                if j >= n or text[j] == "\n":
                    raise err("syntax error: unterminated string")
                c = text[j]
                if c == quote:
                    j += 1
                    break
                if _is_bad_char(c):
                    raise err("lexical error: string contains a NUL or non-UTF-8 character")
                if c != "\\":
                    out.append(c)
                    j += 1
                    continue
                # backslash escape
                if j + 1 >= n or text[j + 1] == "\n":
                    raise err("syntax error: unterminated string")
                e = text[j + 1]
                if e in _SIMPLE_ESCAPES:
                    out.append(_SIMPLE_ESCAPES[e])
                    j += 2
                elif e == "x":
                    hexdigits = text[j + 2: j + 4]
                    if len(hexdigits) != 2 or any(h not in _HEX for h in hexdigits):
                        raise err("lexical error: \\x escape needs two hex digits in quoted string")
                    code = int(hexdigits, 16)
                    if code == 0:
                        raise err("lexical error: NUL character escape in quoted string")
                    out.append(chr(code))
                    j += 4
                elif e in _OCT:
                    k = j + 1
                    while k < n and k < j + 4 and text[k] in _OCT:
                        k += 1
                    code = int(text[j + 1:k], 8)
                    if code == 0:
                        raise err("lexical error: NUL character escape in quoted string")
                    out.append(chr(code))
                    j = k
                else:
                    shown = e if e.isprintable() and not _is_bad_char(e) else ascii(e)[1:-1]
                    raise err(f"lexical error: invalid escape '\\{shown}' in quoted string")
            yield _Tok(_STR, text[i:j], line, "".join(out))
            i = j
        else:
            shown = ch if ch.isprintable() and not _is_bad_char(ch) else ascii(ch)[1:-1]
            msg = f"lexical error: unexpected character '{shown}'"
            if ch in _PYTHONISH:
                msg += " (Python syntax is not supported in xl config files)"
            raise err(msg)
    yield _Tok(_EOF, "", line)


# ---------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------

def _valid_key(word: str) -> bool:
    return word[:1] in _KEY_START and all(c in _KEY_CHARS for c in word)


class _Parser:
    def __init__(self, text: str, filename: str, config: Config, first_line: int = 1):
        self.toks = _tokenize(text, filename, first_line)
        self.filename = filename
        self.config = config
        self.tok = next(self.toks)
        self._peeked: _Tok | None = None

    def advance(self) -> _Tok:
        t = self.tok
        if self._peeked is not None:
            self.tok, self._peeked = self._peeked, None
        else:
            self.tok = next(self.toks)
        return t

    def peek(self) -> _Tok:
        """The token after the current one (EOF after EOF)."""
        if self.tok.kind == _EOF:
            return self.tok
        if self._peeked is None:
            self._peeked = next(self.toks)
        return self._peeked

    def err(self, tok: _Tok, msg: str) -> XlCfgError:
        return XlCfgError(self.filename, tok.line, msg)

    def parse(self) -> None:
        while self.tok.kind != _EOF:
            if self.tok.kind in (_NL, _SEMI):
                self.advance()
            else:
                self.statement()

    def statement(self) -> None:
        key_tok = self.tok
        if key_tok.kind != _WORD:
            raise self.err(key_tok, f"syntax error: expected a setting name, got {_describe(key_tok)}")
        key = key_tok.text
        if not _valid_key(key):
            raise self.err(
                key_tok,
                f"syntax error: invalid setting name '{_short(key)}' (names start with a "
                "lowercase letter and contain only lowercase letters, digits, '_' and '.')")
        self.advance()
        op_tok = self.tok
        if op_tok.kind not in (_EQ, _ADD):
            raise self.err(op_tok, f"syntax error: missing '=' after '{key}' (got {_describe(op_tok)})")
        self.advance()
        value = self.value(key)
        end = self.tok
        if end.kind in (_NL, _SEMI):
            self.advance()
        elif end.kind != _EOF:
            raise self.err(
                end, f"syntax error: expected newline or ';' after the value of '{key}', "
                     f"got {_describe(end)}")
        self.config._store(key, op_tok.kind, value, self.filename, key_tok.line)

    def atom(self, key: str, in_list: bool) -> Value:
        tok = self.tok
        if tok.kind in (_STR, _NUM):
            self.advance()
            assert tok.value is not None
            return tok.value
        if tok.kind == _WORD:
            raise self.err(tok, f"syntax error: unquoted string '{_short(tok.text)}' in the value "
                                f"of '{key}' (strings must be quoted)")
        if in_list:
            raise self.err(tok, f"syntax error: expected a list element or ']' in the value of "
                                f"'{key}', got {_describe(tok)}")
        if tok.kind in (_NL, _EOF, _SEMI):
            raise self.err(tok, f"syntax error: missing value for '{key}'")
        raise self.err(tok, f"syntax error: expected a value for '{key}', got {_describe(tok)}")

    def value(self, key: str) -> Value:
        if self.tok.kind != _LBR:
            return self.atom(key, in_list=False)

        # Lists are parsed iteratively (no recursion limit to hit): each
        # stack entry is a list under construction and its '[' token.
        root: list[Value] = []
        stack: list[tuple[list[Value], _Tok]] = [(root, self.advance())]
        expecting_item = True  # just after '[' or ','
        while True:
            while self.tok.kind == _NL:
                self.advance()
            cur, open_tok = stack[-1]
            t = self.tok
            if t.kind == _RBR:
                self.advance()
                stack.pop()
                if not stack:
                    return root
                expecting_item = False
            elif t.kind == _EOF or (t.kind == _WORD and self.peek().kind in (_EQ, _ADD)):
                # Ran into the end of the file or the next "key = ..." statement.
                found = "" if t.kind == _EOF else f" (reached '{_short(t.text)}' on line {t.line})"
                raise self.err(open_tok, f"syntax error: unclosed list in the value of '{key}': "
                                         f"'[' has no matching ']'{found}")
            elif not expecting_item:
                if t.kind != _COMMA:
                    raise self.err(t, f"syntax error: expected ',' or ']' in the list value of "
                                      f"'{key}', got {_describe(t)}")
                self.advance()
                expecting_item = True
            elif t.kind == _LBR:
                if len(stack) >= MAX_LIST_DEPTH:
                    raise self.err(t, "syntax error: lists nested too deeply")
                new: list[Value] = []
                cur.append(new)
                stack.append((new, self.advance()))
            else:
                cur.append(self.atom(key, in_list=True))
                expecting_item = False


def _parse_into(config: Config, text: str, filename: str, first_line: int = 1) -> Config:
    if not isinstance(text, str):
        raise XlCfgError(filename, None, f"config text must be str, not {type(text).__name__}")
    try:
        _Parser(text, filename, config, first_line).parse()
    except XlCfgError:
        raise
    except RecursionError:  # pragma: no cover - parser is iterative
        raise XlCfgError(filename, None, "syntax error: input nested too deeply") from None
    return config


def parse(text: str, filename: str = "<string>") -> Config:
    """Parse xl.cfg ``text``; ``filename`` is used in error messages."""
    return _parse_into(Config(filename), text, filename)


def parse_file(path: str | os.PathLike[str]) -> Config:
    """Read and parse the configuration file at ``path``."""
    try:
        filename = os.fspath(path)
    except TypeError:
        raise XlCfgError(repr(path), None, "invalid config file path") from None
    if isinstance(filename, bytes):
        filename = os.fsdecode(filename)
    try:
        with open(filename, "rb") as f:
            data = f.read()
    except (OSError, ValueError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise XlCfgError(filename, None, f"cannot read config file: {reason}") from None
    text = data.decode("utf-8", errors="surrogateescape")
    # Undecodable bytes become lone surrogates: fine inside comments, an
    # error (with a line number) anywhere else.
    return _parse_into(Config(filename, path=filename), text, filename)


def apply_overrides(config: Config, overrides: Iterable[str]) -> Config:
    """Apply ``key=value`` strings (as given to ``xl create FILE key=value``).

    Each override is parsed with the full config grammar (so ``key+=value``,
    lists and several ``;``-separated settings work) and evaluated after the
    file, exactly as xl appends them as extra config lines.  Errors are
    reported as ``<command line>:1: ...``.  ``config`` is updated in place
    and also returned.
    """
    if isinstance(overrides, str):
        overrides = [overrides]
    for ov in overrides:
        if not isinstance(ov, str):
            raise XlCfgError(COMMAND_LINE, 1, f"override must be a string, not {type(ov).__name__}")
        try:
            _parse_into(config, ov, COMMAND_LINE)
        except XlCfgError as e:
            m = _UNQUOTED_OVERRIDE.match(ov)
            if m:
                hint = f"string values must be quoted, e.g. '{m.group(1)}=\"...\"'"
                msg = e.message.replace(" (strings must be quoted)", "")
                raise XlCfgError(e.filename, e.line, f"{msg} ({hint})") from None
            raise
    return config


# ``key=value`` where the value starts like an unquoted string.
_UNQUOTED_OVERRIDE = re.compile(r"\s*([a-z][a-z0-9_.]*)\s*\+?=\s*[^\s\"'\[0-9#;]")
