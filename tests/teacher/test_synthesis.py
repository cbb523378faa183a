# SPDX-License-Identifier: Apache-2.0
"""The seeds' template is kept, only the varying parts are written, and bad parts are filtered and counted."""

from hf_heterofusion.teacher.synthesis import PartFilter, SeedTemplate, Steering


SEEDS = [
    "Extract the people.\nReview: Ann met Bob in Rome.\nAnswer:",
    "Extract the people.\nReview: We ate curry with Carl.\nAnswer:",
    "Extract the people.\nReview: Dana left.\nAnswer:",
]


def test_template_keeps_instruction_field_label_and_answer_cue():
    t = SeedTemplate.from_seeds(SEEDS)
    assert t.prefix == "Extract the people.\nReview: " and t.suffix == "\nAnswer:"
    assert t.parts == ("Ann met Bob in Rome.", "We ate curry with Carl.", "Dana left.")
    assert t.one_line and t.prompt("Eve sang.") == "Extract the people.\nReview: Eve sang.\nAnswer:"


def test_common_letters_are_not_cut_inside_a_word():
    t = SeedTemplate.from_seeds(["Topic: sports news today", "Topic: spring is here"])
    assert t.prefix == "Topic: " and t.parts == ("sports news today", "spring is here")


def test_seeds_without_shared_structure_are_written_whole():
    t = SeedTemplate.from_seeds(["alpha beta", "gamma delta"])
    assert (t.prefix, t.suffix) == ("", "") and t.parts == ("alpha beta", "gamma delta")


def test_list_context_and_reading_a_base_models_continuation():
    t = SeedTemplate.from_seeds(SEEDS)
    assert t.list_context(["A b.", "C d."]) == "1. A b.\n2. C d.\n3."
    assert t.read_item(" Frank met Gina.\n4. Another one", chat=False) == "Frank met Gina."
    assert t.read_item("   \n", chat=False) is None
    assert t.read_item('"Hal waved."', chat=True) == "Hal waved."


def test_a_chat_reply_is_read_past_its_lead_in_line():
    # What SmolLM2-135M-Instruct wrote as the prompt writer (benchmark v13): the item after a lead-in line, or a
    # lead-in alone, which was taken as the item and became a prompt (`Sentiment of: Here is a different example:`).
    t = SeedTemplate.from_seeds(SEEDS)
    assert t.read_item("Here is a new example:\nFrank met Gina.", chat=True) == "Frank met Gina."
    assert t.read_item("Here's a different one:\n\n\"Hal waved.\"\nHope it helps.", chat=True) == "Hal waved."
    assert t.read_item("Here's a different one:", chat=True) is None
    assert t.read_item("Here's a different one:\n", chat=True) is None
    assert t.read_item("Here's a different one:", chat=False) == "Here's a different one:"  # a base model's list
    # Seeds whose parts end with a colon: a colon-ended line is the text itself.
    colon = SeedTemplate.from_seeds(["Q: Ann said:\nA:", "Q: Bob wrote:\nA:"])
    assert colon.read_item("Carl asked:", chat=True) == "Carl asked:"


def test_filter_drops_lengths_outside_the_seeds_and_near_duplicates():
    t = SeedTemplate.from_seeds(SEEDS)  # parts 10 to 23 characters: accepted 5 to 46
    f = PartFilter(t)
    assert f.accept("Irene called Jack.")
    assert not f.accept("Ok")  # too short
    assert not f.accept("x" * 80)  # too long
    assert not f.accept("Ann met Bob in rome")  # the first seed again, up to case and punctuation
    assert not f.accept("Irene called Jack!")  # a part accepted before
    assert f.dropped == {"length": 2, "duplicate": 2}


def test_steering_groups_seeds_by_answer_kind_and_shares_the_prompts_out():
    s = Steering.from_kinds(["works_for", "none", "works_for", "none", "none"], 7)
    assert s.kinds == ("works_for", "none") and s.members == ((0, 2), (1, 3, 4))
    assert s.quotas == (4, 3) and [s.kind_of(q) for q in range(4)] == [0, 1, 0, 1]
    assert Steering.from_kinds(["none"] * 4, 8) is None  # one kind: nothing to steer between
