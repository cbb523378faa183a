# SPDX-License-Identifier: Apache-2.0
"""One teacher at work: load (lazily), synthesize prompts from seeds, label prompts, with a content-hash cache.

The cache holds raw generations (text, tokens, eos, log-probability); the filters run after it, so changing a
filter never re-runs a teacher. Entries are appended batch by batch (one file per process), which makes a killed
run resume at the first unfinished batch. Batches are fixed slices of the full prompt list, whatever is cached,
so a resumed or multi-process run pads and decodes every batch exactly like an uninterrupted single run.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import logging
import math
import os
import random
from dataclasses import replace

import torch
from tqdm.auto import tqdm

from hf_heterofusion.config import FusionConfig
from hf_heterofusion.data.encoding import encode_prompt_ids, pad_token_id
from hf_heterofusion.data.generation import Generation, generate_batch, greedy_batch, length_batches, score_answers
from hf_heterofusion.data.models import attach_adapter, load_causal_lm, load_tokenizer
from hf_heterofusion.data.replay import Prompt, answer_kind
from hf_heterofusion.errors import ConfigError
from hf_heterofusion.files import write_atomic
from hf_heterofusion.teacher.cache import cache_root, content_key, digest_dir, generation_settings
from hf_heterofusion.teacher.discriminator import prompt_features
from hf_heterofusion.teacher.filters import is_degenerate
from hf_heterofusion.teacher.plan import TeacherPlan, TeacherPrompt
from hf_heterofusion.teacher.synthesis import PartFilter, SeedTemplate, Steering, Written


logger = logging.getLogger(__name__)

SHOTS = 4  # seed prompts shown per synthesis query
SYNTHESIS_VERSION = 3  # part of the synthesis cache key: prompts written by an older recipe are not reused
# Also in the key of a writer other than the source base: how a chat reply is read (1: past its lead-in line).
CHAT_READER_VERSION = 1


def _rewords(style: str, batch: int) -> bool:
    """Whether writer batch `batch` rewords seeds (`synthesis_style`): always, never (`list`), or every other batch
    (`mixed`; by batch, not by row, so steering's per-row kinds still reach both ways of writing)."""
    return style == "paraphrase" or (style == "mixed" and batch % 2 == 1)


def _as_text(prompt: Prompt) -> str:
    return prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt if m["role"] != "system")


class Labeller:
    """Generations of one teaching source; the model is loaded only when something is not cached."""

    def __init__(self, plan: TeacherPlan, cfg: FusionConfig, *, accelerator=None, show_progress: bool = True):
        self.plan, self.cfg, self.show_progress = plan, cfg, show_progress
        self.rank = accelerator.process_index if accelerator is not None else 0
        self.world = accelerator.num_processes if accelerator is not None else 1
        self.device = accelerator.device if accelerator is not None else torch.device("cpu")
        self.base_digest = plan.base_revision or digest_dir(plan.base_dir)
        self.adapter_digest = plan.adapter_revision or digest_dir(plan.adapter_dir)
        self.key = content_key({"base": self.base_digest, "adapter": self.adapter_digest, "format": plan.prompt_format,
                         **generation_settings(cfg)})[:24]
        self.dir = cache_root() / "teacher" / self.key
        self.cached, self.loaded = 0, False
        self._model = self._tokenizer = None

    # ------------------------------------------------------------------------------------------- labelling

    def label(self, prompts: list[Prompt], *, with_base: bool = False) -> list[Generation]:
        """Greedy answers for `prompts`, in order (cached ones are not regenerated), with each step's top-k
        log-probs; `with_base` also has the expert's base (adapter off) score every answer (`base_logprobs`)."""
        keys = [content_key(list(p) if isinstance(p, tuple) else p) for p in prompts]
        cache = self._read_cache()
        self.cached = sum(k in cache for k in keys)
        # Batches of similar length (by characters: known before the tokenizer is loaded, which a fully cached run
        # never does): little padding. They depend only on the prompts, so a resumed or split run decodes alike.
        batches = length_batches([_as_text(p) for p in prompts], self.cfg.teacher_batch_size)
        todo = [b for b in batches if any(keys[i] not in cache for i in b)]
        fresh = self._run_batches(todo, lambda ids, batch: self._generate(ids, with_base), prompts, keys)
        cache.update(dict(fresh))
        if with_base:  # answers cached without their base scores get them now (no regeneration)
            missing = [b for b in batches if any(len(cache[keys[i]].get("base") or ()) != len(cache[keys[i]]["ids"])
                                                 for i in b)]
            fresh = self._run_batches(missing, lambda ids, batch: self._score_base(
                ids, [_from_json(cache[keys[i]]) for i in batch]), prompts, keys)
            cache.update(dict(fresh))
        return [_from_json(cache[k]) for k in keys]

    def _run_batches(self, batches, work, prompts, keys) -> list[tuple[str, dict]]:
        """`work(ids, batch) -> generations` over this process's share of `batches`, appended to the cache and
        gathered from every process."""
        fresh: list[tuple[str, dict]] = []
        bar = tqdm(batches[self.rank::self.world], desc=f"teacher {self.plan.name}", unit="batch",
                   disable=not self.show_progress or self.rank != 0, leave=False)
        for batch in bar:
            gens = work([self._encode(prompts[i]) for i in batch], batch)
            entries = [(keys[i], _to_json(g)) for i, g in zip(batch, gens)]
            self._append(entries)
            fresh += entries
        if self.world > 1 and batches:
            from accelerate.utils import gather_object

            fresh = gather_object(fresh)
        return fresh

    def _generate(self, ids: list[list[int]], with_base: bool) -> list[Generation]:
        gens = greedy_batch(self.model, self.tokenizer, ids, max_new_tokens=self.cfg.teacher_max_new_tokens,
                            top_k=self.cfg.teacher_topk)
        return self._score_base(ids, gens) if with_base else gens

    def _score_base(self, ids: list[list[int]], gens: list[Generation]) -> list[Generation]:
        """The expert's own base scores the expert's answers (one teacher-forced pass, ~25 % of labelling): per
        token, how much the adapter raised it is the skill signal (skill weighting, the on-task filter)."""
        with self.model.disable_adapter():
            base = score_answers(self.model, self.tokenizer, ids, [g.token_ids for g in gens])
        return [replace(g, base_logprobs=tuple(b)) for g, b in zip(gens, base)]

    def features(self, prompts: list[Prompt]) -> torch.Tensor:
        """[n, hidden]: how the expert's base (adapter off) sees each prompt, for the discriminator."""
        with self.model.disable_adapter():
            return prompt_features(self.model, pad_token_id(self.tokenizer), [self._encode(p) for p in prompts],
                                   self.cfg.teacher_batch_size)

    def _encode(self, prompt: Prompt) -> list[int]:
        fmt, tok = self.plan.prompt_format, self.tokenizer
        if fmt == "auto":
            fmt = "chat" if isinstance(prompt, tuple) and getattr(tok, "chat_template", None) else "plain"
        if fmt == "chat":
            if not getattr(tok, "chat_template", None):
                raise ConfigError(f"source `{self.plan.name}` has `prompt_format: chat` but its tokenizer has no chat "
                                  f"template; use `prompt_format: plain`")
            messages = prompt if isinstance(prompt, tuple) else ({"role": "user", "content": prompt},)
            return encode_prompt_ids(messages, tok, where=f"a prompt of source `{self.plan.name}`")
        return encode_prompt_ids(_as_text(prompt), tok)

    # ------------------------------------------------------------------------------------------ synthesis

    def synthesize(self, count: int | None = None, *, round_: int = 0, written: Written | None = None,
                   earlier: tuple[str, ...] = ()) -> tuple[list[TeacherPrompt], dict]:
        """`count` (default `plan.synthesize`) new prompts written from the seed prompts (see `synthesis.py`).

        The writer is `plan.writer`: the source *base* (adapter disabled: the adapter was trained to answer
        prompts, not to write them), which continues a numbered list of `SHOTS` seeds' varying parts; or another
        model (`synthesizer: target` or a model reference), asked through its chat template, when it has one, for
        one more item (its reply read past a lead-in line: `SeedTemplate.past_lead_in`). The new part goes back
        into the seeds' shared template. Rejected candidates are counted per reason. With `synthesis_steer: answer`
        each query shows seeds of one answer kind only (`Steering`); with `synthesis_style: paraphrase` (or
        `mixed`: every other batch) a query asks for one seed's part reworded.
        Round `round_` of `synthesis_rounds` also shows parts `written` in earlier rounds (`Written.shots`) and does
        not repeat the `earlier` rounds' parts (`run.synthesize_rounds` labels and filters between rounds).
        """
        count = self.plan.synthesize if count is None else count
        plan, cfg = self.plan, self.cfg
        texts = [_as_text(s) for s in plan.seeds]
        writer_digest = None if plan.writer_dir is None else (plan.writer_revision or digest_dir(plan.writer_dir))
        steering = Steering.from_kinds(self._seed_kinds(texts), count) \
            if cfg.synthesis_steer == "answer" else None
        key = content_key([SYNTHESIS_VERSION, self.base_digest, writer_digest, texts, count, cfg.seed,
                           cfg.teacher_batch_size, cfg.synthesis_temperature, cfg.synthesis_top_p,
                           # steered prompts are cached apart; the unsteered key is the one it always was
                           *([["answer", steering.kinds, steering.members]] if steering else []),
                           *([[cfg.synthesis_style]] if cfg.synthesis_style != "list" else []),
                           # only another writer can be a chat model; the source base's key is the one it always was
                           *([["chat_reader", CHAT_READER_VERSION]] if writer_digest is not None else []),
                           *([["rounds", cfg.synthesis_rounds, round_, written and written.to_json(), list(earlier)]]
                             if cfg.synthesis_rounds > 1 else [])])
        path = cache_root() / "teacher" / f"synth-{key[:24]}.json"
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            return [TeacherPrompt(self._wrap(t), "synthesized", f"synthesized #{i}") for i, t in
                    enumerate(data["prompts"])], data["stats"]
        template = self.template
        parts_filter = PartFilter(template, earlier)
        model, tokenizer, off = self._writer()
        # A base model continues a list (paraphrase: pairs of a text and its rewording); an instruction-tuned writer
        # is asked in a chat turn for one more item (paraphrase: to rewrite one seed's part).
        chat = plan.writer_dir is not None and bool(getattr(tokenizer, "chat_template", None))
        budget = 2 * max(len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in template.parts) + 8
        accepted: list[str] = []
        filled = [0] * (len(steering.kinds) if steering else 0)
        spare: list[str] = []  # steered: accepted parts of a kind already full, to top up a kind the writer misses
        reworded: set[str] = set()  # prompts that reword a seed (`synthesis_style`), counted for the report
        stats = {"writer": plan.writer, "queries": 0, "empty": 0, "truncated": 0, "degenerate": 0}
        size = cfg.teacher_batch_size
        # The query budget is counted in batches and does not depend on the number of processes, so N processes
        # accept exactly the prompts one would (each takes every N-th batch; results are read in batch order).
        limit = math.ceil(4 * count / size) + 1
        batch = 0
        while len(accepted) < count and batch < limit:
            mine = batch + self.rank
            rows = []
            for row in range(size if mine < limit else 0):
                # a later round draws apart from the first (whose draws are a one-round run's, as they always were)
                rng = random.Random(f"{cfg.seed}:{plan.index}:{mine}:{row}" + (f":{round_}" if round_ else ""))
                pool = list(template.parts) if steering is None else \
                    [template.parts[i] for i in steering.members[steering.kind_of(mine * size + row)]]
                if _rewords(cfg.synthesis_style, mine):  # the seeds in turn (steered: those of the query's kind)
                    turn = (mine // 2 if cfg.synthesis_style == "mixed" else mine) * size + row
                    seed = pool[(turn // len(steering.kinds) if steering else turn) % len(pool)]
                    query = ({"role": "user", "content": template.paraphrase_request(seed)},) if chat \
                        else template.paraphrase_context(seed)
                else:
                    shots = written.shots(rng, pool, SHOTS) if written else rng.sample(pool, min(SHOTS, len(pool)))
                    query = ({"role": "user", "content": template.chat_request(shots)},) if chat \
                        else template.list_context(shots)
                rows.append(encode_prompt_ids(query, tokenizer))
            with off():
                gens = generate_batch(model, tokenizer, rows, max_new_tokens=budget, sample=True,
                                      temperature=cfg.synthesis_temperature, top_p=cfg.synthesis_top_p,
                                      seed=cfg.seed * 1_000_003 + plan.index * 10_007 + mine + round_ * 100_003) \
                    if rows else []
            results = [(mine, [_to_json(g) for g in gens])] if rows else []
            if self.world > 1:
                from accelerate.utils import gather_object

                results = gather_object(results)
            for done, batch_gens in sorted(results, key=lambda r: r[0]):
                for row, g in enumerate(map(_from_json, batch_gens)):
                    stats["queries"] += 1
                    # a list item ends at its line break (a chat reply: the break after the item, not its lead-in)
                    ended = g.finished or "\n" in (template.past_lead_in(g.text) if chat else g.text.strip())
                    part = template.read_paraphrase(g.text, chat=chat) if _rewords(cfg.synthesis_style, done) \
                        else template.read_item(g.text, chat=chat)
                    if not ended and (chat or template.one_line):
                        stats["truncated"] += 1
                    elif part is None:
                        stats["empty"] += 1
                    elif is_degenerate(g.token_ids, cfg.teacher_repeat_ngram):
                        stats["degenerate"] += 1
                    elif len(accepted) < count and parts_filter.accept(part):
                        if _rewords(cfg.synthesis_style, done):
                            reworded.add(template.prompt(part))
                        kind = steering.kind_of(done * size + row) if steering else None
                        if kind is not None and filled[kind] >= steering.quotas[kind]:
                            spare.append(template.prompt(part))
                            continue
                        accepted.append(template.prompt(part))
                        if kind is not None:
                            filled[kind] += 1
            batch += self.world
        if steering:
            stats["steered"] = dict(zip(steering.kinds, filled))
            stats["topped_up"] = min(len(spare), count - len(accepted))
            accepted += spare[:stats["topped_up"]]
        if cfg.synthesis_style != "list":
            stats["reworded"] = sum(p in reworded for p in accepted)
        if plan.writer_dir is not None:
            del model
            free_memory()
        stats.update(parts_filter.dropped)
        if self.rank == 0:
            write_atomic(path, json.dumps({"prompts": accepted, "stats": stats}))
        if len(accepted) < count:
            logger.warning("source %s: synthesized only %d of %d prompts (%s)", plan.name, len(accepted), count, stats)
        return [TeacherPrompt(self._wrap(t), "synthesized", f"synthesized #{i}") for i, t in enumerate(accepted)], \
            stats

    @functools.cached_property
    def template(self) -> SeedTemplate:
        """What the seeds share and what they vary (`SeedTemplate`)."""
        return SeedTemplate.from_seeds([_as_text(s) for s in self.plan.seeds])

    def written_part(self, prompt: Prompt) -> str | None:
        """The part of a synthesized prompt that its writer wrote (the seeds' shared template taken off)."""
        return self.template.part_of(_as_text(prompt))

    def _seed_kinds(self, texts: list[str]) -> list[str]:
        """Each seed's answer kind (`answer_kind`): from its row's answer where given, else from the expert's."""
        answers = list(self.plan.seed_answers) or [None] * len(texts)
        missing = [i for i, a in enumerate(answers) if a is None]
        if missing:
            for i, g in zip(missing, self.label([self.plan.seeds[i] for i in missing])):
                answers[i] = g.text.strip()
        return [answer_kind(a, t) for a, t in zip(answers, texts)]

    def _writer(self):
        """(model, tokenizer, context that turns the teacher's adapter off) of the prompt writer."""
        if self.plan.writer_dir is None:
            return self.model, self.tokenizer, self.model.disable_adapter
        what = f"synthesizer of {self.plan.name}"
        model = load_causal_lm(self.plan.writer_dir, None, trust_remote_code=self.cfg.trust_remote_code, what=what)
        logger.info("prompt writer of %s: %s (%s)", self.plan.name, self.plan.writer, self.plan.writer_dir)
        return model.to(self.device).eval(), load_tokenizer(self.plan.writer_dir, what=what), contextlib.nullcontext

    def _wrap(self, text: str) -> Prompt:
        """A synthesized prompt in the seeds' shape: chat seeds give a one-turn chat."""
        return ({"role": "user", "content": text},) if isinstance(self.plan.seeds[0], tuple) else text

    # ------------------------------------------------------------------------------------ model and cache

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = _RESIDENT.tokenizer(self._base_key) or load_tokenizer(
                self.plan.base_dir, what=f"teacher base of {self.plan.name}")
        return self._tokenizer

    @property
    def _base_key(self) -> tuple:
        return str(self.plan.base_dir.resolve()), self.base_digest, self.cfg.trust_remote_code, str(self.device)

    @property
    def model(self):
        if self._model is None:
            base = _RESIDENT.take(self._base_key)
            if base is None:
                base = load_causal_lm(self.plan.base_dir, None, trust_remote_code=self.cfg.trust_remote_code,
                                      what=f"teacher base of {self.plan.name}").to(self.device)
            model = attach_adapter(base, self.plan.adapter_dir)
            if self.cfg.teacher_placebo:  # same base, same A, no skill: B = 0 makes the adapter a no-op
                with torch.no_grad():
                    for name, p in model.named_parameters():
                        if "lora_B" in name:
                            p.zero_()
            self._model = model.to(self.device).eval()
            self.loaded = True
            logger.info("loaded teacher %s (%s + %s)%s", self.plan.name, self.plan.base_dir, self.plan.adapter_dir,
                        " with B = 0 (placebo)" if self.cfg.teacher_placebo else "")
        return self._model

    def close(self) -> None:
        """Drop the adapter; the base (and tokenizer) stay resident for a next source on the same base."""
        if self._model is not None:
            _RESIDENT.keep(self._base_key, self._model.unload(), self._tokenizer)  # no tokenizer loaded just for this
        self._model = self._tokenizer = None
        free_memory()

    def _read_cache(self) -> dict[str, dict]:
        out: dict[str, dict] = {}
        if not self.dir.is_dir():
            return out
        for part in sorted(self.dir.glob("part-*.jsonl")):
            for line in part.read_text(encoding="utf-8").splitlines():
                try:
                    key, value = json.loads(line)
                except (ValueError, TypeError):
                    continue  # a line cut short by a kill: that batch is generated again
                out[key] = value
        return out

    def _append(self, entries: list[tuple[str, dict]]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / f"part-{self.rank}.jsonl", "a", encoding="utf-8") as f:
            f.write("".join(json.dumps([k, v], ensure_ascii=False) + "\n" for k, v in entries))
            f.flush()
            os.fsync(f.fileno())


class _Resident:
    """The last teacher base and its tokenizer, kept for the next source that shares them: sources of one family
    usually share a base, and loading it (weights, and a 262k-token tokenizer parsed in Python: ~5-9 s for Gemma-3)
    per source cost more than labelling 48 prompts. `run_teachers` releases it before the target is trained, so at
    most one teacher base is ever in memory."""

    def __init__(self):
        self.key, self.base, self.tok = None, None, None

    def take(self, key: tuple):
        base = self.base if key == self.key else None
        if key != self.key:
            self.release()
        self.base = None  # in use now; `keep` puts it back
        return base

    def tokenizer(self, key: tuple):
        return self.tok if key == self.key else None

    def keep(self, key: tuple, base, tokenizer) -> None:
        self.key, self.base, self.tok = key, base, tokenizer

    def release(self) -> None:
        self.key = self.base = self.tok = None
        free_memory()


_RESIDENT = _Resident()
release_resident = _RESIDENT.release


def _to_json(g: Generation) -> dict:
    """A cache entry; per-token values are rounded (log-probs to 1e-4, top-k to 1e-3): that is the compression."""
    out = {"text": g.text, "ids": list(g.token_ids), "finished": g.finished, "logprob": g.mean_logprob}
    if g.token_logprobs:
        out.update(lps=[round(x, 4) for x in g.token_logprobs], top_ids=[list(t) for t in g.top_ids],
                   top_lps=[[round(v, 3) for v in t] for t in g.top_logprobs],
                   base=[round(x, 4) for x in g.base_logprobs])
    return out


def _from_json(d: dict) -> Generation:
    return Generation(d["text"], tuple(d["ids"]), bool(d["finished"]), float(d["logprob"]),
                      tuple(d.get("lps", ())), tuple(map(tuple, d.get("top_ids", ()))),
                      tuple(map(tuple, d.get("top_lps", ()))), tuple(d.get("base", ())))


def free_memory() -> None:
    """Give a teacher's memory back before the next model loads (the allocator keeps freed CUDA blocks)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


__all__ = ["Labeller", "release_resident"]
