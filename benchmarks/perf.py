# SPDX-License-Identifier: Apache-2.0
"""Performance, measured side by side in one run, each job in its own subprocess (peak RSS from `getrusage`).

* fit cost per replay example vs plain LoRA SFT per example: same target, same replay rows, same sequence length
  and the same micro-batch (1), with `amortize_nets` off and on, at each E of the grid;
* export: writing a merged full checkpoint of the target (PEFT `merge_and_unload` + `save_pretrained`) vs
  mergekit's `linear` merge writing the same target through `mergekit.merge.run_merge`;
* hypernet parameters per preset (closed form, `config.hypernet_parameters`);
* how fit time grows with the number of sources, the rank and the block size (random adapters of the right
  shapes on the real bases; content does not change the cost).

`python -m benchmarks.perf '<job json>'` runs one job and prints one `PERF_RESULT {...}` line.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

import hf_heterofusion.method.train as train_mod
import hf_heterofusion.pipeline as pipeline_mod
from hf_heterofusion.config import FusionConfig
from hf_heterofusion.data.replay import load_replay
from hf_heterofusion.examples import experts
from hf_heterofusion.method.fusion import FusionModel
from hf_heterofusion.method.transfer_net import hypernet_parameters
from hf_heterofusion.outputs.sizing import HypernetSizeWarning
from hf_heterofusion.pipeline import fit
from hf_heterofusion.prepare import prepare
from hf_heterofusion.testing.factories import make_lora_adapter

from . import child_env
from .grid import ALL_PROJECTIONS
from .measure import folder_mb, peak_rss_mb
from .perf_target import job_target_memory, run_target_memory, teacher_throughput


logger = logging.getLogger(__name__)

RESULT_TAG = "PERF_RESULT "


# --------------------------------------------------------------------------------------------- orchestration


def run_perf(bench, *, scaling: bool = True) -> dict[str, Any]:
    """All performance measurements of a benchmark run (see the module docstring)."""
    g = bench.grid
    work = bench.out / "work" / "perf"
    work.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in bench.replay_path.read_text(encoding="utf-8").splitlines()]
    # Interleave tasks so a short prefix still covers every task's prompt lengths.
    by_task: dict[str, list[dict]] = {}
    for row in rows:
        by_task.setdefault(row.get("task", ""), []).append(row)
    mixed = [r for group in zip(*by_task.values()) for r in group]
    replay = _write_rows(mixed[: g.perf_examples], work / "perf_replay.jsonl")
    threads = torch.get_num_threads()
    base = {"threads": threads, "target": str(bench.target_dir), "anchor": str(bench.anchor), "replay": str(replay),
            "max_length": g.max_length, "accumulation": g.accumulation, "in_process": g.name == "quick"}
    sources = [str(p) for p in bench.sources("single")]
    perf: dict[str, Any] = {"note": f"{g.perf_examples} replay examples, {len(sources)} sources, one epoch, torch "
                                    f"threads {threads}; times exclude model loading; peak RSS is the whole "
                                    f"subprocess. Defaults: `amortize_nets` on."}

    fit_rows = []
    sft_of = {}
    for batch, accumulation in ((1, g.accumulation), (8, 1)):  # the reference's 1 x 8, and micro-batches of 8
        sft = sft_of[batch] = _job({**base, "kind": "sft", "batch_size": batch})
        fit_rows.append({"label": f"LoRA SFT of the anchor (batch {batch})", **_ratios(sft, sft)})
        for e in g.perf_embed_dims:
            for amortize in ((True, False) if batch == 1 else (True,)):
                r = _job({**base, "kind": "fit", "sources": sources, "embed_dim": e, "amortize": amortize,
                          "batch_size": batch, "accumulation": accumulation, "grid": _grid_fields(g)})
                label = (f"HeteroFusion E={e}, batch {batch} x {accumulation}, amortize_nets="
                         f"{'on (default)' if amortize else 'off (reference)'}")
                fit_rows.append({"label": label, **_ratios(r, sft)})
    if len(sources) >= 2:  # (the quick grid runs it too: the code path, at its tiny width)
        # The setting of the E=1024 goal (issue 23): two experts and the paper's batch 1 x 8. The nets run once per
        # optimiser step, so their share per example depends on the accumulation and the number of sources. Against
        # the batch-1 SFT job above (it steps its optimiser every example; its LoRA step is cheap either way).
        e = max(g.perf_embed_dims)
        r = _job({**base, "kind": "fit", "sources": sources[:2], "embed_dim": e, "amortize": True, "batch_size": 1,
                  "accumulation": 8, "grid": _grid_fields(g)})
        fit_rows.append({"label": f"HeteroFusion E={e}, 2 sources, batch 1 x 8, amortize_nets=on (default)",
                         **_ratios(r, sft_of[1])})
    perf["fit_vs_sft"] = fit_rows

    fused = _some_fused_adapter(bench)
    export = []
    for kind, label in (("export_heterofusion", "HeteroFusion merged export (planner fold + save, fit excluded)"),
                        ("export_mergekit", "mergekit `linear` via run_merge (fp32)"),
                        ("export_peft", "PEFT merge_and_unload + save_pretrained (fp32)")):
        try:
            export.append({"label": label, **_job({**base, "kind": kind, "adapter": str(fused),
                                                    "source": sources[0], "out": str(work / kind)})})
        except RuntimeError as err:  # report, do not lose the rest of the run
            export.append({"label": f"{label}: FAILED ({str(err).splitlines()[-1][:120]})", "seconds": float("nan"),
                           "peak_rss_mb": float("nan")})
        shutil.rmtree(work / kind, ignore_errors=True)
    perf["export"] = export
    perf["teacher"] = teacher_throughput(bench, sources)
    perf["target_memory"] = run_target_memory(bench, work, _job, base)
    perf["hypernet_parameters"] = hypernet_table(g, bench.results.get("block_size_resolved") or 1024,
                                                 len(sources), roles=len(ALL_PROJECTIONS))
    if scaling:
        perf["scaling"] = _job({**base, "kind": "scaling", "source_base": str(bench.source_dir),
                                "work": str(work / "scaling"), "grid": _grid_fields(g)})["points"]
    return perf


def _ratios(run: dict, sft: dict) -> dict:
    """A fit job's record with its cost relative to the SFT job measured next to it."""
    return {**run, "ratio_to_sft": run["seconds_per_example"] / sft["seconds_per_example"],
            "steady_ratio_to_sft": run["steady_seconds_per_example"] / sft["steady_seconds_per_example"],
            "cpu_ratio_to_sft": run["cpu_seconds_per_example"] / sft["cpu_seconds_per_example"],
            "rss_to_sft": run["peak_rss_mb"] / sft["peak_rss_mb"]}


def hypernet_table(grid, block_size: int, n_sources: int, *, roles: int) -> list[dict]:
    """Closed-form transfer-net sizes (all roles) of the paper config and the presets run here."""
    presets = [("paper (b=4096, E=1024)", 4096, 1024, "concat"),
               (f"faithful here (b={block_size}, E={grid.embed_dim})", block_size, grid.embed_dim, "concat"),
               (f"improved here (per_source, b={block_size}, E={grid.embed_dim})", block_size, grid.embed_dim,
                "per_source"),
               (f"E=1024 at b={block_size}", block_size, 1024, "concat")]
    out = []
    for name, b, e, mode in presets:
        per_role = hypernet_parameters(grid.rank, b, e, grid.max_positions, sources=n_sources, position_mode=mode)
        out.append({"preset": name, "block_size": b, "embed_dim": e, "per_role": per_role, "total": per_role * roles})
    return out


def _grid_fields(g) -> dict:
    return {"rank": g.rank, "num_heads": g.num_heads, "num_projections": g.num_projections,
            "max_positions": g.max_positions, "block_size": g.block_size, "embed_dim": g.embed_dim,
            "lr": g.fusion_lr, "scaling_sources": list(g.scaling_sources), "scaling_ranks": list(g.scaling_ranks),
            "scaling_blocks": list(g.scaling_blocks), "scaling_examples": g.scaling_examples}


def _some_fused_adapter(bench) -> Path:
    """A fused adapter from this run if one exists (any adapter of the target's shape has the same export cost)."""
    for path in sorted((bench.out / "work" / "fused").glob("*/*/seed*")):
        if (path / "adapter_config.json").is_file():
            return path
    return bench.anchor


def _write_rows(rows: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _job(job: dict) -> dict:
    """Run one job in a fresh interpreter and return its result (raises RuntimeError with its output tail).

    With `in_process` (the quick grid) the job runs here instead: interpreter start-up would dominate the
    smoke test, and its RSS would be meaningless anyway.
    """
    logger.info("perf job %s", job["kind"] + (f" E={job['embed_dim']} amortize={job['amortize']}"
                                             if job["kind"] == "fit" else ""))
    if job.get("in_process"):
        try:
            with warnings.catch_warnings():  # the quick grid's nets dwarf its toy models, as the warning says
                warnings.simplefilter("ignore", HypernetSizeWarning)
                return JOBS[job["kind"]](job)
        except Exception as err:  # same contract as a failed subprocess
            raise RuntimeError(f"perf job {job['kind']} failed: {type(err).__name__}: {err}") from err
    env = child_env(OMP_NUM_THREADS=str(job["threads"]), TOKENIZERS_PARALLELISM="false")
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "benchmarks.perf", json.dumps(job)],
                          capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):  # + the whole process's wall time, start-up and imports included
            return {**json.loads(line[len(RESULT_TAG):]), "process_seconds": time.perf_counter() - started}
    raise RuntimeError(f"perf job {job['kind']} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")


# ------------------------------------------------------------------------------------------------ the jobs
# Each job runs in a fresh interpreter that reports its own peak RSS and wall time, so mergekit and the merge
# planner (~2 s and ~150 MB at import here) are imported only inside the export jobs that use them: at module level
# they would inflate every other job's numbers.


def _fusion_cfg(job: dict, *, sources: list[str], anchor: str, embed_dim: int, amortize: bool,
                block_size: int | str | None = None, examples: int | None = None) -> FusionConfig:
    g = job["grid"]
    return FusionConfig(
        target_model=job["target"], target_adapter=anchor, sources=sources, replay=job["replay"],
        block_size=block_size if block_size is not None else g["block_size"], embed_dim=embed_dim,
        num_heads=g["num_heads"], max_position_embeddings=g["max_positions"], num_projections=g["num_projections"],
        lr=g["lr"], epochs=1, batch_size=job.get("batch_size", 1), gradient_accumulation_steps=job["accumulation"],
        max_length=job["max_length"], seed=0, checkpoint_every=0, amortize_nets=amortize,
        max_steps=None if examples is None else math.ceil(examples / job["accumulation"]),
        torch_dtype=job.get("torch_dtype"),
    )


def job_sft(job: dict) -> dict:
    rows = load_replay(job["replay"])
    loop_seconds: list[float] = []
    cpu_seconds: list[float] = []  # user + system time of the process: less sensitive to other jobs on the box
    batch_starts: list[float] = []
    inner = experts._fit

    def timed_fit(model: Any, batches: Any, **kwargs: Any) -> list[float]:
        # Time only the optimisation loop, the counterpart of the fusion's `fit_s` (model loading excluded), and
        # when each step starts (it draws its batch), so the first step's one-time costs can be told apart.
        def stamped() -> Any:
            for b in batches:
                batch_starts.append(time.perf_counter())
                yield b

        t0, c0 = time.perf_counter(), time.process_time()
        try:
            return inner(model, stamped(), **kwargs)
        finally:
            loop_seconds.append(time.perf_counter() - t0)
            cpu_seconds.append(time.process_time() - c0)
            batch_starts.append(t0 + loop_seconds[-1])

    experts._fit = timed_fit  # restored below: the quick grid runs jobs in the benchmark's own process
    try:
        with tempfile.TemporaryDirectory() as tmp:
            batch = job.get("batch_size", 1)
            experts.train_lora_expert(job["target"], rows, Path(tmp) / "sft", init_adapter=job["anchor"],
                                      steps=math.ceil(len(rows) / batch), epochs=None, batch_size=batch,
                                      max_length=job["max_length"], seed=0)
    finally:
        experts._fit = inner
    train_s = loop_seconds[0]
    first = batch_starts[1] - batch_starts[0] if len(batch_starts) > 2 else train_s
    return {"seconds_per_example": train_s / len(rows), "train_seconds": train_s, "examples": len(rows),
            "cpu_seconds_per_example": cpu_seconds[0] / len(rows),
            **_steady(train_s, first, len(rows), job.get("batch_size", 1)),
            "peak_rss_mb": peak_rss_mb(), "hypernet_parameters": 0}


def _steady(total_s: float, first_step_s: float, examples: int, first_step_examples: int) -> dict:
    """Seconds per example after the first optimiser step (allocation, lazy init, optimiser state), and that step."""
    rest = examples - first_step_examples
    return {"first_step_seconds": first_step_s,
            "steady_seconds_per_example": (total_s - first_step_s) / rest if rest > 0 else float("nan")}


def job_fit(job: dict) -> dict:
    cfg = _fusion_cfg(job, sources=job["sources"], anchor=job["anchor"], embed_dim=job["embed_dim"],
                      amortize=job["amortize"])
    window_starts: list[float] = []
    loop_cpu: list[float] = []
    inner_window, inner_train = train_mod._run_window, pipeline_mod.train

    def stamped(*args: Any, **kwargs: Any) -> Any:  # one window per optimiser step: when each step starts
        window_starts.append(time.perf_counter())
        return inner_window(*args, **kwargs)

    def timed_train(*args: Any, **kwargs: Any) -> Any:  # the loop's CPU time (user + system), loading excluded
        c0 = time.process_time()
        try:
            return inner_train(*args, **kwargs)
        finally:
            loop_cpu.append(time.process_time() - c0)

    train_mod._run_window, pipeline_mod.train = stamped, timed_train
    try:
        result = fit(cfg, show_progress=False)
    finally:
        train_mod._run_window, pipeline_mod.train = inner_window, inner_train
    n = result.report.training.replay_examples
    fit_s = result.report.timings["fit_s"]
    first = window_starts[1] - window_starts[0] if len(window_starts) > 1 else fit_s
    per_step = cfg.batch_size * cfg.gradient_accumulation_steps
    return {"seconds_per_example": fit_s / n, "train_seconds": fit_s, "examples": n,
            "cpu_seconds_per_example": loop_cpu[0] / n, **_steady(fit_s, first, n, per_step),
            "peak_rss_mb": peak_rss_mb(), "hypernet_parameters": result.report.hypernet_parameters_total}


def job_export_peft(job: dict) -> dict:
    model, tokenizer = experts.load_model(job["target"], job["adapter"])
    t0 = time.perf_counter()
    merged = model.merge_and_unload()
    merged.save_pretrained(job["out"])
    tokenizer.save_pretrained(job["out"])
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "size_mb": folder_mb(Path(job["out"]))}


def job_export_heterofusion(job: dict) -> dict:
    """The trained mode's merged export through the planner (`max_steps: 0`); the fit task's own time is excluded.

    The side files (report, config, loss plot) are timed on their own: the planner writes them with
    `outputs.writer.write_side_files`, patched here under the name the planner imported it as. Both export jobs
    run in fresh interpreters, and both count their imports' first use inside the timed call.
    """
    from mergekit.options import MergeOptions

    from hf_heterofusion.merge_methods import planner

    cfg = FusionConfig(target_model=job["target"], target_adapter=job["adapter"], sources=[job["source"]],
                       max_steps=0, output="merged", block_size="auto", embed_dim=256)
    options = MergeOptions(copy_tokenizer=True, quiet=True, write_model_card=False)
    side, write_side = [], planner.write_side_files

    def timed_side_files(*args: Any, **kwargs: Any) -> None:  # report, configs, loss plot: what `linear` lacks
        t = time.perf_counter()
        try:
            write_side(*args, **kwargs)
        finally:
            side.append(time.perf_counter() - t)

    planner.write_side_files = timed_side_files  # restored below (the quick grid runs jobs in-process)
    try:
        t0 = time.perf_counter()
        report = planner.run_trained_merge(cfg, job["out"], options=options, config_source="perf", dtype="float32")
        total = time.perf_counter() - t0
    finally:
        planner.write_side_files = write_side
    fit_s = report.timings["load_s"] + report.timings["fit_s"]
    return {"seconds": total - fit_s, "total_seconds": total, "fit_task_seconds": fit_s,
            "side_files_seconds": sum(side), "peak_rss_mb": peak_rss_mb(), "size_mb": folder_mb(Path(job["out"]))}


def job_export_mergekit(job: dict) -> dict:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    # The same target written by mergekit's own `linear` merge (one input, weight 1): the cost of reading,
    # merging and writing every tensor of the checkpoint through mergekit's executor, like a merged export.
    config = MergeConfiguration.model_validate({
        "merge_method": "linear", "dtype": "float32",
        "models": [{"model": job["target"], "parameters": {"weight": 1.0}}],
    })
    t0 = time.perf_counter()
    run_merge(config, job["out"], MergeOptions(copy_tokenizer=True, quiet=True, write_model_card=False))
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "size_mb": folder_mb(Path(job["out"]))}


def job_scaling(job: dict) -> dict:
    """Seconds per replay example and per net pass as sources, rank and block size vary (paper preset)."""
    g = job["grid"]
    work = Path(job["work"])
    adapters: dict[tuple[str, int, int], str] = {}

    def adapter(base: str, rank: int, seed: int) -> str:
        key = (base, rank, seed)
        if key not in adapters:
            out = work / f"{Path(base).name}-r{rank}-s{seed}"
            if not (out / "adapter_config.json").is_file():
                make_lora_adapter(base, out, r=rank, lora_alpha=2 * rank, target_modules=list(ALL_PROJECTIONS),
                                  seed=seed)
            adapters[key] = str(out)
        return adapters[key]

    default_sources, default_rank = 2, g["rank"]
    points = []
    grid_points = ([("sources", n) for n in g["scaling_sources"]] + [("rank", r) for r in g["scaling_ranks"]]
                   + [("block size", b) for b in g["scaling_blocks"]])
    for axis, value in grid_points:
        n_src = value if axis == "sources" else default_sources
        rank = value if axis == "rank" else default_rank
        block = value if axis == "block size" else None
        anchor = adapter(job["target"], rank, 0)
        sources = [adapter(job["source_base"], rank, 1 + i) for i in range(n_src)]
        cfg = _fusion_cfg(job, sources=sources, anchor=anchor, embed_dim=g["embed_dim"], amortize=False,
                          block_size=block, examples=g["scaling_examples"])
        points.append({"axis": axis, "value": value, **_time_fit(cfg, g["scaling_examples"])})
    shutil.rmtree(work, ignore_errors=True)
    return {"points": points, "peak_rss_mb": peak_rss_mb()}


def _time_fit(cfg: FusionConfig, examples: int) -> dict:
    prepared = prepare(cfg)
    fusion = FusionModel(prepared.target, prepared.groups, cfg, prepared.block_size, len(prepared.sources))
    gen = torch.Generator().manual_seed(0)
    passes = []
    for _ in range(4):  # the first pass pays one-time allocation costs: report the median of the other three
        fusion.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        out = fusion(generator=gen)
        loss = out.regulariser + sum(v.square().sum() for v in out.b_patches.values())
        loss.backward()
        passes.append(time.perf_counter() - t0)
    net_s = sorted(passes[1:])[1]
    del fusion, out, loss
    result = fit(cfg, show_progress=False, prepared=prepared)
    n = min(examples, result.report.training.micro_steps or examples)
    return {"seconds_per_example": result.report.timings["fit_s"] / max(n, 1), "net_seconds_per_pass": net_s,
            "block_size": prepared.block_size, "hypernet_parameters": result.report.hypernet_parameters_total}


JOBS = {"sft": job_sft, "fit": job_fit, "export_peft": job_export_peft, "export_mergekit": job_export_mergekit,
        "export_heterofusion": job_export_heterofusion, "scaling": job_scaling, "target_memory": job_target_memory}


def main(argv: list[str] | None = None) -> int:
    job = json.loads((argv if argv is not None else sys.argv[1:])[0])
    torch.set_num_threads(int(job.get("threads") or torch.get_num_threads()))
    logging.basicConfig(level=logging.WARNING)
    result = JOBS[job["kind"]](job)
    print(RESULT_TAG + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
