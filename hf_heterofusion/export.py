# SPDX-License-Identifier: Apache-2.0
"""Stage 6: export (paper §2.7).

One no-grad pass of the nets gives `B' = B_T + alpha_m * dB` for every aligned module; every other target tensor is
copied unchanged and `adapter_config.json` comes from the target, so the result loads with
`PeftModel.from_pretrained(target_base, out_dir)`. Files are first written into a staging directory and moved into
place only when complete (`staged_output`), so an interrupted export never leaves a half-written output.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import save

from . import __version__
from .adapters import LoraAdapter, lora_key
from .constants import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME
from .errors import DiskFullError, OutputExistsError
from .fusion import FusionModel


@torch.no_grad()
def fused_tensors(fusion: FusionModel, target: LoraAdapter) -> tuple[dict[str, torch.Tensor], dict]:
    """The fused adapter's state dict (PEFT keys, target dtypes) and per-role statistics of the final nets."""
    fusion.eval()
    out = fusion(generator=None, with_stats=True)
    tensors = dict(target.tensors)
    for patches, factor in ((out.b_patches, "B"), (out.a_patches, "A")):
        for module, value in patches.items():
            key = lora_key(tensors, module, factor)
            tensors[key] = value.detach().to("cpu", tensors[key].dtype).contiguous()
    mass = out.stats["source_mass"]
    contribution = (mass / mass.sum()).tolist() if mass.sum() > 0 else [0.0] * len(mass)
    return tensors, {"roles": out.stats["roles"], "contribution": contribution}


def adapter_base_reference(target_model: str, sha: str | None) -> tuple[str, str | None]:
    """How the written adapter names its base: (`base_model_name_or_path`, `revision`).

    The Hub id and its pinned commit when the target came from the Hub (`sha` from the lock), else the path given
    in the config. Copying the anchor's field instead would name wherever the anchor was trained (often a folder
    that no longer exists, or null), and `AutoPeftModelForCausalLM` could not load the result.
    """
    if sha is not None:
        return target_model.split("@", 1)[0], sha
    return str(target_model), None


def write_adapter(out_dir: Path, target: LoraAdapter, tensors: dict[str, torch.Tensor], *,
                  base: tuple[str, str | None] | None = None) -> None:
    """Write a PEFT adapter directory: the target's config (naming `base`, see `adapter_base_reference`) and the
    fused tensors (safetensors)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    config = dict(target.config)
    if base is not None:
        config["base_model_name_or_path"], revision = base
        if revision is not None:
            config["revision"] = revision
    (out_dir / ADAPTER_CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    data = save(tensors, metadata={"format": "pt", "hf_heterofusion_version": __version__})
    (out_dir / ADAPTER_WEIGHTS_NAME).write_bytes(_sorted_metadata(data))


def _sorted_metadata(data: bytes) -> bytes:
    """The same safetensors bytes with `__metadata__` keys sorted.

    safetensors keeps the metadata in a Rust hash map, so its key order (and the file's bytes) changes from one
    process to the next; sorting makes the same fusion give the same file, which a resumed run is checked against.
    """
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    assert len(text) <= size, "reordering keys cannot lengthen the header"
    return data[:8] + text.ljust(size) + data[8 + size :]


def write_loss_plot(losses: list[dict], path: Path) -> None:
    """A PNG of the two training terms per optimiser step: replay CE and the RDM regulariser, each on its own axis.

    Their sum would hide the CE: RDM is on another scale and `lambda * RDM` can dominate the total.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_ce, ax_rdm) = plt.subplots(2, 1, figsize=(6, 4.4), dpi=100, sharex=True)
    if losses:
        steps = [r["step"] for r in losses]
        ax_ce.plot(steps, [r["ce"] for r in losses], label="replay CE", color="tab:blue")
        if all("rdm" in r for r in losses):
            ax_rdm.plot(steps, [r["rdm"] for r in losses], label="RDM (before lambda)", color="tab:orange")
    ax_ce.set_ylabel("replay CE")
    ax_rdm.set_ylabel("RDM")
    ax_rdm.set_xlabel("optimiser step")
    ax_ce.set_title("HeteroFusion transfer-net training")
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def check_output_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputExistsError(f"output path {out_dir} is a file, not a directory; choose another output path")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise OutputExistsError(f"output directory {out_dir} exists and is not empty; pass --overwrite to replace it")


@contextlib.contextmanager
def staged_output(out_dir: Path, *, overwrite: bool, needs_bytes: int | None = None) -> Iterator[Path]:
    """Yield a staging directory next to `out_dir`; on success it atomically replaces `out_dir`.

    On any failure the stage is deleted; a full disk (or quota) becomes a one-line `DiskFullError` that names
    `out_dir` and the space it needs (`needs_bytes` when the caller knows it, else what was written before).
    """
    out_dir = Path(out_dir)
    check_output_dir(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_stages(out_dir)
    stage = None
    try:
        stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.staging-{os.getpid()}-", dir=out_dir.parent))
        yield stage
    except BaseException as err:
        written = _tree_bytes(stage) if stage is not None else 0
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
        if is_disk_full(err):
            needs = f"~{_mb(needs_bytes)} MB" if needs_bytes else f"more than the {_mb(written)} MB it had written"
            raise DiskFullError(f"no space left on device while writing {out_dir} (needs {needs}); free space or "
                                f"choose another output folder") from None
        raise
    apply_umask(stage)
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        os.replace(out_dir, old)
    os.replace(stage, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
# How the libraries that write for us report it: safetensors' Rust writer raises `SafetensorError("... No space
# left on device (os error 28)")`, other writers wrap the OSError; match the errno or its strerror text.
_DISK_FULL_TEXT = tuple(os.strerror(code) for code in _DISK_FULL) + tuple(f"os error {code}" for code in _DISK_FULL)


def is_disk_full(err: BaseException) -> bool:
    """Whether `err` (or an exception it was raised from) says the device or the quota is full."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in _DISK_FULL:
            return True
        if isinstance(err, Exception) and any(text in str(err) for text in _DISK_FULL_TEXT):
            return True
        err = err.__cause__ or err.__context__
    return False


def _tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f}" if n < 10 * 2**20 else f"{n / 2**20:.0f}"


def apply_umask(root: Path) -> None:
    """Give the output the modes the user's umask asks for.

    `mkdtemp` creates the stage `0700` on purpose (nobody sees a half-written output), and some writers create files
    `0600`; the finished output must look like anything else the user creates (`0755`/`0644` under umask 022).
    """
    mask = os.umask(0)
    os.umask(mask)
    for path in (root, *root.rglob("*")):
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def _remove_stale_stages(out_dir: Path) -> None:
    """Delete staging folders that a killed export of `out_dir` left behind (their process no longer runs)."""
    for stale in out_dir.parent.glob(f".{out_dir.name}.staging-*"):
        pid = stale.name.removeprefix(f".{out_dir.name}.staging-").split("-", 1)[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else
        return True
    return True
