# SPDX-License-Identifier: Apache-2.0
"""Bad input through the real CLI: one `error: ...` line naming the problem and the fix, exit status 2,
no traceback, and nothing written.

`CASES` is the table: each row builds one bad input under `tmp_path`, runs `hf-heterofusion fuse CONFIG.yml OUT`
(in process, through `cli.main`) and compares the whole message with a template. `{cfg}`, `{out}`, `{inputs}`
stand for the paths of the case; `<…>` matches text that comes from a library (JSON or safetensors parser
messages). The tests at the bottom cover inputs that are handled rather than refused (unequal ranks, long replay
examples, explicitly allowed pickle or remote code) and checks where the CLI is not the natural entry point.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from hf_heterofusion.cli import main as cli
from hf_heterofusion.config import FusionConfig
from hf_heterofusion.errors import AdapterNotFoundError
from hf_heterofusion.method.adapters import load_adapter
from hf_heterofusion.outputs.report import source_reports
from hf_heterofusion.prepare import _read_model_config, prepare


PACKAGE_ROOT = Path(cli.__file__).resolve().parent
REPO_ROOT = PACKAGE_ROOT.parent


# ------------------------------------------------------------------------------------------------- the harness


@dataclass
class Env:
    """One case's world: the config it writes, the paths it uses, and helpers to build broken inputs."""

    root: Path
    zoo: object
    data: dict
    args: list[str] = field(default_factory=list)
    config_text: str | None = None  # written instead of `data` when set

    @property
    def cfg(self) -> Path:
        return self.root / "cfg.yml"

    @property
    def out(self) -> Path:
        return self.root / "out"

    @property
    def inputs(self) -> Path:
        return self.root / "inputs"

    def copy(self, src: Path, name: str) -> Path:
        return Path(shutil.copytree(src, self.inputs / name))

    def model(self, family: str = "llama") -> Path:
        path = self.copy(self.zoo.model(family), f"{family}-model")
        self.data["target_model"] = str(path)
        return path

    def source(self, family: str = "qwen2", **kwargs) -> Path:
        path = self.copy(self.zoo.adapter(family, seed=10, **kwargs), f"{family}-adapter")
        self.data["sources"] = [str(path)]
        return path

    def write(self, name: str, text: str) -> Path:
        path = self.inputs / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def replay(self, name: str, text: str) -> None:
        self.data["replay"] = str(self.write(name, text))


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def _edit_tensors(adapter: Path, edit: Callable[[dict], None]) -> None:
    tensors = load_file(adapter / "adapter_model.safetensors")
    edit(tensors)
    save_file(tensors, adapter / "adapter_model.safetensors")


def _poison(value: float) -> Callable[[dict], None]:
    def edit(tensors: dict) -> None:
        tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"][1, 2] = value

    return edit


def _widen_target_down_proj(env: Env) -> None:
    """The anchor adapter's down_proj takes 8 more inputs than the base weight: only the weight headers can tell
    (config.json checks see hidden sizes, not FFN widths)."""
    path = env.copy(env.zoo.adapter("llama"), "llama-adapter")
    env.data["target_adapter"] = str(path)
    key = "base_model.model.model.layers.0.mlp.down_proj.lora_A.weight"
    _edit_tensors(path, lambda t: t.update({key: torch.cat([t[key], t[key][:, :8]], dim=1).contiguous()}))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _drop(key: str) -> Callable[[Env], None]:
    return lambda env: env.data.pop(key)


def _set(**values) -> Callable[[Env], None]:
    return lambda env: env.data.update(values)


@dataclass(frozen=True)
class Case:
    id: str
    setup: Callable[[Env], object]
    message: str


def _pattern(template: str, env: Env) -> str:
    values = {"cfg": env.cfg, "out": env.out, "inputs": env.inputs, "root": env.root}
    parts = re.split(r"(\{\w+\}|<…>)", template)
    return "".join(
        ".+" if p == "<…>" else re.escape(str(values[p[1:-1]])) if re.fullmatch(r"\{\w+\}", p) else re.escape(p)
        for p in parts
    )


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


SHAPES = ("expected `prompt` + `response`, `messages` (chat ending with an assistant turn) or `instruction` + "
          "`output` (alpaca, optional `input`)")
PULL_HINT = ("does not exist locally; check the path, or run `hf-heterofusion pull` for Hub ids (it writes "
             "heterofusion.lock.json next to the config)")
OTHER_BASE = "use the adapter trained on that base, or fix `base_model_name_or_path` in adapter_config.json"

CASES = [
    # --- the config file and CLI options ----------------------------------------------------------------------
    Case("unknown-key", _set(mu_gat=0.2), "{cfg}: unknown key `mu_gat`; did you mean `mu_gate`?"),
    Case("unknown-key-no-close-match", _set(colour="red"),
         "{cfg}: unknown key `colour`; valid keys: target_model, <…>"),
    Case("unknown-source-key", lambda env: env.data.update(sources=[{**env.data["sources"][0], "weigth": 1}]),
         "{cfg}: unknown key `sources.0.weigth`; did you mean `weight`?"),
    Case("missing-required-key", _drop("target_adapter"), "{cfg}: required key `target_adapter` is missing"),
    Case("config-missing", lambda env: env.args.append("delete-config"),
         "config file {cfg} does not exist"),
    Case("config-is-a-directory", lambda env: env.args.append("config-dir"),
         "cannot read config file {cfg} (Is a directory); pass a readable YAML file"),
    Case("config-empty", lambda env: setattr(env, "config_text", ""),
         "config file {cfg} is empty; it needs `target_model`, `target_adapter` and `sources`"),
    Case("config-not-yaml", lambda env: setattr(env, "config_text", "target_model: [a,\n"),
         "{cfg} is not valid YAML: <…>"),
    Case("config-not-a-mapping", lambda env: setattr(env, "config_text", "- a\n- b\n"),
         "{cfg} must be a mapping of keys to values, got list"),
    Case("bad-choice", _set(layer_alignment="tial"),
         "{cfg}: `layer_alignment` must be 'tail', 'head', 'uniform' or 'naive' (got 'tial'); the default is 'tail'"),
    Case("block-size-zero", _set(block_size=0),
         "{cfg}: `block_size` must be an integer from 1 to 65536 (paper: 4096) or `auto` (got 0); "
         "the default is 'auto'"),
    Case("block-size-too-large", _set(block_size=70000),
         "{cfg}: `block_size` must be an integer from 1 to 65536 (paper: 4096) or `auto` (got 70000); "
         "the default is 'auto'"),
    Case("block-size-not-a-number", _set(block_size="big"),
         "{cfg}: `block_size` must be an integer from 1 to 65536 (paper: 4096) or `auto` (got 'big'); "
         "the default is 'auto'"),
    Case("lr-zero", _set(lr=0), "{cfg}: `lr` must be greater than 0 (got 0); the default is 5e-05 for the paper's "
         "transfer nets, 0.00025 for them with `teacher: sources`, 0.001 for `trainer: lora`"),
    Case("lr-too-large", _set(lr=2.0), "{cfg}: `lr` must be less than or equal to 1 (got 2.0); the default is 5e-05 "
         "for the paper's transfer nets, 0.00025 for them with `teacher: sources`, 0.001 for `trainer: lora`"),
    Case("alpha-init-zero", _set(alpha_init=0),
         "{cfg}: `alpha_init` must be greater than 0 (got 0); the default is 0.3"),
    Case("alpha-init-too-large", _set(alpha_init=11),
         "{cfg}: `alpha_init` must be less than or equal to 10 (got 11); the default is 0.3"),
    Case("transfer-ratio-zero", _set(transfer_ratio=0),
         "{cfg}: `transfer_ratio` must be greater than 0 (got 0); the default is 1.0"),
    Case("transfer-ratio-above-one", _set(transfer_ratio=1.5),
         "{cfg}: `transfer_ratio` must be less than or equal to 1 (got 1.5); the default is 1.0"),
    Case("transfer-ratio-bad-fraction", _set(transfer_ratio="3/x"),
         "{cfg}: `transfer_ratio` must be a number or a fraction `a/b` of two numbers, such as `3/4` (got '3/x'); "
         "the default is 1.0"),
    Case("transfer-ratio-fraction-by-zero", _set(transfer_ratio="1/0"),
         "{cfg}: `transfer_ratio` must be a number or a fraction `a/b` of two numbers, such as `3/4` (got '1/0'); "
         "the default is 1.0"),
    Case("transfer-ratio-fraction-above-one", _set(transfer_ratio="5/4"),
         "{cfg}: `transfer_ratio` must be less than or equal to 1 (got 1.25); the default is 1.0"),
    Case("embed-dim-not-multiple-of-heads", _set(embed_dim=30),
         "{cfg}: `embed_dim` (30) must be a multiple of `num_heads` (4); change one of them"),
    Case("replay-required", lambda env: (env.data.pop("replay"), env.data.pop("max_steps")),
         "{cfg}: `replay` is required (a JSONL file); set `max_steps: 0` to export without training"),
    Case("set-without-equals", lambda env: env.args.extend(["--set", "lr"]),
         "--set expects KEY=VALUE (e.g. `--set lr=1e-4`), got 'lr'"),
    Case("set-unknown-key", lambda env: env.args.extend(["--set", "mu_gat=0.2"]),
         "--set: unknown key `mu_gat`; did you mean `mu_gate`?"),
    Case("set-out-of-range", lambda env: env.args.extend(["--set", "transfer_ratio=2"]),
         "--set: `transfer_ratio` must be less than or equal to 1 (got 2); the default is 1.0"),
    # --- the target model ----------------------------------------------------------------------------------------
    Case("model-missing", _set(target_model="/nonexistent/llama-base"),
         f"target model `/nonexistent/llama-base` {PULL_HINT}"),
    Case("model-without-config", lambda env: (env.model() / "config.json").unlink(),
         "target model {inputs}/llama-model has no config.json; pass a transformers model directory"),
    Case("model-config-not-json", lambda env: (env.model() / "config.json").write_text("{oops"),
         "cannot read {inputs}/llama-model/config.json (<…>); the target model folder must hold a transformers "
         "config.json"),
    Case("model-without-weights", lambda env: (env.model() / "model.safetensors").unlink(),
         "target model {inputs}/llama-model has no weights (model.safetensors); pass a complete transformers model "
         "directory"),
    Case("model-weights-corrupt", lambda env: (env.model() / "model.safetensors").write_bytes(b"\xff" * 64),
         "target model weights {inputs}/llama-model/model.safetensors are corrupt or truncated (<…>); re-download "
         "or re-save the model"),
    Case("model-weights-truncated", lambda env: _truncate(env.model() / "model.safetensors"),
         "target model weights {inputs}/llama-model/model.safetensors are corrupt or truncated (the file is shorter "
         "than its header says); re-download or re-save the model"),
    Case("model-pickle-weights", lambda env: _to_pickle(env.model(), "model"),
         "target model {inputs}/llama-model has only pickle weights (pytorch_model.bin), and loading pickles can run "
         "arbitrary code; convert them to safetensors, or set `allow_pickle: true` if you trust their author"),
    Case("model-without-tokenizer", lambda env: [p.unlink() for p in env.model().glob("tokenizer*")],
         "target model {inputs}/llama-model has no usable tokenizer (ValueError); save it into that folder with "
         "`tokenizer.save_pretrained`"),
    Case("trust-remote-code", lambda env: _edit_json(env.model() / "config.json", auto_map={"AutoModel": "x.X"}),
         "target model {inputs}/llama-model ships custom code (auto_map), which runs when loaded; set "
         "`trust_remote_code: true` only if you trust its author"),
    Case("unsupported-architecture", lambda env: _edit_json(env.model() / "config.json", model_type="gpt2"),
         "target architecture `gpt2` is not supported; supported: gemma, gemma2, gemma3, gemma3_text, granite, "
         "llama, mistral, olmo, olmo2, phi3, qwen2, qwen3"),
    # --- adapters --------------------------------------------------------------------------------------------
    Case("target-adapter-missing", _set(target_adapter="/nonexistent/llama-lora"),
         f"target adapter `/nonexistent/llama-lora` {PULL_HINT}"),
    Case("source-adapter-missing", _set(sources=["/nonexistent/qwen-lora"]),
         f"source adapter `/nonexistent/qwen-lora` {PULL_HINT}"),
    Case("source-is-a-file", lambda env: env.data.update(sources=[str(env.write("lora.safetensors", "x"))]),
         "{inputs}/lora.safetensors is a file; pass the adapter directory that holds adapter_config.json"),
    Case("not-a-peft-adapter", lambda env: (env.source() / "adapter_config.json").unlink(),
         "{inputs}/qwen2-adapter is not a PEFT adapter: adapter_config.json is missing"),
    Case("adapter-config-not-json", lambda env: (env.source() / "adapter_config.json").write_text("{"),
         "{inputs}/qwen2-adapter/adapter_config.json is not valid JSON (<…>); re-save the adapter with PEFT"),
    Case("not-lora", lambda env: _edit_json(env.source() / "adapter_config.json", peft_type="IA3"),
         "{inputs}/qwen2-adapter has `peft_type: IA3`; HeteroFusion fuses LoRA adapters only"),
    Case("dora", lambda env: _edit_json(env.source() / "adapter_config.json", use_dora=True),
         "{inputs}/qwen2-adapter is a DoRA adapter; only plain LoRA is supported (retrain without use_dora)"),
    Case("adapter-without-weights", lambda env: (env.source() / "adapter_model.safetensors").unlink(),
         "{inputs}/qwen2-adapter has no adapter_model.safetensors; it is not a complete PEFT adapter"),
    Case("safetensors-corrupt", lambda env: (env.source() / "adapter_model.safetensors").write_bytes(b"\0" * 100),
         "{inputs}/qwen2-adapter/adapter_model.safetensors is corrupt or truncated (Error while deserializing "
         "header: <…>); re-download or re-save it"),
    Case("safetensors-truncated", lambda env: _truncate(env.source() / "adapter_model.safetensors"),
         "{inputs}/qwen2-adapter/adapter_model.safetensors is corrupt or truncated (Error while deserializing "
         "header: incomplete metadata, file not fully covered); re-download or re-save it"),
    Case("nan-in-adapter", lambda env: _edit_tensors(env.source(), _poison(float("nan"))),
         "{inputs}/qwen2-adapter: tensor `base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight` contains "
         "1 NaN and 0 Inf values; the adapter is unusable (its training diverged?), retrain or re-export it"),
    Case("inf-in-adapter", lambda env: _edit_tensors(env.source(), _poison(float("-inf"))),
         "{inputs}/qwen2-adapter: tensor `base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight` contains "
         "0 NaN and 1 Inf values; the adapter is unusable (its training diverged?), retrain or re-export it"),
    Case("pickle-adapter", lambda env: _to_pickle(env.source(), "adapter_model"),
         "{inputs}/qwen2-adapter/adapter_model.bin is a pickle file, and loading pickles can run arbitrary code; "
         "convert it to safetensors, or set `allow_pickle: true` if you trust its author"),
    Case("lora-a-without-b", lambda env: _edit_tensors(env.source(), lambda t: t.pop(
        "base_model.model.model.layers.1.mlp.up_proj.lora_B.weight")),
         "{inputs}/qwen2-adapter: module `base_model.model.model.layers.1.mlp.up_proj` has no lora_B tensor; the "
         "adapter file is incomplete, re-save it with PEFT"),
    Case("target-adapter-for-another-base",
         lambda env: env.data.update(target_adapter=str(env.copy(env.zoo.adapter("mistral"), "mistral-adapter"))),
         "{inputs}/mistral-adapter: module `base_model.model.model.layers.0.mlp.gate_proj` takes 32 inputs but the "
         f"base model's config.json has `hidden_size: 64`; {OTHER_BASE}"),
    Case("target-adapter-update-misfits-its-base-weights", lambda env: _widen_target_down_proj(env),
         "target adapter module `base_model.model.model.layers.0.mlp.down_proj` is <…> but the base weight "
         "`model.layers.0.mlp.down_proj.weight` is <…>; the adapter was trained on a different base model"),
    Case("source-shapes-contradict-its-base-config",
         lambda env: _edit_json(env.source() / "adapter_config.json",
                                base_model_name_or_path=str(env.zoo.model("mistral"))),
         "{inputs}/qwen2-adapter: module `base_model.model.model.layers.0.mlp.gate_proj` takes 48 inputs but the "
         f"base model's config.json has `hidden_size: 32`; {OTHER_BASE}"),
    Case("source-deeper-than-its-base-config",
         lambda env: _edit_json(env.source("mistral") / "adapter_config.json",
                                base_model_name_or_path=str(_shallow_base(env, "mistral", layers=3))),
         "{inputs}/mistral-adapter: module `base_model.model.model.layers.3.mlp.down_proj` is in layer 3 but the "
         f"base model's config.json has `num_hidden_layers: 3`; {OTHER_BASE}"),
    Case("no-module-role-in-common", lambda env: (
        env.data.update(target_adapter=str(env.copy(env.zoo.adapter("llama", target_modules=["q_proj", "v_proj"]),
                                                    "llama-qv-adapter"))),
        env.source(target_modules=["gate_proj", "up_proj"])),
         "no target module has an aligned source module of the same role (target roles: q, v; source 0: gate, up); "
         "train the sources on the same kinds of projections (q, k, v, o, gate, up, down) as the target"),
    Case("update-mode-on-fused-target",
         lambda env: env.data.update(target_model=str(env.zoo.model("phi3")), target_adapter=str(env.zoo.adapter(
             "phi3")), update_mode="a_only"),
         "`update_mode: a_only` cannot update the shared A of fused projections (phi3 target); use "
         "`update_mode: b_only`"),
    # --- the replay file (read after the target model: file:line in every row error) ---------------------------
    Case("replay-missing", _set(replay="/nonexistent/replay.jsonl"),
         "replay file /nonexistent/replay.jsonl does not exist; pass a JSONL file with one example per line"),
    Case("replay-is-a-directory", lambda env: env.data.update(replay=str(env.write("r/x.jsonl", "").parent)),
         "replay file {inputs}/r is a directory, not a file; pass a JSONL file with one example per line"),
    Case("replay-empty", lambda env: env.replay("replay.jsonl", "\n\n"),
         "replay file {inputs}/replay.jsonl is empty; add at least one example (one JSON object per line)"),
    Case("replay-json-array", lambda env: env.replay("replay.jsonl", '[\n{"prompt": "a", "response": "b"}\n]\n'),
         "{inputs}/replay.jsonl:1: not valid JSON (Expecting value at column 2) (this looks like a JSON array: write "
         "one object per line instead); write one JSON object per line"),
    Case("replay-not-jsonl", lambda env: env.replay("replay.csv", "prompt,response\nhi,there\n"),
         "{inputs}/replay.csv:1: not valid JSON (Expecting value at column 1); write one JSON object per line"),
    Case("replay-row-of-unknown-shape",
         lambda env: env.replay("replay.jsonl",
                                '{"prompt": "a", "response": "b"}\n\n{"question": "a", "answer": "b"}\n'),
         "{inputs}/replay.jsonl:3: row has keys `question`, `answer`; " + SHAPES),
    Case("replay-row-without-response",
         lambda env: env.replay("replay.jsonl", '{"prompt": "a", "response": "b"}\n{"prompt": "a"}\n'),
         "{inputs}/replay.jsonl:2: row lacks `response`; " + SHAPES),
    Case("replay-chat-without-answer",
         lambda env: env.replay("replay.jsonl", '{"messages": [{"role": "user", "content": "hi"}]}\n'),
         "{inputs}/replay.jsonl:1: the last message has role `user`; it must be the `assistant` response"),
    # --- Hub references in a fuse config (resolved through the lock of `hf-heterofusion pull`) -----------------
    Case("hub-id-never-pulled", _set(target_adapter="alice/llama-lora"),
         f"target adapter `alice/llama-lora` {PULL_HINT}"),
    Case("hub-id-not-in-lock", lambda env: (_lock(env, '{"version": 1, "repos": {}}'),
                                            env.data.update(target_adapter="alice/llama-lora")),
         "`alice/llama-lora` is not pinned in {root}/heterofusion.lock.json; run `hf-heterofusion pull` on the "
         "config first"),
    Case("hub-bad-repo-id", lambda env: (_lock(env, '{"version": 1, "repos": {}}'),
                                         env.data.update(sources=["not a repo!!"])),
         "`not a repo!!` is not a valid Hub repo id (expected `namespace/name[@revision]`) and no such local path "
         "exists"),
    Case("hub-lock-file-corrupt", lambda env: (_lock(env, "{"), env.data.update(target_adapter="alice/llama-lora")),
         "cannot read lock file {root}/heterofusion.lock.json (<…>); delete it and run `hf-heterofusion pull`"),
    # --- the output directory --------------------------------------------------------------------------------
    Case("output-not-empty", lambda env: (env.out.mkdir(), (env.out / "keep.txt").write_text("mine")),
         "output directory {out} exists and is not empty; pass --overwrite to replace it"),
    Case("output-is-a-file", lambda env: env.out.write_text("mine"),
         "output path {out} is a file, not a directory; choose another output path"),
]


def _lock(env: Env, text: str) -> None:
    (env.root / "heterofusion.lock.json").write_text(text)


def _to_pickle(folder: Path, stem: str) -> None:
    path = folder / f"{stem}.safetensors"
    torch.save(load_file(path), folder / f"{'pytorch_model' if stem == 'model' else stem}.bin")
    path.unlink()


def _shallow_base(env: Env, family: str, *, layers: int) -> Path:
    base = env.copy(env.zoo.model(family), f"{family}-{layers}-layer-config")
    _edit_json(base / "config.json", num_hidden_layers=layers)
    return base


@pytest.fixture()
def base_config(make_config) -> dict:
    """A valid small config (Llama target, one Qwen2 source, one training step) as the user would write it."""
    return make_config(sources=("qwen2",), max_steps=1).model_dump(mode="json", exclude_defaults=True)


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(argv)  # an unexpected exception would propagate here, with its traceback
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_line_error_exit_2_and_writes_nothing(case, base_config, fixture_zoo, tmp_path, capsys):
    env = Env(tmp_path, fixture_zoo, dict(base_config))
    env.inputs.mkdir()
    case.setup(env)
    extra = [a for a in env.args if a not in ("delete-config", "config-dir")]
    if "config-dir" in env.args:
        env.cfg.mkdir()
    elif "delete-config" not in env.args:
        env.cfg.write_text(env.config_text if env.config_text is not None else yaml.safe_dump(env.data))
    before = _snapshot(tmp_path)

    code, out, err = run_cli(["fuse", str(env.cfg), str(env.out), *extra], capsys)

    assert code == 2, err
    assert "Traceback" not in out + err
    last = err.rstrip("\n").split("\n")[-1]
    assert err.count("error: ") == 1 and last.startswith("error: "), err
    assert re.fullmatch(_pattern(case.message, env), last.removeprefix("error: ")), last
    assert _snapshot(tmp_path) == before  # no output, staging or work folder, and inputs untouched


def test_at_least_25_distinct_core_cases():
    assert len({c.id for c in CASES}) == len(CASES)
    assert len([c for c in CASES if not c.id.startswith("hub-")]) >= 25


@pytest.mark.integration
def test_console_script_prints_one_line_and_exits_2(tmp_path):
    """The installed `hf-heterofusion` entry point, not just `cli.main`: exit status 2 and no traceback."""
    import subprocess
    import sys

    cfg = tmp_path / "cfg.yml"
    cfg.write_text("target_model: m\ntarget_adapter: a\nsources: [s]\nreplay: r.jsonl\nmu_gat: 0.2\n")
    script = Path(sys.executable).parent / "hf-heterofusion"
    proc = subprocess.run([str(script), "fuse", str(cfg), str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == f"error: {cfg}: unknown key `mu_gat`; did you mean `mu_gate`?\n"
    assert proc.stdout == "" and not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- handled, not refused (documented)


@pytest.mark.integration
@pytest.mark.filterwarnings("default::hf_heterofusion.errors.HeteroFusionWarning")
def test_unequal_source_rank_is_refactored_by_svd_and_energy_reported(base_config, fixture_zoo, tmp_path, capsys):
    """Source rank 8 vs target rank 4: no error; the source is re-factored, the energy kept is in the report, and
    the CLI warns on one line when under 80 % of it was kept."""
    cfg = tmp_path / "cfg.yml"
    data = dict(base_config, sources=[str(fixture_zoo.adapter("qwen2", r=8, seed=10))], max_steps=0)
    data.pop("replay")
    cfg.write_text(yaml.safe_dump(data))
    code, out, err = run_cli(["fuse", str(cfg), str(tmp_path / "out")], capsys)
    assert code == 0, err
    source = json.loads((tmp_path / "out" / "fusion_report.json").read_text())["sources"][0]
    assert source["original_rank"] == 8 and source["rank"] == 4 and 0.5 < source["energy_kept"] < 1.0
    warning = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert source["energy_kept"] < 0.8  # this fixture keeps ~72 %: the warning must be on the console
    assert any(f"keeps only {source['energy_kept']:.0%} of its update's energy" in line
               and "use an anchor of rank >= 8" in line for line in warning), warning


@pytest.mark.integration
@pytest.mark.filterwarnings("default::hf_heterofusion.errors.HeteroFusionWarning")
def test_long_replay_examples_are_truncated_with_a_counted_warning(base_config, tmp_path, capsys):
    """Examples longer than `max_length` are kept (truncated), and the CLI says how many, on one line."""
    cfg = tmp_path / "cfg.yml"
    cfg.write_text(yaml.safe_dump(dict(base_config, max_length=8)))
    code, out, err = run_cli(["fuse", str(cfg), str(tmp_path / "out")], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "fusion_report.json").read_text())["training"]
    warning = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert warning == [f"warning: {report['truncated']} of 8 replay examples exceed max_length=8 tokens and were "
                       f"truncated (lines 1, 2, 3, 4, 5, ...); raise `max_length` to keep them whole"]
    assert report["truncated"] == report["replay_examples"] == 8  # none silently dropped


@pytest.mark.integration
def test_output_directory_is_replaced_with_overwrite(base_config, tmp_path, capsys):
    cfg = tmp_path / "cfg.yml"
    data = dict(base_config, max_steps=0)
    data.pop("replay")
    cfg.write_text(yaml.safe_dump(data))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old")
    code, _, err = run_cli(["fuse", str(cfg), str(tmp_path / "out"), "--overwrite"], capsys)
    assert code == 0, err
    assert not (tmp_path / "out" / "old.txt").exists() and (tmp_path / "out" / "adapter_model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.yml", "out"]  # no staging or old copy left


def test_pickle_adapter_loads_when_explicitly_allowed(base_config, fixture_zoo, tmp_path):
    source = Path(shutil.copytree(fixture_zoo.adapter("qwen2", seed=10), tmp_path / "qwen2-bin"))
    _to_pickle(source, "adapter_model")
    prepared = prepare(FusionConfig.from_mapping(dict(base_config, sources=[str(source)], allow_pickle=True)))
    assert source_reports(prepared)[0].roles == ("down", "gate", "k", "o", "q", "up", "v")


def test_remote_code_model_passes_the_check_only_when_allowed(make_config, fixture_zoo, tmp_path):
    model = Path(shutil.copytree(fixture_zoo.model("llama"), tmp_path / "llama"))
    _edit_json(model / "config.json", auto_map={"AutoModel": "x.X"})
    allowed = make_config(sources=("qwen2",), max_steps=1, trust_remote_code=True)
    assert _read_model_config(model, allowed)["auto_map"] == {"AutoModel": "x.X"}


def test_unreadable_adapter_config_is_a_clear_error(fixture_zoo, tmp_path, monkeypatch):
    """Permissions cannot be taken away from root, so the read itself is made to fail."""
    adapter = Path(shutil.copytree(fixture_zoo.adapter("qwen2", seed=10), tmp_path / "qwen2"))
    read_text = Path.read_text

    def deny(self, *args, **kwargs):
        if self.name == "adapter_config.json":
            raise PermissionError(13, "Permission denied", str(self))
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", deny)
    with pytest.raises(AdapterNotFoundError) as info:
        load_adapter(adapter)
    assert str(info.value) == f"cannot read {adapter}/adapter_config.json (Permission denied); check its permissions"


# ------------------------------------------------------------------------------------ no code runs from user data


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else (
                f"{func.value.id}.{func.attr}" if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                else "")
            yield node, name


def test_no_eval_exec_or_unsafe_unpickling_in_the_package():
    """Only safetensors by default: every `torch.load` is `weights_only=True`, and nothing evals or unpickles."""
    offenders = []
    files = [*PACKAGE_ROOT.rglob("*.py"), *(REPO_ROOT / "merge_methods").rglob("*.py")]
    for path in files:
        for node, name in _calls(ast.parse(path.read_text(encoding="utf-8"))):
            kwargs = {k.arg: k.value for k in node.keywords}
            unsafe_torch = name == "torch.load" and not (
                isinstance(kwargs.get("weights_only"), ast.Constant) and kwargs["weights_only"].value is True)
            remote = isinstance(kwargs.get("trust_remote_code"), ast.Constant) and kwargs[
                "trust_remote_code"].value is True
            if name in ("eval", "exec", "pickle.load", "pickle.loads", "yaml.load", "yaml.unsafe_load") \
                    or unsafe_torch or remote:
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}: {name}")
    assert offenders == []
