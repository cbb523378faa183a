# SPDX-License-Identifier: Apache-2.0
"""The registered mergekit method `heterofusion`: spec, data-free kernel conformance, registration hooks."""

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from mergekit import merge_methods
from mergekit.merge_methods import BasePolicy, TensorGroup, merge_state_dicts

from hf_heterofusion.config import PARAMETER_KEYS, FusionConfig
from hf_heterofusion.merge_methods import METHOD_NAME, register_all
from hf_heterofusion.merge_methods import hook as startup_hook
from hf_heterofusion.merge_methods.heterofusion import heterofusion_kernel, svd_gate


@pytest.fixture(scope="module")
def method():
    register_all()
    return merge_methods.get(METHOD_NAME)


def _subprocess_env() -> dict:
    return dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


def test_register_all_is_idempotent(method):
    register_all()
    register_all()
    assert merge_methods.get(METHOD_NAME) is method
    assert [m.spec.name for m in merge_methods.registered_methods()].count(METHOD_NAME) == 1
    assert method.spec.pretty_name == "HeteroFusion"


def test_spec_declares_every_fusion_parameter_with_a_default(method):
    specs = {p.name: p for p in method.spec.parameters}
    assert set(specs) == {"weight", "density", "normalize", *PARAMETER_KEYS}
    assert not any(p.required for p in specs.values())  # mergekit's registry-wide test supplies none of them
    for key in PARAMETER_KEYS:
        assert specs[key].default == FusionConfig.model_fields[key].default
        assert specs[key].description
    assert specs["weight"].scope.value == "non_base"
    # FusionConfig's field constraints reach mergekit's own validation.
    with pytest.raises(ValueError):
        specs["lr"].validate(-1.0)
    with pytest.raises(ValueError):
        specs["density"].validate(1.5)
    assert specs["block_size"].validate("auto") == "auto"


@pytest.mark.parametrize("base", [True, False])
@pytest.mark.parametrize("density", [0.3, 0.7, 1.0])
def test_kernel_conformance_strided_finite_no_mutation(method, base, density):
    """mergekit's registry-wide check (random 6x4 group `w`, strided inputs), with and without a base."""
    assert method.spec.contract.base in (BasePolicy.OPTIONAL, BasePolicy.REQUIRED)
    generator = torch.Generator().manual_seed(42)
    tensors = [torch.randn(4, 6, generator=generator).T for _ in range(3)]
    assert all(not t.is_contiguous() for t in tensors)
    copies = [t.clone() for t in tensors]
    params = {"weight": 1.0, "density": density}
    base_id = 0 if base else None
    expected = merge_state_dicts([{"w": t.contiguous()} for t in tensors], method, base=base_id, parameters=params)
    actual = merge_state_dicts([{"w": t} for t in tensors], method, base=base_id, parameters=params)
    assert actual["w"].shape == (6, 4) and actual["w"].isfinite().all()
    torch.testing.assert_close(actual["w"], expected["w"])
    for tensor, before in zip(tensors, copies):
        torch.testing.assert_close(tensor, before)


def test_kernel_runs_on_defaults_alone(method):
    tensors = [torch.randn(6, 4) for _ in range(2)]
    out = merge_state_dicts([{"w": t} for t in tensors], method, base=0)["w"]
    assert out.isfinite().all()


def test_kernel_with_full_density_is_the_weighted_mean_of_deltas():
    base, a, b = torch.randn(8, 5), torch.randn(8, 5), torch.randn(8, 5)
    group = TensorGroup.from_tensors([base, a, b], ids=["base", "a", "b"], base_index=0, name="w")
    out = heterofusion_kernel(group, weight={"a": 1.0, "b": 3.0}, density=1.0, normalize=True)
    torch.testing.assert_close(out, base + (1.0 * (a - base) + 3.0 * (b - base)) / 4.0)
    summed = heterofusion_kernel(group, weight={"a": 1.0, "b": 3.0}, density=1.0, normalize=False)
    torch.testing.assert_close(summed, base + (a - base) + 3.0 * (b - base))


def test_kernel_without_base_is_the_weighted_average():
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    group = TensorGroup.from_tensors([a, b], ids=["a", "b"], name="w")
    out = heterofusion_kernel(group, weight={"a": 1.0, "b": 1.0}, density=0.5)
    torch.testing.assert_close(out, (a + b) / 2)


def test_svd_gate_removes_low_energy_noise():
    generator = torch.Generator().manual_seed(0)
    signal = torch.randn(64, 4, generator=generator) @ torch.randn(4, 48, generator=generator)  # rank 4
    noisy = signal + 0.05 * torch.randn(64, 48, generator=generator)
    gated = svd_gate(noisy, 0.98)
    assert torch.linalg.matrix_rank(gated) <= 8
    assert (gated - signal).norm() < 0.6 * (noisy - signal).norm()
    bias = torch.randn(7)
    assert svd_gate(bias, 0.5) is bias  # nothing to gate in a vector


def test_kernel_does_not_gate_vocabulary_tensors():
    base, a = torch.randn(16, 4), torch.randn(16, 4)
    group = TensorGroup.from_tensors([base, a], ids=["base", "a"], base_index=0, name="embed", vocabulary_axis=0)
    torch.testing.assert_close(heterofusion_kernel(group, weight={"a": 1.0}, density=0.1), a)


def test_pytest_plugin_registers_the_method():
    from hf_heterofusion.testing import pytest_plugin

    pytest_plugin.pytest_configure(None)
    assert merge_methods.get(METHOD_NAME).spec.name == METHOD_NAME


@pytest.mark.integration
def test_pth_hook_is_light_and_registers_in_a_fresh_interpreter(tmp_path):
    """The start-up `.pth` (as `hf-heterofusion mergekit-hook install` writes it) imports neither torch, mergekit
    nor pydantic at start-up, and mergekit's registry has `heterofusion` as soon as mergekit is imported."""
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    pth = startup_hook.install_pth(site_dir)
    assert pth.name.endswith(".pth") and startup_hook.pth_path(site_dir) == pth
    code = (
        "import site, sys\n"
        f"site.addsitedir({str(site_dir)!r})\n"  # what the interpreter does with the real site-packages
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'mergekit', 'pydantic'))\n"
        "assert not heavy, heavy\n"
        "import mergekit.merge_methods\n"  # what mergekit-yaml's first import of mergekit does
        "print(mergekit.merge_methods.get('heterofusion').spec.pretty_name)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_subprocess_env(),
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "HeteroFusion"
    assert startup_hook.uninstall_pth(site_dir) == pth and startup_hook.pth_path(site_dir) is None


def test_plain_mergekit_yaml_runs_heterofusion_once_registered(method, tmp_path, fixture_zoo):
    """mergekit's own `mergekit-yaml` entry point (unchanged) with the method registered: the data-free kernel."""
    from mergekit.scripts.run_yaml import main as mergekit_yaml

    models = [fixture_zoo.model("llama", seed=0), fixture_zoo.model("llama", seed=1)]
    # Absolute paths: mergekit's card asks the Hub about relative ones (network).
    config = tmp_path / "plain.yml"
    config.write_text(
        f"merge_method: heterofusion\nbase_model: {models[0]}\nmodels:\n"
        + "".join(f"  - model: {m}\n" for m in models)
        + "parameters: {density: 0.8}\n",
        encoding="utf-8",
    )
    mergekit_yaml([str(config), str(tmp_path / "out"), "--quiet"], standalone_mode=False)
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert "HeteroFusion" in (tmp_path / "out" / "README.md").read_text()  # mergekit's card names our method


@pytest.mark.integration
@pytest.mark.slow
def test_mergekit_own_regression_suite_passes_with_heterofusion_registered(tmp_path):
    """Download mergekit 0.1.5's sdist (its tests are not vendored: LGPL) and run its self-contained method tests
    with our pytest plugin: the registry-wide conformance test then includes `heterofusion`."""
    download = subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps", "mergekit==0.1.5",
         "-d", str(tmp_path)], capture_output=True, text=True, timeout=180,
    )
    if download.returncode != 0:
        pytest.skip(f"cannot download mergekit's sdist: {download.stderr.strip().splitlines()[-1:]}")
    (sdist,) = tmp_path.glob("mergekit-0.1.5.tar.gz")
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if "/tests/" in m.name and m.name.endswith(".py")]
        tar.extractall(tmp_path, members=members, filter="data")
    tests = next(tmp_path.glob("mergekit-0.1.5/tests"))
    files = [tests / "test_merge_method_regressions.py", tests / "test_merge_method_interface.py"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "hf_heterofusion.testing.pytest_plugin", "-p", "no:cacheprovider",
         "-o", "addopts=", *map(str, files)],
        capture_output=True, text=True, cwd=tmp_path, env=_subprocess_env(), timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    listed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "hf_heterofusion.testing.pytest_plugin",
         "-o", "addopts=", str(files[0])], capture_output=True, text=True, cwd=tmp_path, env=_subprocess_env(),
    )
    assert "[heterofusion]" in listed.stdout


def test_installed_package_maps_merge_methods_folder():
    import hf_heterofusion.merge_methods as package

    assert Path(package.__file__).parent.name == "merge_methods"
    assert Path(package.__file__).parent.parent == Path(__file__).resolve().parents[2]


@pytest.fixture()
def registry_without_heterofusion(monkeypatch):
    """mergekit's registry as it is before anything registered `heterofusion` (restored after the test)."""
    from mergekit.merge_methods import registry

    monkeypatch.setattr(registry, "_METHODS", {k: v for k, v in registry._METHODS.items() if k != METHOD_NAME})
    with pytest.raises(RuntimeError):
        merge_methods.get(METHOD_NAME)
    return registry


def test_hook_registers_at_once_when_mergekit_is_already_imported(registry_without_heterofusion):
    startup_hook.install_mergekit_hook()
    assert merge_methods.get(METHOD_NAME).spec.name == METHOD_NAME
    assert not any(getattr(f, "_hf_heterofusion_mergekit_hook", False) for f in sys.meta_path)


def test_import_hf_heterofusion_registers_the_method(registry_without_heterofusion):
    """`import hf_heterofusion` installs the hook (its lightness is checked by the `.pth` subprocess test)."""
    import importlib

    import hf_heterofusion

    if "install_mergekit_hook" not in Path(hf_heterofusion.__file__).read_text():
        pytest.skip("hf_heterofusion/__init__.py does not install the mergekit hook yet")
    importlib.reload(hf_heterofusion)
    assert merge_methods.get(METHOD_NAME).spec.name == METHOD_NAME


def test_readme_documents_every_parameter(method):
    readme = (Path(__file__).resolve().parents[2] / "merge_methods" / "README.md").read_text(encoding="utf-8")
    for spec in method.spec.parameters:
        assert f"| `{spec.name}` |" in readme, spec.name


def test_pyproject_lists_every_subpackage():
    """The `merge_methods/` mapping needs an explicit package list; a subpackage missing from it would be left
    out of wheels while still importing fine in an editable install."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    root = Path(__file__).resolve().parents[2]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(root).parts) for p in (root / "hf_heterofusion").rglob("__init__.py")}
    assert found | {"hf_heterofusion.merge_methods"} == listed


def test_peft_scaling_follows_peft_rules():
    from hf_heterofusion.merge_methods.planner import peft_scaling

    config = {"lora_alpha": 16, "alpha_pattern": {"q_proj": 32}}
    assert peft_scaling(config, "model.layers.0.self_attn.q_proj", 8) == 4.0  # pattern matches the name's tail
    assert peft_scaling(config, "model.layers.0.self_attn.k_proj", 8) == 2.0
    assert peft_scaling({"lora_alpha": 16, "use_rslora": True}, "model.layers.0.mlp.up_proj", 4) == 8.0
