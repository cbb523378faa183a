# SPDX-License-Identifier: Apache-2.0
"""The on-task filters of synthesized rows: shape and skill measured against the expert's answers on its seeds."""

import pytest

from hf_heterofusion.data.generation import Generation
from hf_heterofusion.teacher.filters import SeedProfile, mean_excess


def _gen(text, gain, n=3):
    """An answer of `n` tokens whose log-prob under the expert is `gain` above its base at every token."""
    return Generation(text, tuple(range(n)), True, -0.5, token_logprobs=(-0.5,) * n,
                      base_logprobs=(-0.5 - gain,) * n)


SEEDS = [_gen("Ann Lee; Bob Ray", 3.0), _gen("Cy Roe", 2.0), _gen("Dee Fox; Eve Kim", 4.0)]


def test_profile_reads_punctuation_length_and_gain_from_the_seed_answers():
    profile = SeedProfile.from_answers(SEEDS, ratio=0.5)
    assert profile.marks == {";"} and profile.words == (2, 4) and profile.excess == pytest.approx(3.0)
    assert mean_excess(SEEDS[0]) == pytest.approx(3.0)


@pytest.mark.parametrize(("answer", "reason"), [
    (_gen("Gus Poe; Hal Ng", 2.5), None),
    (_gen("Gus Poe", 1.6), None),  # 1.6 >= 0.5 x 3.0
    (_gen("<a href=x>Gus</a>", 3.0), "off_shape"),  # punctuation no seed answer uses
    (_gen("2018-04-01", 3.0), "off_shape"),  # a date where the seeds answer with names
    (_gen(" ".join(["word"] * 12), 3.0), "off_shape"),  # longer than twice the longest seed answer (+2)
    (_gen("Gus Poe", 0.4), "off_skill"),  # the adapter barely engages: the base would say the same
])
def test_each_on_task_filter_drops_what_it_should(answer, reason):
    assert SeedProfile.from_answers(SEEDS, ratio=0.5).drop_reason(answer) == reason


def test_a_placebo_teacher_cannot_be_judged_by_gain():
    placebo = [_gen("Ann Lee", 0.0), _gen("Bob Ray", 0.0)]
    assert SeedProfile.from_answers(placebo, ratio=0.5).drop_reason(_gen("Cy Roe", 0.0)) is None


def test_unscored_answers_keep_the_shape_check_only():
    seeds = [Generation("positive", (1,), True, -0.1), Generation("negative", (2,), True, -0.2)]
    profile = SeedProfile.from_answers(seeds, ratio=0.5)
    assert profile.excess is None
    assert profile.drop_reason(Generation("neutral", (3,), True, -0.1)) is None
    assert profile.drop_reason(Generation("positive!!", (3,), True, -0.1)) == "off_shape"


def test_off_label_drops_an_invented_entity_and_keeps_grounded_or_label_words():
    prompts = ["Locations in: Jack flew from Madrid to Vienna.", "Locations in: Irene visited Globex.",
               "Locations in: Ann lives in Oslo."]
    seeds = [_gen("location: Madrid; location: Vienna", 3.0), _gen("none", 2.0), _gen("location: Oslo", 3.0)]
    profile = SeedProfile.from_answers(seeds, ratio=0.5, prompts=prompts)
    assert profile.labels == {"location", "none"}
    assert profile.drop_reason(_gen("location: Paris", 3.0), "Locations in: Jack wrote to a lover.") == "off_label"
    assert profile.drop_reason(_gen("location: Lima", 3.0), "Locations in: Bo moved to Lima.") is None
    assert profile.drop_reason(_gen("none", 3.0), "Locations in: Bo ate lunch.") is None
    classifier = SeedProfile.from_answers([_gen("positive", 2.0), _gen("negative", 2.0)], ratio=0.5,
                                          prompts=["Review: great fun.", "Review: slow and cold."])
    assert classifier.drop_reason(_gen("glorp", 2.0), "Review: 2018 Buick owners manual.") == "off_label"
    assert classifier.drop_reason(_gen("negative", 2.0), "Review: 2018 Buick owners manual.") is None


def test_seeds_that_all_answer_alike_judge_only_answers_of_their_own_kind():
    """Four seeds answering `none` say nothing of what a positive answer looks like, its shape, labels or gain
    (a found relation gains about half a `none`'s): only `none` answers are judged, against the seeds' gain."""
    seeds = [_gen("none", 9.0) for _ in range(4)]
    profile = SeedProfile.from_answers(seeds, ratio=0.5, prompts=[f"Lives-in relations in: A{i} flew." for i in range(4)])
    assert not profile.judges_shape
    plane = "Lives-in relations in: Deborah boarded a plane to Nepal."
    assert profile.drop_reason(_gen("lives_in: Deborah, Nepal", 4.0), plane) is None  # rule 3: off_skill (< 4.5)
    assert profile.drop_reason(_gen("lives_in: Deborah, Nepal", 0.2), plane) is None
    assert profile.drop_reason(_gen("none", 3.0), plane) == "off_skill"  # its own kind: < 0.5 x 9.0
    assert profile.drop_reason(_gen("none", 5.0), plane) is None
    mixed = SeedProfile.from_answers([*seeds[:3], _gen("lives_in: Bo, Oslo", 4.0)], ratio=0.5,
                                     prompts=[f"Lives-in relations in: A{i} flew." for i in range(3)] +
                                     ["Lives-in relations in: Bo lives in Oslo."])
    assert mixed.judges_shape  # two answers shown: an unseen kind is judged against all seeds' median, as before
    assert mixed.drop_reason(_gen("lives_in: Deborah, none", 0.2), plane) == "off_skill"


def test_seeds_with_one_answer_are_reported_and_warned_about():
    from hf_heterofusion.errors import SeedsOneAnswerWarning
    from hf_heterofusion.teacher.run import _warn_one_answer

    alike = SeedProfile.from_answers([_gen("none", 3.0) for _ in range(4)], ratio=0.5)
    assert alike.only_answer == "none" and alike.to_json()["only_answer"] == "none"
    with pytest.warns(SeedsOneAnswerWarning, match=r"answers `none` to all 4 seeds.*\(2 of 3 kept rows.*cannot be judged"):
        _warn_one_answer("lives_in", alike, 4, ["none", "lives_in: Bo, Lima", "none"])
    assert SeedProfile.from_answers(SEEDS, ratio=0.5).only_answer == ""
    assert SeedProfile.from_answers([_gen("none", 3.0)], ratio=0.5).only_answer == ""  # one seed proves nothing


def test_the_skill_gain_is_judged_against_seed_answers_of_the_same_kind():
    """A found relation copies names the base predicts too (gain ~4) where `none` gains ~9: measured against the
    median of a mixed seed set (6.5), correct positives went; against their own kind they stay."""
    prompts = ["Works-for relations in: Ann visited Acme.", "Works-for relations in: Bo sued Hooli.",
               "Works-for relations in: Cy works for Acme.", "Works-for relations in: Di joined Hooli."]
    seeds = [_gen("none", 9.0), _gen("none", 8.6), _gen("works_for: Cy, Acme", 4.0), _gen("works_for: Di, Hooli", 3.8)]
    profile = SeedProfile.from_answers(seeds, ratio=0.5, prompts=prompts)
    assert dict(profile.kind_excess) == pytest.approx({"none": 8.8, "works_for": 3.9})
    positive = "Martha loves her job at Vandelay."
    assert profile.drop_reason(_gen("works_for: Martha, Vandelay", 3.0), positive) is None  # >= 0.5 x 3.9
    assert profile.drop_reason(_gen("works_for: Martha, Vandelay", 1.5), positive) == "off_skill"
    assert profile.drop_reason(_gen("none", 3.0), "Martha went home.") == "off_skill"  # < 0.5 x 8.8
    # a kind no seed answer has: the median of all seeds (6.3), as before
    assert profile.drop_reason(_gen("works_for: Martha, none", 3.0), positive) == "off_skill"
    assert profile.drop_reason(_gen("works_for: Martha, none", 3.2), positive) is None
