"""Tokenisation and the word vocabulary."""

from __future__ import annotations

import json

import pytest

from gamelab_caption.vocabulary import END, PAD, START, UNK, Vocabulary, tokenize

CAPTIONS = ["A dog runs.", "a cat sits", "The dog, the cat!", "zebra"]


def test_tokenize_lowercases_and_drops_punctuation():
    assert tokenize("A dog's BALL, on the grass!") == ["a", "dog's", "ball", "on", "the", "grass"]
    assert tokenize("  ...  ") == []


def test_special_tokens_come_first_with_fixed_ids():
    vocabulary = Vocabulary(["cat", "dog"])
    assert vocabulary.words[:4] == (PAD, START, END, UNK)
    assert (vocabulary.pad_id, vocabulary.start_id, vocabulary.end_id, vocabulary.unk_id) == (
        0,
        1,
        2,
        3,
    )
    assert len(vocabulary) == 6


def test_build_ranks_by_count_then_alphabetically():
    vocabulary = Vocabulary.build(CAPTIONS)
    # a, cat, dog, the: 2 each (alphabetical); runs, sits, zebra: 1 each (alphabetical)
    assert vocabulary.words[4:] == ("a", "cat", "dog", "the", "runs", "sits", "zebra")


def test_build_applies_min_count_and_max_words():
    assert Vocabulary.build(CAPTIONS, min_count=2).words[4:] == ("a", "cat", "dog", "the")
    assert Vocabulary.build(CAPTIONS, max_words=3).words[4:] == ("a", "cat", "dog")


def test_build_is_deterministic_whatever_the_caption_order():
    assert Vocabulary.build(CAPTIONS) == Vocabulary.build(list(reversed(CAPTIONS)))


def test_encode_wraps_in_start_and_end_and_decode_round_trips():
    vocabulary = Vocabulary.build(CAPTIONS)
    ids = vocabulary.encode("The cat runs.")
    assert ids[0] == vocabulary.start_id and ids[-1] == vocabulary.end_id
    assert vocabulary.decode(ids) == "the cat runs"


def test_unknown_words_become_unk():
    vocabulary = Vocabulary(["cat"])
    assert vocabulary.encode("cat purrs") == [1, 4, vocabulary.unk_id, 2]
    assert vocabulary.decode(vocabulary.encode("cat purrs")) == f"cat {UNK}"


def test_encode_max_length_cuts_words_not_specials():
    vocabulary = Vocabulary(["a", "b", "c"])
    assert vocabulary.encode("a b c", max_length=2) == [1, 4, 5, 2]


def test_decode_stops_at_end_and_skips_start_and_pad():
    vocabulary = Vocabulary(["a", "b"])
    assert vocabulary.decode([1, 4, 0, 5, 2, 4, 4]) == "a b"
    assert vocabulary.decode([2]) == ""


def test_save_then_load_gives_an_equal_vocabulary(tmp_path):
    vocabulary = Vocabulary.build(CAPTIONS)
    vocabulary.save(tmp_path / "vocab.json")
    assert Vocabulary.load(tmp_path / "vocab.json") == vocabulary


def test_load_rejects_a_file_without_special_tokens(tmp_path):
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps({"words": ["cat", "dog", "a", "b"]}))
    with pytest.raises(ValueError, match="must start with"):
        Vocabulary.load(path)


@pytest.mark.parametrize(
    ("words", "message"),
    [(["cat", "cat"], "unique"), (["cat", END], "special tokens")],
)
def test_bad_word_lists_raise_value_error(words, message):
    with pytest.raises(ValueError, match=message):
        Vocabulary(words)
