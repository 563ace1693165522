"""Teacher prompt templates: one editable YAML file per dataset, rendered per example.

A template has ``instruction``, ``example_format`` (a ``str.format`` string over the example's fields, its
rendered ``choices`` and ``rationale``), ``choices_style`` (``semicolon``: "A: x; B: y", or ``inline``:
"(A) x (B) y"), ``answer_pattern`` (a regex whose group 1 is the label a rationale commits to) and two or more
worked ``examples``. The target example is rendered with an empty rationale, so the prompt ends at
"Rationale:" and the teacher writes "The answer is X because ...".
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REQUIRED = ("instruction", "example_format", "answer_pattern", "examples")


@dataclass(frozen=True)
class Template:
    path: str
    instruction: str
    example_format: str
    answer_pattern: str
    examples: tuple[dict, ...]
    choices_style: str
    hash: str

    def render(self, example: dict[str, Any]) -> str:
        """The few-shot prompt for one example (a dataset row as a dict)."""
        shots = [self._format(ex) for ex in self.examples]
        target = self._format({**example, "rationale": ""}).rstrip()
        return "\n\n".join([self.instruction.strip(), *shots, target])

    def _format(self, ex: dict[str, Any]) -> str:
        fields = {**ex, "choices": format_choices(ex.get("choices"), self.choices_style)}
        try:
            return self.example_format.format(**fields)
        except KeyError as err:
            raise ValueError(f"{self.path}: example_format uses field {err} that the example lacks "
                             f"(fields: {', '.join(sorted(fields))})") from None

    def answer_regex(self) -> re.Pattern:
        return re.compile(self.answer_pattern, re.I)


def format_choices(choices: Any, style: str) -> str:
    if choices is None:
        return ""
    items = [(c["label"], c["text"]) for c in choices]
    if style == "inline":
        return " ".join(f"({lab}) {text}" for lab, text in items)
    return "; ".join(f"{lab}: {text}" for lab, text in items)


def load_template(path: str | Path) -> Template:
    """Read and check a template file; its hash covers the file's bytes."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: prompt template does not exist")
    raw = path.read_bytes()
    data = yaml.safe_load(raw) or {}
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise ValueError(f"{path}: prompt template lacks keys {missing}; required: {list(REQUIRED)}")
    style = data.get("choices_style", "semicolon")
    if style not in ("semicolon", "inline"):
        raise ValueError(f"{path}: choices_style {style!r} is not one of semicolon, inline")
    try:
        re.compile(data["answer_pattern"])
    except re.error as err:
        raise ValueError(f"{path}: answer_pattern is not a valid regex: {err}") from None
    return Template(str(path), data["instruction"], data["example_format"], data["answer_pattern"],
                    tuple(data["examples"]), style, hashlib.sha256(raw).hexdigest()[:16])
