# SPDX-License-Identifier: Apache-2.0
import pytest

from hf_heterofusion.config import FusionConfig
from hf_heterofusion.method.align import align_layers
from hf_heterofusion.method.blocks import num_blocks


def test_tail_alignment_32_vs_28_pairs_target_4_to_31_with_source_0_to_27():
    pairs = align_layers(32, 28, "tail", 1.0)
    assert pairs == tuple((t, t - 4) for t in range(4, 32))


def test_tail_alignment_deeper_source_skips_its_bottom_layers():
    assert align_layers(28, 32, "tail") == tuple((t, t + 4) for t in range(28))


@pytest.mark.parametrize(
    ("mode", "ratio", "expected"),
    [
        ("tail", 0.25, tuple((t, t - 4) for t in range(25, 32))),  # deepest floor(28 * 0.25) = 7 pairs
        ("head", 0.25, tuple((i, i) for i in range(7))),
        ("head", 1.0, tuple((i, i) for i in range(28))),
        ("naive", 1.0, tuple((i, i) for i in range(28))),
        ("naive", 0.5, tuple((i, i) for i in range(14))),  # the FIRST floor(28 * 0.5) pairs, as the reference
        ("uniform", 1.0, tuple((round(i * 31 / 27), i) for i in range(28))),
    ],
)
def test_alignment_modes(mode, ratio, expected):
    assert align_layers(32, 28, mode, ratio) == expected


def test_transfer_ratio_keeps_at_least_one_pair():
    assert align_layers(4, 3, "tail", 0.01) == ((3, 2),)
    assert align_layers(4, 3, "head", 0.01) == ((0, 0),)
    assert align_layers(4, 3, "naive", 0.5) == ((0, 0),)
    assert align_layers(6, 3, "uniform", 1.0) == ((0, 0), (2, 1), (5, 2))


@pytest.mark.parametrize(("value", "ratio"), [("3/4", 0.75), ("1", 1.0), ("1/1", 1.0), (" 1 / 2 ", 0.5), (0.25, 0.25)])
def test_transfer_ratio_accepts_the_reference_fraction_strings(value, ratio):
    from pydantic import TypeAdapter

    from hf_heterofusion.merge_methods.heterofusion import parameter_specs

    data = dict(target_model="m", target_adapter="a", sources=["s"], replay="r.jsonl", transfer_ratio=value)
    assert FusionConfig.from_mapping(data).transfer_ratio == ratio
    spec = next(p for p in parameter_specs() if p.name == "transfer_ratio")  # mergekit validates the same type
    assert TypeAdapter(spec.value_type).validate_python(value) == ratio


# (A-blocks, B-blocks) per module at b=4096: the token counts of the paper's table.
DIMS = {
    "llama-3.1-8b": dict(hidden=4096, q=4096, kv=1024, ffn=14336),
    "qwen2.5-7b": dict(hidden=3584, q=3584, kv=512, ffn=18944),
    "gemma-2-2b": dict(hidden=2304, q=2048, kv=1024, ffn=9216),
}
EXPECTED = {
    "llama-3.1-8b": {"q": (1, 1), "k": (1, 1), "v": (1, 1), "o": (1, 1), "gate": (1, 4), "up": (1, 4), "down": (4, 1)},
    "qwen2.5-7b": {"q": (1, 1), "k": (1, 1), "v": (1, 1), "o": (1, 1), "gate": (1, 5), "up": (1, 5), "down": (5, 1)},
    "gemma-2-2b": {"q": (1, 1), "k": (1, 1), "v": (1, 1), "o": (1, 1), "gate": (1, 3), "up": (1, 3), "down": (3, 1)},
}


@pytest.mark.parametrize("model", list(DIMS))
def test_token_counts_match_the_paper_table(model):
    d = DIMS[model]
    shapes = {  # role -> (d_in, d_out)
        "q": (d["hidden"], d["q"]), "k": (d["hidden"], d["kv"]), "v": (d["hidden"], d["kv"]),
        "o": (d["q"], d["hidden"]), "gate": (d["hidden"], d["ffn"]), "up": (d["hidden"], d["ffn"]),
        "down": (d["ffn"], d["hidden"]),
    }
    counts = {role: (num_blocks(d_in, 4096), num_blocks(d_out, 4096)) for role, (d_in, d_out) in shapes.items()}
    assert counts == EXPECTED[model]
