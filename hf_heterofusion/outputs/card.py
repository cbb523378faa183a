# SPDX-License-Identifier: Apache-2.0
"""Model card of a fusion output, rendered from its `FusionReport`.

The card is a pure function of the report value, the config YAML and which pictures exist in the output folder (and,
when `push` renders it for a repo, that repo's id and the Hub id given for a local target base). No network is
used: whether a reference is a Hub id was decided at pull time, and the report records it as a pinned revision
(commit sha). Front matter follows the Hub's conventions: `base_model` holds Hub ids only (local inputs appear in
the prose, by folder name), `base_model_relation` is set explicitly (`adapter` or `merge`), and `library_name` is
`peft` for an adapter, `transformers` for a merged model. It says what ran: the transfer nets or, `trainer: lora`,
the anchor trained on the rows alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hf_heterofusion.constants import (
    ALIGNMENT_PLOT_NAME,
    CARD_NAME,
    CONFIG_COPY_NAME,
    LOSS_PLOT_NAME,
    PAPER_CITATION,
    PAPER_URL,
    TEACHER_REPLAY_NAME,
)
from hf_heterofusion.hub.refs import hub_id_of, split_revision
from hf_heterofusion.outputs.report import FusionReport


if TYPE_CHECKING:
    from huggingface_hub import ModelCardData


TEMPLATE_NAME = "model_card.md.j2"
HUB_URL = "https://huggingface.co"  # cards are read on the public Hub, whatever HF_ENDPOINT a test run used
CARD_TAGS = ("heterofusion", "merge", "mergekit", "lora", "peft")
INPUT_KEYS = frozenset({"target_model", "target_adapter", "sources", "replay"})
LOW_ENERGY = 0.8  # below this share of a source's update kept by rank re-factoring, the card says so in words


def _ref(name: str | None, revision: str | None) -> dict[str, Any]:
    """What the template shows for one input: a Hub link with its pinned sha, or `local: folder`."""
    hub_id = hub_id_of(name, revision)
    if hub_id is None:
        # Only the folder name: a full local path would publish the author's directory layout.
        label = Path(str(name or "?").rstrip("/")).name or str(name)
        return {"hub_id": None, "md": f"`{label}` (local)", "load": f"path/to/{label}", "short": "local"}
    rev = revision or split_revision(name or "")[1]
    url = f"{HUB_URL}/{hub_id}" + (f"/tree/{rev}" if rev else "")
    return {"hub_id": hub_id, "md": f"[{hub_id}]({url})", "load": hub_id, "short": (rev or "main")[:12]}


def _ranges(values: Iterable[int]) -> str:
    """`[0, 1, 2, 5]` -> `0-2, 5`."""
    out: list[str] = []
    for v in sorted(values):
        if out and out[-1].split("-")[-1] == str(v - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{v}"
        else:
            out.append(str(v))
    return ", ".join(out) or "none"


def _unmatched(layers: Iterable[int]) -> str:
    """Target layers without a partner as `count: layers`, so that a lone `0` never reads as a count."""
    layers = sorted(layers)
    if not layers:
        return "none"
    return f"{len(layers)}: layer{'s' if len(layers) > 1 else ''} {_ranges(layers)}"


def _pair_runs(pairs: Iterable[Iterable[int]]) -> list[str]:
    """Consecutive `(t, s)` pairs as `t0-t1 ← s0-s1` runs, for a compact alignment table."""
    runs: list[list[int]] = []
    for t, s in sorted(tuple(p) for p in pairs):
        if runs and runs[-1][1] == t - 1 and runs[-1][3] == s - 1:
            runs[-1][1], runs[-1][3] = t, s
        else:
            runs.append([t, t, s, s])
    return [
        f"{t0}" + (f"-{t1}" if t1 != t0 else "") + f" ← {s0}" + (f"-{s1}" if s1 != s0 else "")
        for t0, t1, s0, s1 in runs
    ]


def _flat_params(config: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Scalar config entries (nested sections dotted), the inputs left out: they have their own tables."""
    items: list[tuple[str, Any]] = []
    for key, value in config.items():
        if not prefix and key in INPUT_KEYS:
            continue
        if isinstance(value, Mapping):
            items += _flat_params(value, f"{prefix}{key}.")
        elif value is None or isinstance(value, (str, int, float, bool)):
            items.append((prefix + key, value))
    return items


def _license(report: FusionReport) -> str | None:
    """The licence all inputs agree on, or None (the card then lists each one)."""
    licenses = {report.target.license} | {s.license for s in report.sources}
    return licenses.pop() if len(licenses) == 1 and None not in licenses else None


def _fmt(value: Any) -> str:
    """One table cell: fixed float precision so that the same report always gives the same bytes."""
    import jinja2

    if value is None or isinstance(value, jinja2.Undefined):  # unknown report keys are tolerated, shown as n/a
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return str(value) or "not set"  # an empty setting (`teacher_unsure_spares: ""`): not a blank cell


def _sample(value: Any, width: int = 100) -> str:
    """A teacher row's prompt or answer on one line of the card (chat turns joined), cut to `width`."""
    if isinstance(value, list):
        value = " / ".join(m.get("content", "") for m in value if isinstance(m, dict) and m.get("role") != "assistant")
    text = " ".join(str(value).split()).replace("`", "'")
    return text if len(text) <= width else text[: width - 3] + "..."


def _fmt_list(values: Any) -> str:
    return ", ".join(f"`{v}`" for v in values) if values else "none"


def card_context(
    report: FusionReport, *, config_yaml: str | None, pictures: Iterable[str] = (), title: str | None = None,
    repo_id: str | None = None, base_model: str | None = None,
) -> dict[str, Any]:
    """Everything the template shows, from the report alone (pure: same report, same context).

    `repo_id` is the Hub repo the card is rendered for (`push`); without it the usage snippets name a placeholder.
    `base_model` is the Hub id of the target base when the report names a local folder (`push --base-model`).
    """
    target = report.target
    kind = report.output_kind
    nets = _trained_nets(report)
    adapter_label = Path(split_revision(target.adapter or "fused")[0].rstrip("/")).name
    title = title or repo_id or f"{adapter_label}-heterofusion"
    # The repo is unknown when the card is written at fusion time, before any push: a placeholder says so.
    repo_id = repo_id or f"your-namespace/{title}"
    sources = []
    for i, src in enumerate(report.sources):
        base = _ref(src.base_model, None) if src.base_model else None
        sources.append({**dataclasses.asdict(src), "index": i, "ref": _ref(src.adapter, src.revision), "base": base})
    alignment = report.alignment or {}
    plans = [
        {
            "source": plan.get("source"),
            "runs": _pair_runs(plan.get("pairs", [])),
            "n_pairs": len(plan.get("pairs", [])),
            "unmatched": _unmatched(plan.get("unmatched_target_layers", [])),
        }
        for plan in alignment.get("per_source", [])
    ]
    return {
        "title": title,
        "kind": kind,
        "report": report,
        "target": target,
        "nets": nets,
        "what": "model" if kind == "merged" else "adapter",
        "update_mode": (report.config or {}).get("update_mode", "b_only"),
        "low_energy": _low_energy_notes(report.sources),
        "target_model": _target_model_ref(report, base_model),
        "target_adapter": _ref(target.adapter, target.adapter_revision),
        "sources": sources,
        "alignment": alignment,
        "plans": plans,
        "params": _flat_params(report.config or {}),
        "training": report.training,
        "seed": report.seed,
        "roles": sorted((report.roles or {}).items()),
        "modules": report.modules or {},
        "teacher": report.teacher,
        **_teacher_context(report.teacher),
        "ablation": report.ablation,
        **_evaluation_context(report.evaluation, kind),
        "versions": sorted((report.versions or {}).items()),
        "license": _license(report),
        "config_yaml": (config_yaml or "").rstrip("\n"),
        "pictures": set(pictures),
        "alignment_png": ALIGNMENT_PLOT_NAME,
        "loss_png": LOSS_PLOT_NAME,
        "repo_id": repo_id,
        "local_dir": repo_id.rsplit("/", 1)[-1],
        "paper_url": PAPER_URL,
        "citation": PAPER_CITATION,
    }


def _trained_nets(report: FusionReport) -> bool:
    """Whether the transfer nets ran (the paper's method) or, `trainer: lora`, the anchor was trained on the rows."""
    return (report.config or {}).get("trainer", "transfer_nets") != "lora"


def _target_model_ref(report: FusionReport, base_model: str | None) -> dict[str, Any]:
    """The target base as the card names it: the report's reference, or the Hub id `push` was given for it."""
    target = report.target
    if base_model and base_model != hub_id_of(target.model, target.model_revision):
        return _ref(base_model, None)  # no pinned sha: one pinned for the local folder would not exist there
    return _ref(target.model, target.model_revision)


def _low_energy_notes(sources: Iterable[Any]) -> list[str]:
    """A sentence per source whose re-factoring to the anchor's rank lost much of its update: the table's number
    alone is easy to miss, and the fusion only saw what was kept."""
    notes = []
    for i, src in enumerate(sources):
        if src.energy_kept is not None and src.energy_kept < LOW_ENERGY:
            notes.append(f"Source {i} kept only {src.energy_kept * 100:.0f} % of its update's energy at rank {src.rank} "
                         f"(re-factored from rank {src.original_rank}): the fusion saw a truncated version of it.")
    return notes


def _teacher_context(teacher: Mapping[str, Any] | None) -> dict[str, Any]:
    """The teacher bases as the card names them (a local base by folder name only) and the outcome in words, from
    the counts: what the card says joined the replay set is what the report counted."""
    if not teacher:
        return {"teacher_bases": [], "teacher_outcome": ""}
    per_source = [t for t in teacher.get("sources", []) if isinstance(t, Mapping)]
    bases = [{"source": t.get("source"), "base": _ref(t.get("base"), None)["md"], "loaded": t.get("teacher_loaded", True)}
             for t in per_source]
    kept = sum(t.get("kept", 0) for t in per_source)
    labelled = sum(t.get("labelled", 0) for t in per_source)
    if kept:
        outcome = (f"{kept} of {labelled} labelled answers were kept and joined the replay set; all kept rows are in "
                   f"`{TEACHER_REPLAY_NAME}`.")
    else:
        outcome = (f"No answer was kept (all {labelled} labelled answers were dropped, see the counts below), so the "
                   f"run trained on the labelled replay rows only.")
    return {"teacher_bases": bases, "teacher_outcome": outcome}


def _evaluation_context(evaluation: Any, kind: str) -> dict[str, Any]:
    """The card's claim comes from measured scores only: a held-out evaluation (`--eval`), legacy flat scores
    (benchmark / demo: task -> score), or a plain statement that the output was not evaluated."""
    what = "model" if kind == "merged" else "adapter"
    if isinstance(evaluation, Mapping) and isinstance(evaluation.get("results"), Mapping):
        fused, anchor = evaluation["results"].get("fused", {}), evaluation["results"].get("anchor", {})
        rows = [{"subset": name, "fused": fused[name], "anchor": anchor.get(name, {})} for name in fused]
        overall_f, overall_a = fused.get("all", {}).get("f1"), anchor.get("all", {}).get("f1")
        if overall_f is None or overall_a is None:
            verdict = "see the table below"
        else:
            diff = overall_f - overall_a
            verdict = ("better than" if diff > 0.5 else "worse than" if diff < -0.5 else "about the same as")
            verdict = (f"F1 {overall_f:.1f} against {overall_a:.1f} for the anchor adapter alone: {verdict} the "
                       f"anchor")
        summary = f"Measured on {evaluation.get('data', 'held-out rows')}: {verdict}."
        return {"evaluation": [], "eval_rows": rows, "eval_info": evaluation, "eval_summary": summary}
    if isinstance(evaluation, Mapping) and evaluation:
        return {"evaluation": sorted(evaluation.items()), "eval_rows": [], "eval_info": {},
                "eval_summary": "Measured scores are in the Evaluation section."}
    return {"evaluation": [], "eval_rows": [], "eval_info": {},
            "eval_summary": f"This {what} was not evaluated: no measurement shows that it keeps the anchor "
                            f"adapter's task or gains the experts' (`hf-heterofusion fuse --eval` or "
                            f"`merge --eval` scores it on held-out replay rows)."}


def card_data(report: FusionReport, *, base_model: str | None = None) -> ModelCardData:
    """The `ModelCardData` front matter: Hub ids only in `base_model`, relation and library set explicitly.

    `base_model` is the Hub id of the target base when the report names a local folder (`push --base-model`).
    """
    from huggingface_hub import ModelCardData

    target = report.target
    merged = report.output_kind == "merged"
    target_id = base_model or hub_id_of(target.model, target.model_revision)
    if merged:
        refs = [(target.adapter, target.adapter_revision), *((s.adapter, s.revision) for s in report.sources)]
        ids = list(dict.fromkeys(i for i in (target_id, *(hub_id_of(n, r) for n, r in refs)) if i))
        front_base: str | list[str] | None = ids or None
    else:
        front_base = target_id
    extra = {"base_model_relation": "merge" if merged else "adapter"} if front_base else {}
    return ModelCardData(
        base_model=front_base,
        library_name="transformers" if merged else "peft",
        license=_license(report),
        pipeline_tag="text-generation",
        tags=[*CARD_TAGS, "transformers"] if merged else list(CARD_TAGS),
        **extra,
    )


def render_card(out_dir: Path | str, *, report: FusionReport | None = None, title: str | None = None,
                repo_id: str | None = None, base_model: str | None = None) -> str:
    """Render the model card (README.md text) of a fusion output directory.

    Pure and deterministic: it renders `report` (read from `fusion_report.json` when not given), the config copy
    (when the report holds no YAML) and which pictures exist; it never uses the network.

    Args:
        out_dir (`Path` or `str`): the fusion output directory.
        report ([`FusionReport`], *optional*): the report to render; defaults to the folder's own.
        title (`str`, *optional*): card title; defaults to `repo_id`, else `<target adapter>-heterofusion`.
        repo_id (`str`, *optional*): the Hub repo the card is for (`push`); the usage snippets name it. Without it
            they name a `your-namespace/...` placeholder.
        base_model (`str`, *optional*): Hub id of the target base, for a report that names a local folder; the
            front matter and the body name it instead.

    Returns:
        `str`: the card, YAML front matter included.

    Raises:
        [`AdapterNotFoundError`]: no `fusion_report.json` in `out_dir`.
    """
    import jinja2
    from huggingface_hub import ModelCard

    out = Path(out_dir)
    report = report if report is not None else FusionReport.load(out)
    config_yaml = report.config_yaml
    if not config_yaml and (out / CONFIG_COPY_NAME).is_file():
        config_yaml = (out / CONFIG_COPY_NAME).read_text(encoding="utf-8")
    pictures = [LOSS_PLOT_NAME] if (out / LOSS_PLOT_NAME).is_file() else []
    if any(p.get("pairs") for p in (report.alignment or {}).get("per_source", [])):
        pictures.append(ALIGNMENT_PLOT_NAME)  # write_card draws it from the same data: no dependence on call order
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,  # a typo in the template fails the golden test instead of printing ""
    )
    env.filters.update(fmt=_fmt, fmt_list=_fmt_list, sample=_sample)
    context = card_context(report, config_yaml=config_yaml, pictures=pictures, title=title, repo_id=repo_id,
                           base_model=base_model)
    front = card_data(report, base_model=base_model).to_yaml()
    text = env.get_template(TEMPLATE_NAME).render(card_data=front, **context)
    return str(ModelCard(text))  # parsing it back checks the front matter is valid YAML


def draw_alignment(report: FusionReport, path: Path | str) -> Path | None:
    """Draw `alignment.png`: which source layer feeds each target layer, one line per source (None if no pairs)."""
    per_source = (report.alignment or {}).get("per_source", [])
    if not any(p.get("pairs") for p in per_source):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    sources = report.sources
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    for order, plan in enumerate(per_source):
        pairs = sorted(tuple(p) for p in plan.get("pairs", []))
        index = plan.get("source", order)
        name = sources[index].family if index < len(sources) else None
        label = f"source {index}" + (f" ({name})" if name else "")
        # Sources often share one plan (same depth): shrinking markers and varied dashes keep each one visible.
        ax.plot(
            [t for t, _ in pairs],
            [s for _, s in pairs],
            marker="osD^v"[order % 5],
            markersize=max(9 - 2 * order, 3),
            linestyle=("-", "--", ":", "-.")[order % 4],
            label=label,
        )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("target layer")
    ax.set_ylabel("source layer")
    mode = (report.alignment or {}).get("mode", "?")
    ax.set_title(f"HeteroFusion layer alignment ({mode})")
    ax.set_xlim(-0.5, max((report.target.num_layers or 1) - 0.5, 0.5))
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})  # no matplotlib version in the file: same report, same bytes
    plt.close(fig)
    return Path(path)


def write_card(out_dir: Path | str, *, report: FusionReport | None = None, title: str | None = None) -> Path:
    """Write `README.md` (the card) and `alignment.png` into a fusion output directory; returns the card path."""
    out = Path(out_dir)
    report = report if report is not None else FusionReport.load(out)
    if _trained_nets(report):  # `trainer: lora` uses no alignment: nothing to picture
        draw_alignment(report, out / ALIGNMENT_PLOT_NAME)
    path = out / CARD_NAME
    path.write_text(render_card(out, report=report, title=title), encoding="utf-8")
    return path
