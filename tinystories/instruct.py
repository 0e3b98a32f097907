"""The TinyStories-Instruct record format: parse it into fields, and write it back.

A TinyStories-Instruct record (the hub's `TinyStories-Instruct-*.txt`) is a few instruction lines
and then the story, records separated by `<|endoftext|>`:

    Features: Dialogue, Twist
    Words: quit, oak, gloomy
    Summary: Sara and Ben play in the park until something surprising happens.
    Random sentence: Ben pushes her gently.
    Story:

    Sara and Ben were playing in the park. ...
    <|endoftext|>

The instruction lines come in any order and every one of them is optional (a story with no
features has no `Features:` line); `Story:` is required and everything after it is the story. The
paper's code shuffles the instruction lines of every example
(docs/paper-settings.md#tinystories-data), so a parser must not depend on their order and a
formatter may shuffle them.

A parsed record is a plain dict with the columns of `RECORD_FEATURES`:

- `story`, `summary`, `random_sentence`: strings ("" when absent);
- `words`: the required words;
- `features`: the features the *story* has (the label used by probes and by the filters);
- `prompt_features`: the features the *instruction* names. Equal to `features` when parsed; the
  deletion protocols F+R and F+MM edit only this column (docs/paper-settings.md#deletion-protocols),
  so the label stays true;
- `error`: "" for a good record, otherwise why it is malformed (the loader counts and reports
  these, see `tinystories.data`).

Feature names are canonicalised case- and space-insensitively to the paper's six (`FEATURES`, in
the code's probe order); other names are kept as written.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import datasets
import numpy as np

__all__ = [
    "EOT",
    "ERROR_REASONS",
    "FEATURES",
    "PROMPT_FIELDS",
    "RECORD_FEATURES",
    "canonical_feature",
    "parse_instruct_record",
    "plain_story_record",
    "record_from_json",
    "format_prompt",
    "format_training_text",
]

EOT = "<|endoftext|>"
"""Record separator of the TinyStories text files, and the BOS/EOS token of their tokenizers."""

FEATURES = ("Twist", "Foreshadowing", "Dialogue", "BadEnding", "MoralValue", "Conflict")
"""The six story features, in the order of the official code's probe classes."""

PROMPT_FIELDS = ("features", "words", "summary", "random_sentence")
"""Instruction fields in the order `format_prompt` writes them by default."""

_LABELS = {
    "features": "Features",
    "words": "Words",
    "summary": "Summary",
    "random_sentence": "Random sentence",
    "story": "Story",
}
# Line prefix (lower case, as matched) -> field name. "Sentence:" is the official code's name for
# the random sentence (docs/paper-settings.md#tinystories-data).
_PREFIXES = {
    "features:": "features",
    "words:": "words",
    "summary:": "summary",
    "random sentence:": "random_sentence",
    "sentence:": "random_sentence",
    "story:": "story",
}

RECORD_FEATURES = datasets.Features(
    {
        "story": datasets.Value("string"),
        "summary": datasets.Value("string"),
        "words": datasets.List(datasets.Value("string")),
        "features": datasets.List(datasets.Value("string")),
        "prompt_features": datasets.List(datasets.Value("string")),
        "random_sentence": datasets.Value("string"),
        "error": datasets.Value("string"),
    }
)
"""The `datasets` schema of a parsed record (see the module docstring)."""

_CANONICAL = {name.lower(): name for name in FEATURES}

MISSING_STORY = "missing story: no 'Story:' line"
# Every `error` is "<reason>: <detail>" or "<reason>", with a reason from this set (counted).
ERROR_REASONS = (
    "missing story", "empty story", "duplicate field", "unrecognised line", "bad json",
    "unterminated record",  # a .txt file's text after its last <|endoftext|> (tinystories.data)
)


def canonical_feature(name: str) -> str:
    """`"bad ending"`, `"badending"`, `"Bad_Ending"` -> `"BadEnding"`; other names are stripped."""
    key = "".join(ch for ch in name.lower() if ch.isalnum())
    return _CANONICAL.get(key, name.strip())


def _split_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _record(
    story: str = "",
    summary: str = "",
    words: Sequence[str] = (),
    features: Sequence[str] = (),
    random_sentence: str = "",
    error: str = "",
    prompt_features: Sequence[str] | None = None,
) -> dict[str, Any]:
    features = list(dict.fromkeys(canonical_feature(f) for f in features if f.strip()))
    if prompt_features is None:
        prompt_features = features
    return {
        "story": story,
        "summary": summary,
        "words": list(words),
        "features": features,
        "prompt_features": [canonical_feature(f) for f in prompt_features if f.strip()],
        "random_sentence": random_sentence,
        "error": error,
    }


def parse_instruct_record(text: str) -> dict[str, Any]:
    """Parse one record (the text between two `<|endoftext|>`) into the fields of `RECORD_FEATURES`.

    Never raises on bad input: a malformed record comes back with `error` set, so that the loader
    can count it. Malformed means: no `Story:` line, an empty story, a field given twice, or a line
    before `Story:` that is no known field.
    """
    fields: dict[str, str] = {}
    lines = text.strip("\n").split("\n")
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped:
            continue
        lowered = stripped.lower()
        prefix = next((p for p in _PREFIXES if lowered.startswith(p)), None)
        if prefix is None:
            return _record(
                error=f"unrecognised line: line {i + 1} is not an instruction field: "
                f"{stripped[:60]!r}"
            )
        field = _PREFIXES[prefix]
        if field in fields:
            return _record(error=f"duplicate field: {_LABELS[field]!r} appears twice")
        value = stripped[len(prefix) :].strip()
        if field == "story":
            # The story starts after "Story:" on the same line or on the following lines.
            rest = "\n".join([value] + lines[i + 1 :]).strip()
            if not rest:
                return _record(error="empty story")
            return _record(
                story=rest,
                summary=fields.get("summary", ""),
                words=_split_list(fields.get("words", "")),
                features=_split_list(fields.get("features", "")),
                random_sentence=fields.get("random_sentence", ""),
            )
        fields[field] = value
    return _record(error=MISSING_STORY)


def plain_story_record(text: str) -> dict[str, Any]:
    """A record for a plain TinyStories story (no instruction); empty text is malformed."""
    story = text.strip()
    return _record(story=story, error="" if story else "empty story")


def record_from_json(obj: dict[str, Any]) -> dict[str, Any]:
    """A record from one JSON object, in any of the layouts TinyStories is distributed in.

    - `{"text": ...}`: a raw Instruct record (parsed) or, without a `Story:` line, a plain story;
    - flat fields: `{"story", "summary", "words", "features", "random_sentence"}` (what
      `tinystories.story_source` writes; lists may also be comma-separated strings), and
      optionally `"prompt_features"` (a saved protocol dataset keeps its edited instruction);
    - the original `TinyStories_all_data` layout:
      `{"story", "summary", "instruction": {"words": [...], "features": [...], ...}, "source"}`.
    """
    if "story" not in obj or obj["story"] is None:
        text = obj.get("text")
        if isinstance(text, str):
            parsed = parse_instruct_record(text)
            if parsed["error"] == MISSING_STORY:
                return plain_story_record(text)
            return parsed
        return _record(
            error=f"bad json: the record has neither 'story' nor 'text' (keys {sorted(obj)})"
        )
    instruction = obj.get("instruction") or {}
    if not isinstance(instruction, dict):
        return _record(error="bad json: 'instruction' is not an object")

    def as_list(value: Any) -> list[str] | None:
        if value is None:
            return []
        if isinstance(value, str):
            return _split_list(value)
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return list(value)
        return None

    def field(key: str) -> Any:  # a table gives every row every column, absent ones as None
        value = obj.get(key)
        return value if value is not None else instruction.get(key)

    words, features = as_list(field("words")), as_list(field("features"))
    # A saved protocol dataset (F+R, F+MM) carries its edited instruction features.
    prompt = as_list(obj["prompt_features"]) if obj.get("prompt_features") is not None else []
    if words is None or features is None or prompt is None:
        return _record(error="bad json: 'words' or a feature list is not a list of strings")
    story = obj["story"]
    if not isinstance(story, str) or not story.strip():
        return _record(error="empty story")
    sentence = obj.get("random_sentence") or obj.get("sentence") or ""
    return _record(
        story=story.strip(),
        summary=str(obj.get("summary") or "").strip(),
        words=words,
        features=features,
        random_sentence=str(sentence).strip(),
        prompt_features=prompt if obj.get("prompt_features") is not None else None,
    )


def _field_line(record: dict[str, Any], field: str) -> str | None:
    if field == "features":
        values = record.get("prompt_features", record.get("features")) or []
        return f"Features: {', '.join(values)}" if values else None
    if field == "words":
        values = record.get("words") or []
        return f"Words: {', '.join(values)}" if values else None
    value = record.get(field) or ""
    return f"{_LABELS[field]}: {value}" if value else None


def format_prompt(
    record: dict[str, Any],
    field_order: Iterable[str] = PROMPT_FIELDS,
    shuffle_rng: np.random.Generator | None = None,
) -> str:
    """The instruction part of a record, ending in `"Story: "` (the generation prompt).

    Empty fields are left out, as in the real data. The Features line shows `prompt_features`
    (what the instruction claims), not the story's true `features`.

    Args:
        record: A parsed record (see `RECORD_FEATURES`).
        field_order: Order of the instruction lines; names from `PROMPT_FIELDS`.
        shuffle_rng: If given, the lines are shuffled with it, as the paper's code does.
    """
    order = list(field_order)
    unknown = [f for f in order if f not in PROMPT_FIELDS]
    if unknown:
        raise ValueError(f"field_order has unknown fields {unknown}; valid: {PROMPT_FIELDS}")
    if shuffle_rng is not None:
        order = [order[i] for i in shuffle_rng.permutation(len(order))]
    lines = [line for f in order if (line := _field_line(record, f)) is not None]
    return "".join(line + "\n" for line in lines) + "Story: "


def format_training_text(
    record: dict[str, Any],
    field_order: Iterable[str] = PROMPT_FIELDS,
    shuffle_rng: np.random.Generator | None = None,
) -> str:
    """Instruction lines, then `"Story: "` and the story: the text a model is trained on."""
    return format_prompt(record, field_order, shuffle_rng) + record["story"]
