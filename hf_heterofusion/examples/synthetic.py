# SPDX-License-Identifier: Apache-2.0
"""Seeded synthetic information-extraction tasks, in the spirit of the paper's UIE pool (paper §2.9, §6.2).

The paper fuses experts for NER, relation extraction and entity typing (plus GLUE-style classification). No PyPI
package ships such data, so the demo and the benchmark generate their own: short template sentences over small
word lists, with short answers in the paper's format (`person: Alice; person: Bob`, `works_for: Alice, Acme`) and
exact scoring (micro-F1 over parsed tuples, or accuracy for classification).

Two vocabularies: `"full"` (more names and templates, for real pretrained models) and `"tiny"` (a few short words,
so a tiny random model can learn a task in a few hundred steps on CPU).

Example:
    ```python
    >>> task = get_task("ner_person", vocab="tiny")
    >>> train, replay, test = make_splits(task, seed=0, n_train=200, n_replay=30, n_test=50)
    >>> train[1]
    {'prompt': 'Persons in: Cy met Ann in Lima.\\n', 'response': 'person: Cy; person: Ann', 'task': 'ner_person'}
    ```
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hf_heterofusion.errors import ConfigError


NONE_ANSWER = "none"
"""The answer of an extraction task when the text holds nothing to extract."""

Vocab = Literal["tiny", "full"]
Kind = Literal["extraction", "classification"]


@dataclass(frozen=True)
class Lexicon:
    """The word lists that fill the sentence templates."""

    persons: tuple[str, ...]
    locations: tuple[str, ...]
    orgs: tuple[str, ...]
    foods: tuple[str, ...]
    good: tuple[str, ...]
    bad: tuple[str, ...]


LEXICONS: dict[str, Lexicon] = {
    # Short, distinct words: with a byte-level tokenizer every character is a token, and a tiny model must tell
    # names from places by spelling alone.
    "tiny": Lexicon(
        persons=("Ann", "Bob", "Cy", "Dan", "Eve", "Flo"),
        locations=("Oslo", "Rome", "Lima", "Kyiv", "Bern"),
        orgs=("Acme", "Zeta", "Nova", "Apex"),
        foods=("soup", "rice", "cake"),
        good=("good", "great", "nice"),
        bad=("bad", "awful", "poor"),
    ),
    "full": Lexicon(
        persons=("Alice", "Bob", "Carol", "David", "Emma", "Frank", "Grace", "Henry", "Irene", "Jack", "Kate", "Liam"),
        locations=("Paris", "London", "Berlin", "Madrid", "Rome", "Tokyo", "Cairo", "Lima", "Oslo", "Vienna"),
        orgs=("Acme", "Globex", "Initech", "Hooli", "Umbrella", "Vandelay", "Soylent", "Stark"),
        foods=("soup", "pasta", "salad", "cake", "curry", "bread"),
        good=("great", "excellent", "lovely", "wonderful", "superb"),
        bad=("terrible", "awful", "bland", "horrible", "dreadful"),
    ),
}

Generator = Callable[[random.Random, Lexicon], tuple[str, str]]


@dataclass(frozen=True)
class Task:
    """A synthetic task: an instruction template, a seeded example generator and its scoring rule.

    `instruction` contains `{text}` and ends with a newline, so that a plain prompt and its response stay apart
    (entity typing texts read `entity | sentence`).
    `generate(rng, lexicon)` returns `(text, answer)`; `prompt(text)` renders the instruction around a text.
    Extraction tasks are scored by micro-F1 over parsed tuples, classification tasks by accuracy over `labels`.
    """

    name: str
    kind: Kind
    instruction: str
    generate: Generator
    lexicon: Lexicon
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if "{text}" not in self.instruction:
            raise ValueError(f"task `{self.name}`: `instruction` must contain `{{text}}`")
        if self.kind == "classification" and not self.labels:
            raise ValueError(f"task `{self.name}`: a classification task needs `labels`")

    def prompt(self, text: str) -> str:
        """The prompt the model sees for one input text."""
        return self.instruction.format(text=text)

    def sample(self, rng: random.Random) -> tuple[str, str]:
        """One `(prompt, answer)` pair drawn with `rng`."""
        text, answer = self.generate(rng, self.lexicon)
        return self.prompt(text), answer


# ------------------------------------------------------------------------------------------------ generators


def _pick(rng: random.Random, pool: Sequence[str], k: int) -> list[str]:
    return rng.sample(list(pool), k)


def _mentions(rng: random.Random, lex: Lexicon) -> tuple[str, list[str], list[str], list[str]]:
    """A sentence naming 0-2 persons, 0-2 locations and 0-1 organisations, with each kind in order of mention."""
    p, loc, org = _pick(rng, lex.persons, 2), _pick(rng, lex.locations, 2), _pick(rng, lex.orgs, 1)
    templates = [
        (f"{p[0]} met {p[1]} in {loc[0]}.", p, loc[:1], []),
        (f"{p[0]} flew from {loc[0]} to {loc[1]}.", p[:1], loc, []),
        (f"{p[0]} called {p[1]}.", p, [], []),
        (f"{p[0]} and {p[1]} saw {loc[0]}.", p, loc[:1], []),
        (f"{org[0]} is in {loc[0]}.", [], loc[:1], org),
        (f"{p[0]} visited {org[0]}.", p[:1], [], org),
        (f"It rained in {loc[0]}.", [], loc[:1], []),
        (f"{org[0]} grew fast.", [], [], org),
        (f"We ate {rng.choice(lex.foods)}.", [], [], []),
    ]
    return rng.choice(templates)


def _answer(kind: str, items: Iterable[str]) -> str:
    return "; ".join(f"{kind}: {item}" for item in items) or NONE_ANSWER


def _gen_ner_person(rng: random.Random, lex: Lexicon) -> tuple[str, str]:
    text, persons, _, _ = _mentions(rng, lex)
    return text, _answer("person", persons)


def _gen_ner_location(rng: random.Random, lex: Lexicon) -> tuple[str, str]:
    text, _, locations, _ = _mentions(rng, lex)
    return text, _answer("location", locations)


def _relation(
    rng: random.Random, positive: list[str], negative: list[str], relation: str, head: str, tail: str
) -> tuple[str, str]:
    """Pick a sentence that states the relation (answer it) or only mentions both arguments (answer none)."""
    if rng.random() < 0.6:
        return rng.choice(positive), f"{relation}: {head}, {tail}"
    return rng.choice(negative), NONE_ANSWER


# The relation tasks' phrasings: (sentences that state the relation, sentences that only mention both arguments).
# Module-level so the benchmark can tell which phrasing a prompt uses (`benchmarks.phrasings`).
PHRASINGS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "relation_works_for": (
        ("{person} works for {org}.", "{org} hired {person}.", "{person} joined {org} in {loc}.",
         "{person} met {other} at work at {org}."),
        ("{person} visited {org}.", "{person} sued {org}.", "{other} met {person} near {org} in {loc}."),
    ),
    "relation_lives_in": (
        ("{person} lives in {loc}.", "{person} moved to {loc}.", "{person} lives in {loc} with {other}.",
         "{person} has a home in {loc} near {org}."),
        ("{person} flew over {loc}.", "{person} left {loc}.", "{other} met {person} in {loc}."),
    ),
}


def _phrased(task: str, rng: random.Random, lex: Lexicon, relation: str, head: str, tail: str) -> tuple[str, str]:
    (person, other), org, loc = _pick(rng, lex.persons, 2), rng.choice(lex.orgs), rng.choice(lex.locations)
    names = {"person": person, "other": other, "org": org, "loc": loc}
    positive, negative = ([t.format(**names) for t in group] for group in PHRASINGS[task])
    return _relation(rng, positive, negative, relation, names[head], names[tail])


def _gen_works_for(rng: random.Random, lex: Lexicon) -> tuple[str, str]:
    return _phrased("relation_works_for", rng, lex, "works_for", "person", "org")


def _gen_lives_in(rng: random.Random, lex: Lexicon) -> tuple[str, str]:
    return _phrased("relation_lives_in", rng, lex, "lives_in", "person", "loc")


def _gen_entity_typing(rng: random.Random, lex: Lexicon) -> tuple[str, str]:
    text, persons, locations, orgs = _mentions(rng, lex)
    candidates = [(e, "person") for e in persons] + [(e, "location") for e in locations]
    candidates += [(e, "organization") for e in orgs]
    if not candidates:  # a sentence without entities cannot be asked about; draw again
        return _gen_entity_typing(rng, lex)
    entity, label = rng.choice(candidates)
    return f"{entity} | {text}", label


def _gen_sentiment(rng: random.Random, lex: Lexicon) -> tuple[str, str]:
    label = rng.choice(("positive", "negative"))
    adjective = rng.choice(lex.good if label == "positive" else lex.bad)
    subject = rng.choice([f"the {rng.choice(lex.foods)}", rng.choice(lex.locations), rng.choice(lex.orgs)])
    template = rng.choice(["{s} was {a}.", "I found {s} {a}.", "{p} said {s} is {a}."])
    text = template.format(s=subject, a=adjective, p=rng.choice(lex.persons))
    return text[0].upper() + text[1:], label


def _gen_topic(rng: random.Random, lex: Lexicon) -> tuple[str, str]:
    (person, other), loc, food = _pick(rng, lex.persons, 2), rng.choice(lex.locations), rng.choice(lex.foods)
    by_topic = {
        "sport": [f"{person} won the race.", f"{person} and {other} ran in {loc}.", f"{person} beat {other} at golf."],
        "food": [f"{person} cooked {food}.", f"{person} ate {food} in {loc}.", f"{person} baked {food} for {other}."],
        "weather": [f"It snowed in {loc}.", f"{person} and {other} got wet in {loc}.", f"{person} saw a storm."],
    }
    label = rng.choice(sorted(by_topic))
    return rng.choice(by_topic[label]), label


_SPECS: dict[str, tuple[Kind, str, Generator, tuple[str, ...]]] = {
    "ner_person": ("extraction", "Persons in: {text}\n", _gen_ner_person, ()),
    "ner_location": ("extraction", "Locations in: {text}\n", _gen_ner_location, ()),
    "relation_works_for": ("extraction", "Works-for relations in: {text}\n", _gen_works_for, ()),
    "relation_lives_in": ("extraction", "Lives-in relations in: {text}\n", _gen_lives_in, ()),
    "entity_typing": (
        "classification",
        "Entity type (entity | text): {text}\n",
        _gen_entity_typing,
        ("person", "location", "organization"),
    ),
    "sentiment": ("classification", "Sentiment of: {text}\n", _gen_sentiment, ("positive", "negative")),
    "topic": ("classification", "Topic of: {text}\n", _gen_topic, ("food", "sport", "weather")),
}
TASK_NAMES: tuple[str, ...] = tuple(_SPECS)


def get_task(name: str, *, vocab: Vocab = "full") -> Task:
    """The task called `name` over the `"tiny"` or `"full"` vocabulary.

    Raises:
        `ConfigError`: unknown task name or vocabulary.
    """
    if name not in _SPECS:
        raise ConfigError(f"unknown synthetic task `{name}`; choose one of {', '.join(TASK_NAMES)}")
    if vocab not in LEXICONS:
        raise ConfigError(f"unknown vocabulary `{vocab}`; choose `tiny` or `full`")
    kind, instruction, generate, labels = _SPECS[name]
    return Task(name, kind, instruction, generate, LEXICONS[vocab], labels)


# -------------------------------------------------------------------------------------------------- datasets


def make_splits(
    task: Task, seed: int, n_train: int, n_replay: int, n_test: int
) -> tuple[list[dict[str, str]], list[dict[str, str]], list[dict[str, str]]]:
    """Draw disjoint train, replay and test rows (`{"prompt", "response", "task"}`) for one task.

    Prompts are unique across all three splits, so the test set never contains a training prompt. The rows are
    what `replay.load_replay` reads from JSONL (`task` is ignored there).

    Raises:
        `ConfigError`: the task's vocabulary cannot produce that many distinct prompts.
    """
    rng = random.Random(f"{task.name}:{seed}")  # a string seed is stable across Python runs (no hash salt)
    wanted = n_train + n_replay + n_test
    rows: list[dict[str, str]] = []
    seen: set[str] = set()
    misses = 0
    while len(rows) < wanted:
        # The draws are not uniform, so rare prompts take a while; this many repeats in a row means exhausted.
        if misses > 5000:
            raise ConfigError(
                f"task `{task.name}` produced only {len(rows)} distinct prompts, {wanted} wanted; "
                "ask for fewer examples or use the `full` vocabulary"
            )
        prompt, answer = task.sample(rng)
        if prompt in seen:
            misses += 1
            continue
        misses = 0
        seen.add(prompt)
        rows.append({"prompt": prompt, "response": answer, "task": task.name})
    return rows[:n_train], rows[n_train : n_train + n_replay], rows[n_train + n_replay :]


def make_corpus(seed: int, n: int, *, vocab: Vocab = "full", repeat_frac: float = 0.5) -> list[str]:
    """`n` plain sentences drawn from all tasks' generators (no instructions, no answers).

    A tiny random model first learns the words and sentence shapes here, so that LoRA experts start from a model
    that "reads" the texts, much as real experts start from a pretrained model. Answers are left out on purpose:
    the base model must not already know the tasks, or no expert would beat it. A `repeat_frac` share of the
    lines says its sentence twice: predicting the repeat teaches the model to copy earlier words (induction),
    the skill extraction answers need, without showing any task format.
    """
    rng = random.Random(f"corpus:{seed}")
    tasks = [get_task(name, vocab=vocab) for name in TASK_NAMES]
    texts = []
    for _ in range(n):
        task = rng.choice(tasks)
        text = task.generate(rng, task.lexicon)[0].split(" | ")[-1]
        texts.append(f"{text} {text}" if rng.random() < repeat_frac else text)
    return texts


def as_chat(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Turn `{"prompt", "response"}` rows into `{"messages": [user, assistant]}` rows (other keys kept).

    Instruction-tuned models answer best in their own chat template, which `data/encoding.py` applies to chat rows.
    """
    chat = []
    for row in rows:
        rest = {k: v for k, v in row.items() if k not in ("prompt", "response")}
        messages = [
            {"role": "user", "content": row["prompt"].rstrip("\n")},
            {"role": "assistant", "content": row["response"]},
        ]
        chat.append({"messages": messages, **rest})
    return chat


def write_jsonl(rows: Iterable[Mapping[str, Any]], path: str | Path) -> Path:
    """Write rows as JSONL (one object per line, UTF-8), creating parent folders; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


# --------------------------------------------------------------------------------------------------- scoring


def parse_answer(answer: str) -> frozenset[tuple[str, ...]]:
    """Parse `type: arg[, arg]; type: arg` into lower-cased tuples `(type, arg, ...)`.

    Only the first line counts (generation may run on); parts without `type:` are ignored, and `none` is the
    empty set.
    """
    first_line = answer.strip().split("\n", 1)[0] if answer.strip() else ""
    parsed = set()
    for part in first_line.split(";"):
        kind, colon, args = part.partition(":")
        if not colon or not kind.strip():
            continue
        values = tuple(a.strip().lower().rstrip(".") for a in args.split(","))
        if all(values):
            parsed.add((kind.strip().lower(), *values))
    return frozenset(parsed)


def normalize_label(answer: str) -> str:
    """A classification answer as compared: first line, stripped, lower case, trailing period removed."""
    return answer.strip().split("\n", 1)[0].strip().lower().rstrip(".") if answer.strip() else ""


def score(task: Task | str, predictions: Sequence[str], references: Sequence[str]) -> float:
    """Score predictions against references, in 0..100.

    Extraction: micro-F1 over parsed tuples (true positives, predicted and gold tuples summed over examples;
    both empty everywhere counts as perfect). Classification: accuracy of the normalised first line.

    Raises:
        `ValueError`: `predictions` and `references` differ in length or are empty.
    """
    kind = task.kind if isinstance(task, Task) else get_task(task).kind
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not references:
        raise ValueError("cannot score an empty test set")
    if kind == "classification":
        hits = sum(normalize_label(p) == normalize_label(r) for p, r in zip(predictions, references))
        return 100.0 * hits / len(references)
    true_pos = n_pred = n_gold = 0
    for prediction, reference in zip(predictions, references):
        pred, gold = parse_answer(prediction), parse_answer(reference)
        true_pos += len(pred & gold)
        n_pred += len(pred)
        n_gold += len(gold)
    if n_pred == 0 and n_gold == 0:
        return 100.0
    return 100.0 * 2 * true_pos / (n_pred + n_gold)  # = 2PR / (P + R), without dividing by zero
