# SPDX-License-Identifier: Apache-2.0
"""Prompts written from a few seeds that stay on the task: the writer fills in only what the seeds vary.

Seed prompts of one task share structure: an instruction, field labels such as `Text:` or `Review:`, an answer cue.
A writer model asked to continue a list of whole prompts drifts (it starts a new document, a number, HTML). So
the shared part is kept verbatim and the writer is shown, and asked for, only the part that differs between seeds
(usually the text to label)::

    seeds   "Extract the people.\\nText: Ann met Bob in Rome.\\nAnswer:"  (x 4, different texts)
    kept    prefix "Extract the people.\\nText: "            suffix "\\nAnswer:"
    writer  a list of the varying parts -> one new part       (one line each when every seed's part is one line)
    prompt  prefix + new part + suffix

A new part is accepted only when it is as long as the seeds' parts allow (half the shortest to twice the longest, in
characters), is one line when theirs are, and is not a near-duplicate (token-set overlap >= `NEAR_DUPLICATE`) of a
seed or of a part accepted before.

`synthesis_style: paraphrase` asks instead for one seed's part in other words (the seeds in turn): prompts that stay
on the task (benchmark v7: 96-100 % name the task's lexicon, against 49-78 % from a list) but say what the seeds say.

`synthesis_rounds: R` writes the prompts in R rounds; between rounds the expert labels what was written and the
filters judge it (`run.synthesize_rounds`), and later rounds show 2 kept written parts besides 2 seeds (`Written`).
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass


NEAR_DUPLICATE = 0.8  # Jaccard overlap of word sets above which two parts count as the same text
WRITTEN_SHOTS = 2  # `synthesis_rounds`: of a later round's shots, how many are parts written (and kept) before

# `synthesis_style: paraphrase`, base writers: pairs that show the format "a text, then the same content worded
# otherwise" (voice, word order, synonyms). Deliberately about nothing a task would label (no employer, home or
# opinion), so they show how to reword, not what to write.
PARAPHRASE_PAIRS = (
    ("The dog chased the ball across the yard.", "The ball was chased across the yard by the dog."),
    ("Maria bought fresh bread this morning.", "This morning, fresh bread was bought by Maria."),
    ("It rained all day in the valley.", "The valley got rain the whole day."),
    ("Tom repaired the old clock.", "The old clock was fixed by Tom."),
)
_TEXT, _SAME = "Text:", "Same meaning, other words:"


def _cut(prefix: str) -> str:
    """A common prefix ends after whitespace: never inside a word the seeds merely share letters of."""
    ends = [prefix.rfind(mark) for mark in (" ", "\n", "\t")]
    return prefix[: max(ends) + 1]


@dataclass(frozen=True)
class SeedTemplate:
    """What all seeds share (`prefix`, `suffix`) and what they vary (`parts`)."""

    prefix: str
    suffix: str
    parts: tuple[str, ...]

    @classmethod
    def from_seeds(cls, texts: list[str]) -> SeedTemplate:
        prefix = _cut(os.path.commonprefix(texts)) if len(texts) > 1 else ""
        rests = [t[len(prefix):] for t in texts]
        backwards = os.path.commonprefix([r[::-1] for r in rests]) if len(texts) > 1 else ""
        suffix = _cut(backwards)[::-1]  # reversed text: the cut lands at the start of a line or word
        parts = tuple(r[: len(r) - len(suffix)] for r in rests)
        if any(not p.strip() for p in parts):  # a seed that is all template: nothing to vary, keep whole prompts
            return cls("", "", tuple(texts))
        return cls(prefix, suffix, parts)

    @property
    def one_line(self) -> bool:
        return all("\n" not in p.strip() for p in self.parts)

    @property
    def length_bounds(self) -> tuple[int, int]:
        lengths = [len(p.strip()) for p in self.parts]
        return max(1, min(lengths) // 2), 2 * max(lengths)

    def prompt(self, part: str) -> str:
        return self.prefix + part + self.suffix

    def part_of(self, prompt: str) -> str | None:
        """The varying part of a prompt built by `prompt` (None when `prompt` does not fit the template)."""
        fits = prompt.startswith(self.prefix) and prompt.endswith(self.suffix) \
            and len(prompt) > len(self.prefix) + len(self.suffix)
        return prompt[len(self.prefix): len(prompt) - len(self.suffix)] if fits else None

    def list_context(self, shots: list[str]) -> str:
        """A numbered list of `shots` (parts) that a base model continues with one more item."""
        items = "".join(f"{i + 1}. {_flat(s) if self.one_line else s.strip()}\n" for i, s in enumerate(shots))
        return items + f"{len(shots) + 1}."

    def chat_request(self, shots: list[str]) -> str:
        """The same list as an instruction for a chat model; the reply is the new item alone."""
        items = "\n".join(f"{i + 1}. {_flat(s) if self.one_line else s.strip()}" for i, s in enumerate(shots))
        shape = "one line, " if self.one_line else ""
        return (f"Here are {len(shots)} examples of the same kind of text:\n{items}\n\nWrite one new example of "
                f"this kind, different from these ({shape}similar length). Reply with the example only.")

    def paraphrase_context(self, part: str) -> str:
        """`synthesis_style: paraphrase` for a base model: one seed's part after a few pairs of a text and the same
        content in other words, for the writer to continue with the rewritten part."""
        pairs = "".join(f"{_TEXT} {text}\n{_SAME} {other}\n\n" for text, other in PARAPHRASE_PAIRS)
        return pairs + f"{_TEXT} {_flat(part) if self.one_line else part.strip()}\n{_SAME}"

    def paraphrase_request(self, part: str) -> str:
        """The same for a chat model: a request to rewrite one seed's part."""
        text = _flat(part) if self.one_line else part.strip()
        shape = "one line, " if self.one_line else ""
        return (f"Rewrite this text in different words ({shape}similar length). Keep the names in it and what it "
                f"says about them.\n\nText: {text}\n\nReply with the rewritten text only.")

    def past_lead_in(self, reply: str) -> str:
        """A chat reply without the lines that only lead in to the item (`Here is a new example:`): a small
        instruct writer often opens with one, and the item is on the next line. Empty when the reply is nothing but
        a lead-in. Seeds whose own parts end with a colon keep every line (the colon is then part of the text)."""
        if any(p.strip().endswith(":") for p in self.parts):
            return reply.strip()
        lines = reply.strip().split("\n")
        while lines and (not lines[0].strip() or lines[0].strip().endswith(":")):
            lines.pop(0)
        return "\n".join(lines).strip()

    def read_item(self, generated: str, *, chat: bool) -> str | None:
        """The new part in a writer's output, or None when there is none (an empty or cut-off item)."""
        text = self.past_lead_in(generated) if chat else generated.strip()
        if self.one_line:
            text = text.split("\n", 1)[0]
        elif not chat:
            text = re.split(r"\n\s*\d+\.\s", text, maxsplit=1)[0]
        return re.sub(r"^\d+\.\s*", "", text).strip().strip('"').strip() or None

    def read_paraphrase(self, generated: str, *, chat: bool) -> str | None:
        """The rewritten part: a chat reply (which may echo a label of the request), or a base model's continuation
        up to the next pair."""
        if chat:
            return self.read_item(re.sub(r"^\s*(Rewrit\w*( text)?|Text)\s*:\s*", "", generated), chat=True)
        return self.read_item(generated.split(f"\n{_TEXT}", 1)[0].split("\n\n", 1)[0], chat=True)


@dataclass(frozen=True)
class Steering:
    """`synthesis_steer: answer`: query `j` shows the writer only seeds of answer kind `j mod K`, and each kind may
    fill `quotas[k]` of the prompts asked for (an equal share; the remainder goes to the first kinds).

    Why: shown every seed, a writer's new texts mostly state nothing the task looks for (a works-for relation: 57-74 %
    of the expert's answers on them were `none`, measured), and the target learns to answer `none`. A list of seeds
    that all state the relation is continued with texts that state it too, in the writer's own words.
    """

    kinds: tuple[str, ...]  # distinct answer kinds, in the seeds' order
    members: tuple[tuple[int, ...], ...]  # per kind: the indices of its seeds
    quotas: tuple[int, ...]

    @classmethod
    def from_kinds(cls, seed_kinds: list[str], total: int) -> Steering | None:
        """None when the seeds show one kind only (nothing to steer between)."""
        kinds = tuple(dict.fromkeys(seed_kinds))
        if len(kinds) < 2:
            return None
        members = tuple(tuple(i for i, k in enumerate(seed_kinds) if k == kind) for kind in kinds)
        share, extra = divmod(total, len(kinds))
        return cls(kinds, members, tuple(share + (k < extra) for k in range(len(kinds))))

    def kind_of(self, query: int) -> int:
        return query % len(self.kinds)


@dataclass(frozen=True)
class Written:
    """`synthesis_rounds`: what a later round shows the writer besides the seeds, namely parts it wrote in earlier
    rounds that the expert labelled and every filter kept, grouped by the expert's answer kind.

    Why: a list of the same few seeds is continued with texts like them, so a wording no seed shows, or (when every
    seed states nothing the task looks for) a sentence that states a relation, turns up rarely and only by chance.
    Shown again, what the writer once found is written again in new words (self-instruct's growing task pool).
    Kinds are drawn alike, so a kind the expert gave once is shown as often as the commonest one.
    """

    kinds: tuple[tuple[str, tuple[str, ...]], ...]  # (answer kind, its kept parts), kinds sorted

    @classmethod
    def from_kept(cls, kept: list[tuple[str, str]]) -> Written | None:
        """From (part, answer kind) pairs; None when nothing was kept (the round shows the seeds only)."""
        by_kind: dict[str, list[str]] = {}
        for part, kind in kept:
            by_kind.setdefault(kind, []).append(part)
        return cls(tuple((k, tuple(by_kind[k])) for k in sorted(by_kind))) if by_kind else None

    def shots(self, rng: random.Random, seeds: list[str], total: int) -> list[str]:
        """`total` shots: `WRITTEN_SHOTS` written parts (a kind drawn uniformly, then one of its parts, no part
        twice) and seeds for the rest, in random order."""
        open_kinds = [list(parts) for _, parts in self.kinds]
        written = []
        for _ in range(min(WRITTEN_SHOTS, total - 1, sum(map(len, open_kinds)))):
            parts = rng.choice([k for k in open_kinds if k])
            written.append(parts.pop(rng.randrange(len(parts))))
        shots = rng.sample(seeds, min(total - len(written), len(seeds))) + written
        rng.shuffle(shots)
        return shots

    def to_json(self) -> list:
        return [[kind, list(parts)] for kind, parts in self.kinds]


class PartFilter:
    """Accepts new parts in the seeds' length range that are not near-duplicates (of a seed, of a part accepted
    before, or of `earlier` parts: other rounds'); counts what it drops."""

    def __init__(self, template: SeedTemplate, earlier: tuple[str, ...] = ()):
        self.template = template
        self.seen = [_words(p) for p in (*template.parts, *earlier)]
        self.dropped = {"length": 0, "duplicate": 0}

    def accept(self, part: str) -> bool:
        low, high = self.template.length_bounds
        if not low <= len(part) <= high:
            self.dropped["length"] += 1
            return False
        words = _words(part)
        if any(_overlap(words, other) >= NEAR_DUPLICATE for other in self.seen):
            self.dropped["duplicate"] += 1
            return False
        self.seen.append(words)
        return True


def _flat(text: str) -> str:
    return " ".join(text.split())


def _words(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"\w+", text.lower()))


def _overlap(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


__all__ = ["NEAR_DUPLICATE", "PARAPHRASE_PAIRS", "WRITTEN_SHOTS", "PartFilter", "SeedTemplate", "Steering", "Written"]
