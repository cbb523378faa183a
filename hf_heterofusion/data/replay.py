# SPDX-License-Identifier: Apache-2.0
"""The replay set, read from JSONL (paper §2.6, §4.3); `encoding.py` turns it into token ids.

A replay file holds one JSON object per line, in one of three shapes:

* plain: `{"prompt": "...", "response": "..."}`
* chat: `{"messages": [{"role": "user", "content": "..."}, ..., {"role": "assistant", "content": "..."}]}`;
  the last message is the response, the earlier ones are the prompt, rendered with the *target* tokenizer's
  chat template (the paper gives the replay set to the target model in its own template)
* alpaca: `{"instruction": "...", "input": "...", "output": "..."}` (`input` optional; LLaMA-Factory's optional
  `system` and `history` turn the row into a chat)

Other keys are ignored, so rows may carry metadata such as `task`. The loss is on response tokens only: every
prompt token gets the label -100, exactly as LLaMA-Factory's SFT processing does in the reference code.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_heterofusion.errors import ReplayDataError


IGNORE_INDEX = -100
"""Label of tokens that carry no loss (prompt and padding); the value `torch.nn.CrossEntropyLoss` ignores."""

_SHAPES_HINT = (
    "expected `prompt` + `response`, `messages` (chat ending with an assistant turn) "
    "or `instruction` + `output` (alpaca, optional `input`)"
)


Prompt = str | tuple[dict[str, str], ...]
"""Plain prompt text, or the chat messages before the answer."""


@dataclass(frozen=True)
class ReplayExample:
    """One supervised replay example.

    `prompt` is either plain text or the chat messages before the final assistant turn (then it is rendered with
    the target tokenizer's chat template). `line` is the 1-based line in the source file, 0 if built in memory.
    The message dicts are not copied: do not mutate them.
    """

    prompt: str | tuple[dict[str, str], ...]
    response: str
    line: int = 0
    task: str | None = field(default=None, compare=False)  # `task`/`source` tag: groups rows in the ablation
    # A teacher's per-token signal on `response` (`soft_targets.TokenSignal`), for token-level distillation.
    signal: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.response, str) or not self.response:
            raise ReplayDataError(f"replay example at line {self.line}: `response` must be a non-empty string")
        if not isinstance(self.prompt, (str, tuple)):
            raise ReplayDataError(
                f"replay example at line {self.line}: `prompt` must be a string or a tuple of chat messages, "
                f"got {type(self.prompt).__name__}"
            )

    @property
    def is_chat(self) -> bool:
        """Whether the prompt is a list of chat messages (rendered with the chat template)."""
        return isinstance(self.prompt, tuple)


# --------------------------------------------------------------------------------------------------- reading


def load_replay(path: str | Path) -> tuple[ReplayExample, ...]:
    """Read a JSONL replay file.

    Args:
        path (`str` or `Path`): a file with one JSON object per line; blank lines are skipped.

    Returns:
        `tuple[ReplayExample, ...]`: the examples in file order, each remembering its line number.

    Raises:
        `ReplayDataError`: the file is missing or empty, or a line is not a JSON object of a known shape, or has
            an empty response. The message names `file:line` and what to fix.

    Example:
        ```python
        >>> examples = load_replay("replay.jsonl")
        >>> examples[0].response
        'person: Alice'
        ```
    """
    examples = []
    for where, number, row in _json_rows(path, what="replay file"):
        if isinstance(row, Mapping) and row.get("source") is not None and not _has_answer(row):
            raise ReplayDataError(f"{where}: row is tagged `source: {row['source']}` and has no answer: it is for "
                                  f"the teacher stage; set `teacher: sources` (with that source as base+adapter)")
        examples.append(parse_row(row, where=where, line=number))
    return tuple(examples)


@dataclass(frozen=True)
class TaggedPrompt:
    """A replay row with `"source": NAME_OR_INDEX` and no answer: that source expert labels it (teacher stage)."""

    source: str | int
    prompt: Prompt
    where: str
    answer: str | None = None  # a labelled row's answer (a seed), for `synthesis_steer: answer`


@dataclass(frozen=True)
class ReplayData:
    """A replay file read whole: labelled examples, prompts tagged for a teacher, and the seed prompts of each
    source (prompts of every row tagged with that source, labelled or not)."""

    examples: tuple[ReplayExample, ...]
    tagged: tuple[TaggedPrompt, ...] = ()
    seeds: tuple[TaggedPrompt, ...] = ()


def read_replay(path: str | Path) -> ReplayData:
    """Read a replay file in which rows may carry `"source"` (see `ReplayData`); `load_replay` refuses unlabelled
    rows, this keeps them for the teacher stage."""
    examples, tagged, seeds = [], [], []
    for where, number, row in _json_rows(path, what="replay file"):
        source = row.get("source") if isinstance(row, Mapping) else None
        if source is not None and not isinstance(source, (str, int)) or isinstance(source, bool):
            raise ReplayDataError(f"{where}: `source` must be a source name or index, got {_json_type(source)}")
        if source is not None and not _has_answer(row):
            tagged.append(TaggedPrompt(source, parse_prompt_row(row, where=where), where))
            continue
        example = parse_row(row, where=where, line=number)
        examples.append(example)
        if source is not None:
            seeds.append(TaggedPrompt(source, example.prompt, where, example.response))
    return ReplayData(tuple(examples), tuple(tagged), tuple(seeds + tagged))


def read_prompts(path: str | Path) -> tuple[tuple[Prompt, str], ...]:
    """Read a JSONL of unlabelled prompts (`prompt`, `messages` without the final answer, or alpaca
    `instruction` + `input`; an answer present is ignored): (prompt, `file:line`) pairs."""
    return tuple((parse_prompt_row(row, where=where), where) for where, _, row in _json_rows(path, what="prompts file"))


def parse_prompt_row(row: Any, *, where: str = "row") -> Prompt:
    """The prompt of a row whose answer is missing or ignored."""
    if not isinstance(row, Mapping):
        raise ReplayDataError(f"{where}: expected a JSON object, got {_json_type(row)}; expected `prompt` or "
                              f"`messages`")
    if "messages" in row:
        messages = row["messages"]
        if isinstance(messages, list) and messages and isinstance(messages[-1], Mapping) \
                and messages[-1].get("role") == "assistant":
            messages = messages[:-1]  # an answer present is ignored: the teacher writes its own
        if not isinstance(messages, list) or not messages:
            raise ReplayDataError(f"{where}: `messages` must be a non-empty list of {{`role`, `content`}} objects "
                                  f"ending with the user turn")
        checked = []
        for i, message in enumerate(messages):
            if not isinstance(message, Mapping) or not all(isinstance(message.get(k), str) for k in ("role", "content")):
                raise ReplayDataError(f"{where}: `messages[{i}]` must be an object with string `role` and `content`")
            checked.append({"role": message["role"], "content": message["content"]})
        return tuple(checked)
    if "prompt" in row:
        prompt = _require_str(row, "prompt", where)
    elif "instruction" in row:
        prompt, _ = _parse_alpaca({**row, "output": "-"}, where)
    else:
        keys = ", ".join(f"`{k}`" for k in row) or "none"
        raise ReplayDataError(f"{where}: row has keys {keys}; expected `prompt`, `messages` or `instruction`")
    if isinstance(prompt, str) and not prompt.strip():
        raise ReplayDataError(f"{where}: empty prompt; give the text the source expert should answer")
    return prompt


def _has_answer(row: Mapping[str, Any]) -> bool:
    if "response" in row or "output" in row:
        return True
    messages = row.get("messages")
    return isinstance(messages, list) and bool(messages) and isinstance(messages[-1], Mapping) \
        and messages[-1].get("role") == "assistant"


def _json_rows(path: str | Path, *, what: str) -> Iterable[tuple[str, int, Any]]:
    """(`file:line`, line, decoded row) of a JSONL file, with one-line errors for what can go wrong."""
    path = Path(path)
    if not path.is_file():
        state = "is a directory, not a file" if path.is_dir() else "does not exist"
        item = "example" if what == "replay file" else "prompt"
        raise ReplayDataError(f"{what} {path} {state}; pass a JSONL file with one {item} per line")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ReplayDataError(f"cannot read {what} {path}: {err}") from err
    rows = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as err:
            hint = " (this looks like a JSON array: write one object per line instead)" if raw.strip() == "[" else ""
            raise ReplayDataError(
                f"{where}: not valid JSON ({err.msg} at column {err.colno}){hint}; write one JSON object per line"
            ) from err
        rows.append((where, number, row))
    if not rows:
        raise ReplayDataError(f"{what} {path} is empty; add at least one example (one JSON object per line)")
    return rows


def examples_from_rows(rows: Iterable[Mapping[str, Any] | ReplayExample]) -> tuple[ReplayExample, ...]:
    """Turn in-memory rows (the dicts a JSONL file would hold) into examples; `ReplayExample`s pass through.

    Raises:
        `ReplayDataError`: a row is malformed (the message names its 1-based position) or there are no rows.
    """
    examples = tuple(
        row if isinstance(row, ReplayExample) else parse_row(row, where=f"row {i}", line=0)
        for i, row in enumerate(rows, start=1)
    )
    if not examples:
        raise ReplayDataError("no replay examples were given; pass at least one row")
    return examples


def parse_row(row: Any, *, where: str = "row", line: int = 0) -> ReplayExample:
    """Parse one decoded JSON row (any of the three shapes) into a `ReplayExample`.

    Args:
        row (`Any`): the decoded JSON value.
        where (`str`, *optional*): location used in error messages, e.g. `data.jsonl:12`.
        line (`int`, *optional*, defaults to 0): line number stored in the example.
    """
    if not isinstance(row, Mapping):
        raise ReplayDataError(f"{where}: expected a JSON object, got {_json_type(row)}; {_SHAPES_HINT}")
    if "messages" in row:
        prompt, response = _parse_chat(row, where)
    elif "prompt" in row or "response" in row:
        prompt, response = _require_str(row, "prompt", where), _require_str(row, "response", where)
    elif "instruction" in row or "output" in row:
        prompt, response = _parse_alpaca(row, where)
    else:
        keys = ", ".join(f"`{k}`" for k in row) or "none"
        raise ReplayDataError(f"{where}: row has keys {keys}; {_SHAPES_HINT}")
    if not response.strip():
        raise ReplayDataError(f"{where}: empty response; every replay example needs a non-empty answer to learn")
    tag = row.get("task", row.get("source"))
    return ReplayExample(prompt=prompt, response=response, line=line, task=None if tag is None else str(tag))


def _parse_chat(row: Mapping[str, Any], where: str) -> tuple[tuple[dict[str, str], ...], str]:
    messages = row["messages"]
    if not isinstance(messages, list) or not messages:
        raise ReplayDataError(f"{where}: `messages` must be a non-empty list of {{`role`, `content`}} objects")
    checked = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or not all(isinstance(message.get(k), str) for k in ("role", "content")):
            raise ReplayDataError(f"{where}: `messages[{i}]` must be an object with string `role` and `content`")
        checked.append({"role": message["role"], "content": message["content"]})
    if checked[-1]["role"] != "assistant":
        raise ReplayDataError(
            f"{where}: the last message has role `{checked[-1]['role']}`; it must be the `assistant` response"
        )
    if len(checked) < 2:
        raise ReplayDataError(f"{where}: `messages` has only the assistant response; add the user turn before it")
    return tuple(checked[:-1]), checked[-1]["content"]


def _parse_alpaca(row: Mapping[str, Any], where: str) -> tuple[str | tuple[dict[str, str], ...], str]:
    instruction, output = _require_str(row, "instruction", where), _require_str(row, "output", where)
    extra = row.get("input") or ""
    if not isinstance(extra, str):
        raise ReplayDataError(f"{where}: `input` must be a string, got {_json_type(extra)}")
    user = f"{instruction}\n\n{extra}" if extra else instruction
    system, history = row.get("system") or "", row.get("history") or []
    if not system and not history:
        return user, output
    # LLaMA-Factory rows with a system prompt or earlier turns only make sense as a chat.
    if not isinstance(system, str) or not isinstance(history, list):
        raise ReplayDataError(f"{where}: `system` must be a string and `history` a list of [query, answer] pairs")
    messages = [{"role": "system", "content": system}] if system else []
    for i, turn in enumerate(history):
        if not (isinstance(turn, list) and len(turn) == 2 and all(isinstance(t, str) for t in turn)):
            raise ReplayDataError(f"{where}: `history[{i}]` must be a [query, answer] pair of strings")
        messages += [{"role": "user", "content": turn[0]}, {"role": "assistant", "content": turn[1]}]
    messages.append({"role": "user", "content": user})
    return tuple(messages), output


def _require_str(row: Mapping[str, Any], key: str, where: str) -> str:
    if key not in row:
        raise ReplayDataError(f"{where}: row lacks `{key}`; {_SHAPES_HINT}")
    value = row[key]
    if not isinstance(value, str):
        raise ReplayDataError(f"{where}: `{key}` must be a string, got {_json_type(value)}")
    return value


def answer_kind(answer: str, prompt: str) -> str:
    """The words of an answer that its prompt does not contain (`none`, `works_for`, `positive`), sorted: what
    kind of answer it is, whatever entities it copies from its prompt."""
    return " ".join(sorted(_words(answer) - _words(prompt)))


def _words(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"\w+", text.lower()))


def _draw(rows: list[ReplayExample], size: int, key: str) -> list[ReplayExample]:
    """`rows` repeated whole up to `size`, topped up with a seeded random subset."""
    repeats, rest = divmod(size, len(rows))
    return rows * repeats + random.Random(key).sample(rows, rest)


def balance_tasks(examples: Sequence[ReplayExample], seed: int, *, by_answer: bool = False,
                  labelled: frozenset[int] = frozenset()) -> tuple[tuple[ReplayExample, ...], dict]:
    """`replay_balance: task`: the training rows with every task group drawn up to the size of the largest one.

    A group is the rows of one `task` (a replay row's `task`/`source` tag; a teacher's rows carry its source's
    name); untagged rows form one group. Why: a teacher labels as many prompts as it is given, so 240 teacher rows
    next to 16 labelled anchor rows would make the anchor's task 6 % of every epoch and the fusion forgets it; with
    balance every task is an equal share. A smaller group is repeated whole, then topped up with a seeded random
    subset of its rows (the same subset every epoch; the training loop shuffles the order per epoch). Returns the
    rows (groups in first-seen order) and a summary for the report: rows per group before and after.

    `by_answer` (`replay_balance: task_answer`) first draws, within each task, every answer kind (`answer_kind`:
    `none`, `works_for`, ...) that a labelled row of the task (`id` in `labelled`) shows, up to the most frequent: synthesized
    rows that mostly answer `none` then teach the found relation as often as its absence. Kinds no labelled row
    shows stay as they are (drawn once): upsampling them would repeat a teacher's odd answers (one
    `lives_in: Abraham, none` drawn 32 times, measured: lives-in fell 94 -> 73); a task without labelled rows is
    not drawn by kind.
    """
    groups: dict[str | None, list[ReplayExample]] = {}
    for example in examples:
        groups.setdefault(example.task, []).append(example)
    kinds: dict[str, dict[str, int]] = {}
    if by_answer:
        for task, rows in groups.items():
            by_kind: dict[str, list[ReplayExample]] = {}
            for r in rows:
                by_kind.setdefault(_kind(r), []).append(r)
            shown = {_kind(r) for r in rows if id(r) in labelled}
            top = max((len(k) for kind, k in by_kind.items() if kind in shown), default=0)
            groups[task] = [r for kind, k in by_kind.items()
                            for r in (_draw(k, top, f"kinds/{seed}/{task}/{kind}") if kind in shown else k)]
            kinds[str(task)] = {kind: len(k) for kind, k in by_kind.items()}
    size = max((len(rows) for rows in groups.values()), default=0)
    out: list[ReplayExample] = []
    for task, rows in groups.items():
        out += _draw(rows, size, f"balance/{seed}/{task}")
    summary = {"mode": "task_answer" if by_answer else "task", "groups": {str(t): len(r) for t, r in groups.items()},
               "rows_per_group": size, "rows": len(out), **({"answer_kinds": kinds} if by_answer else {})}
    return tuple(out), summary


def _kind(example: ReplayExample) -> str:
    return answer_kind(example.response, prompt_text(example.prompt))


def prompt_text(prompt: Prompt) -> str:
    """A prompt as one text: a chat's message contents joined by line breaks."""
    return prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


__all__ = [
    "IGNORE_INDEX",
    "Prompt",
    "ReplayData",
    "ReplayExample",
    "TaggedPrompt",
    "answer_kind",
    "balance_tasks",
    "examples_from_rows",
    "load_replay",
    "parse_prompt_row",
    "parse_row",
    "prompt_text",
    "read_prompts",
    "read_replay",
]
