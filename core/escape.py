"""Text from the evidence made safe for where it is written.

Everything in an image is chosen by whoever (or whatever) wrote the disk: an MGT name label, an LV
name, a VG name, a metadata description, a RAR member name, a SQL Server database name. Before any
of it reaches a target that interprets characters it goes through one of these:

- `terminal_line(s)`: a terminal (stdout text, stderr warnings, the workstation's widgets): C0/C1
  control characters (ESC, CSI, OSC, BEL, CR, LF, ...), DEL and the Unicode line/paragraph
  separators and bidi overrides are shown as `\\xNN` / `\\uNNNN`, never interpreted, so a label
  cannot retitle the terminal, clear the screen or start a fake line.
- `terminal_text(s)`: the same for a multi-line block we composed ourselves: our own newlines
  (and tabs) kept, everything else escaped.
- `shell_word(s)`: one argument of a POSIX shell command (`shlex.quote`), and `shell_comment(s)`
  for text after `#` (one line, escaped as for a terminal, so a newline cannot end the comment).
- `lvm_string(s)`: the inside of a libdm config double-quoted string: `"` and `\\` escaped
  (libdm's lexer takes the character after a backslash literally: lvm2 libdm/libdm-config.c
  `_get_token` / `_dup_string_tok`), control characters as visible escapes.
- `lvm_name_ok(name)`: lvm2's rule for VG/LV names (lvm2 lib/misc/lvm-string.c `_validate_name`:
  `[a-zA-Z0-9+_.-]`, not starting with `-`, not `.` or `..`, at most 127 characters), the only
  names that may be written unquoted as a section name in a restore file or given to lvm2.
"""

from __future__ import annotations

import re
import shlex

# C0 controls, DEL, C1 controls; U+2028/2029 (line/paragraph separators) and the bidi controls
# (U+202A-202E, U+2066-2069) which reorder what a terminal shows
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_UNSAFE_KEEP_NL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_LVM_NAME = re.compile(r"[A-Za-z0-9+_.][A-Za-z0-9+_.-]{0,126}")


def _escape_char(m: re.Match) -> str:
    c = ord(m.group(0))
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def terminal_line(text: object) -> str:
    """`text` as one terminal line: every control character shown as an escape."""
    return _UNSAFE.sub(_escape_char, str(text))


def terminal_text(text: object) -> str:
    """A block we composed (our own "\\n" and "\\t" kept); other control characters escaped."""
    return _UNSAFE_KEEP_NL.sub(_escape_char, str(text))


def shell_word(text: object) -> str:
    """One shell word: the text exactly, quoted so nothing in it is interpreted."""
    return shlex.quote(str(text))


def shell_comment(text: object) -> str:
    """Text safe after `#` in a shell script: one line, controls shown as escapes."""
    return terminal_line(text)


def lvm_string(text: object) -> str:
    """A libdm double-quoted config string (quotes included)."""
    body = str(text).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + _UNSAFE.sub(lambda m: "\\" + _escape_char(m), body) + '"'


def lvm_name_ok(name: object) -> bool:
    """lvm2 accepts `name` as a VG or LV name (and it can be written as a section name)."""
    return isinstance(name, str) and name not in (".", "..") and bool(_LVM_NAME.fullmatch(name))
