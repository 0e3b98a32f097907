"""Undo the mojibake of some Hugging Face TinyStories rows: UTF-8 that was decoded as Windows-1252.

Some rows of the hub's `roneneldan/TinyStories` (as `datasets` serves them) hold `â€œ`, `â€™`,
`â€“` where the story had `“`, `’`, `–`: the story's UTF-8 bytes were once decoded as Windows-1252
(cp1252) and re-encoded. The classic repair is the inverse: encode the damaged characters back
to cp1252 bytes and decode those bytes as UTF-8. `repair_mojibake` does that on each damaged
sequence only (a whole-string round trip would fail on, or corrupt, the correct non-ASCII
characters elsewhere in the text), and decodes a sequence only when it is valid UTF-8.

One byte cannot be recovered by the round trip: cp1252 has no character for 0x9D, the last byte
of `”` (E2 80 9D), so the damaged rows show a bare `â€` where `”` was. A bare `â€` (not followed
by a third byte) is replaced by `”`: of the five characters E2 80 xx whose xx is undefined in
cp1252 (U+2001, U+200D, U+200F, U+2010, U+201D) it is the only one a story is likely to hold.

Legitimate text almost never holds these sequences (an accented capital followed by a cp1252
punctuation mark, e.g. `Ã©`), so the repair is safe on English stories; the loader applies it
unless `StoryDataConfig.fix_mojibake` is off, and counts the repaired records.
"""

from __future__ import annotations

import re

from typing import Any

__all__ = ["repair_mojibake", "repair_record"]

# cp1252 byte 0x80-0xBF (a UTF-8 continuation byte) -> the character it decodes to. The five
# bytes cp1252 leaves undefined appear as the C1 control of the same number when a decoder
# passed them through (latin-1 style), so those map back too.
_CONTINUATION: dict[str, int] = {}
for _byte in range(0x80, 0xC0):
    try:
        _CONTINUATION[bytes([_byte]).decode("cp1252")] = _byte
    except UnicodeDecodeError:
        _CONTINUATION[chr(_byte)] = _byte
_CONT = "[" + re.escape("".join(_CONTINUATION)) + "]"
# UTF-8 lead bytes C2-F4 decode (in cp1252 and latin-1 alike) to the characters U+00C2-U+00F4.
_DAMAGED = re.compile(
    f"[\u00f0-\u00f4]{_CONT}{{3}}|[\u00e0-\u00ef]{_CONT}{{2}}|[\u00c2-\u00df]{_CONT}"
    f"|\u00e2\u20ac(?!{_CONT})"  # "â€" whose third byte (0x9D of ”) was lost
)
_LOST_RIGHT_QUOTE = "\u00e2\u20ac"


def _repair(match: re.Match[str]) -> str:
    damaged = match.group()
    if damaged == _LOST_RIGHT_QUOTE:
        return "\u201d"
    raw = bytes([ord(damaged[0]), *(_CONTINUATION[ch] for ch in damaged[1:])])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:  # not a UTF-8 sequence after all: leave the text as it is
        return damaged


def repair_mojibake(text: str) -> str:
    """`text` with every cp1252-decoded UTF-8 sequence decoded back (see the module docstring).

    Text without mojibake comes back unchanged (the same string).
    """
    if max(text, default="\0") < "\u00c2":  # no lead character (e.g. ASCII): nothing to do
        return text
    return _DAMAGED.sub(_repair, text)


def repair_record(record: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """A parsed record with its text fields repaired, and whether any of them changed."""
    fixed = {k: repair_mojibake(record[k]) for k in ("story", "summary", "random_sentence")}
    fixed["words"] = [repair_mojibake(w) for w in record["words"]]
    changed = any(fixed[k] != record[k] for k in fixed)
    return ({**record, **fixed} if changed else record), changed
