"""Beam search against exhaustive search and hand-built log-prob tables; no model needed."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from gamelab_caption.beam_search import beam_search, normalise

START, END, A, B, X, Y = range(6)  # token ids of the hand-built tables
VOCAB = 6


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _first_order_table(rows: dict[int, dict[int, float]], floor: float = 1e-3) -> np.ndarray:
    """(V, V) log-probs of the next token given the previous one; unnamed rows end at once."""
    table = np.full((VOCAB, VOCAB), floor)
    table[:, END] = 0.9
    for previous, probs in rows.items():
        table[previous] = floor
        for token, p in probs.items():
            table[previous, token] = p
    return np.log(table / table.sum(axis=1, keepdims=True))


def _second_order_tables(seed: int, images: int = 1, vocab: int = 5) -> np.ndarray:
    """(images, V, V, V) random log-probs of the next token given the previous two."""
    rng = np.random.default_rng(seed)
    return _log_softmax(rng.normal(scale=2.0, size=(images, vocab, vocab, vocab)))


def _second_order_step(tables: np.ndarray):
    """The hidden state carries the token before the previous one, so beams must reorder it."""

    def step(tokens, hidden, image_rows):
        before = hidden[:, 0].astype(np.int64)
        log_probs = tables[image_rows, before, tokens]  # (R, V)
        attention = np.eye(tables.shape[-1])[tokens]  # (R, V): one-hot of the input token
        return log_probs, tokens[:, None].astype(np.float32), attention

    return step


def _first_order_step(table: np.ndarray):
    return _second_order_step(np.broadcast_to(table, (1, VOCAB, *table.shape)))


def _search(step, images: int = 1, **options):
    hidden = np.full((images, 1), START, dtype=np.float32)
    return beam_search(step, hidden, start_id=START, end_id=END, **options)


def _exhaustive(
    table: np.ndarray,
    max_length: int,
    length_penalty: float,
    repeat_penalty: float = 0.0,
    repeatable: frozenset[int] = frozenset(),
):
    """Every finished caption of at most max_length tokens (<end> included), best first;
    each word generated again (unless repeatable) costs ``repeat_penalty``."""
    words = [t for t in range(table.shape[-1]) if t != END]
    found = []
    for length in range(max_length):
        for sequence in itertools.product(words, repeat=length):
            history = [START, START, *sequence, END]
            log_prob = sum(
                table[history[i], history[i + 1], history[i + 2]] for i in range(len(history) - 2)
            )
            repeats = sum(sequence[i] in sequence[:i] for i in range(length))
            repeats -= sum(
                sequence[i] in sequence[:i] and sequence[i] in repeatable for i in range(length)
            )
            log_prob -= repeat_penalty * repeats
            found.append((sequence, normalise(log_prob, length + 1, length_penalty)))
    return sorted(found, key=lambda item: -item[1])


def _greedy(table: np.ndarray, max_length: int):
    """Hand greedy decoding: (tokens, log_prob, finished)."""
    before, previous, tokens, log_prob = START, START, [], 0.0
    for step in range(max_length):
        token = int(np.argmax(table[before, previous]))
        if token == END:
            return tuple(tokens), log_prob + table[before, previous, token], True
        if step == max_length - 1:  # no room left for <end>: stop one word short
            break
        log_prob += table[before, previous, token]
        tokens.append(token)
        before, previous = previous, token
    return tuple(tokens), log_prob, False


# A greedy trap: A is likelier than B first (0.5 > 0.4), but every continuation of A is weak,
# so greedy finds "A X" (0.5 * 0.3 * 0.9 = 0.135) and beam 3 finds "B" (0.4 * 0.9 = 0.36).
TRAP = _first_order_table(
    {
        START: {A: 0.5, B: 0.4, X: 0.05, Y: 0.04},
        A: {X: 0.3, END: 0.25, Y: 0.25, B: 0.2},
        B: {END: 0.9, X: 0.05, Y: 0.05},
    }
)


@pytest.mark.parametrize("length_penalty", [0.0, 0.7, 1.0, 2.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wide_beam_returns_exhaustive_ranking(seed, length_penalty):
    tables = _second_order_tables(seed)
    max_length, words = 4, 4  # 85 finished + 256 unfinished sequences
    wide = sum(words**n for n in range(max_length + 1))
    [hypotheses] = _search(
        _second_order_step(tables),
        beam_size=wide,
        max_length=max_length,
        length_penalty=length_penalty,
    )
    expected = _exhaustive(tables[0], max_length, length_penalty)
    assert [h.tokens for h in hypotheses] == [tokens for tokens, _ in expected]
    assert [h.score for h in hypotheses] == pytest.approx([score for _, score in expected])
    assert all(h.finished for h in hypotheses)


def test_beam_escapes_greedy_trap():
    [greedy] = _search(_first_order_step(TRAP), beam_size=1, max_length=5)
    [beam] = _search(_first_order_step(TRAP), beam_size=3, max_length=5)
    assert greedy[0].tokens == (A, X)
    assert beam[0].tokens == (B,)
    assert beam[0].log_prob > greedy[0].log_prob
    assert beam[0].log_prob == pytest.approx(np.log(0.4 * 0.9), abs=0.01)


def test_unlikely_end_among_candidates_does_not_stop_search_early():
    # <end> ranks 3rd..4th of the 2K candidates at steps 1 and 2: kept as finished, these
    # poor captions ("", "A") would fill the K slots before "A X" (p = 0.49) can end.
    table = _first_order_table(
        {
            START: {A: 0.6, B: 0.3, X: 0.05, END: 0.04, Y: 0.01},
            A: {X: 0.9, END: 0.1},
            B: {X: 0.9, END: 0.1},
        }
    )
    [hypotheses] = _search(_first_order_step(table), beam_size=2, max_length=5)
    assert hypotheses[0].tokens == (A, X)
    assert hypotheses[0].log_prob == pytest.approx(table[START, A] + table[A, X] + table[X, END])


# K = 2 ends "A" and "B" fill the K finished slots at step 2, but the live "A X" ends next
# at a better per-token score: (0.5 * 0.54 * 0.78) ** (1/3) > (0.5 * 0.54) ** (1/2).
LATE_WINNER = _first_order_table(
    {
        START: {A: 0.5, B: 0.5},
        A: {END: 0.54, X: 0.46},
        B: {END: 0.52, Y: 0.48},
        X: {END: 0.78, B: 0.22},
        Y: {A: 0.8, END: 0.2},
    },
    floor=1e-12,
)


def _counting(step):
    """``step`` that counts its calls in ``step.calls``."""

    def counted(*args):
        counted.calls += 1
        return step(*args)

    counted.calls = 0
    return counted


def test_two_finished_words_do_not_stop_a_better_live_caption():
    [hypotheses] = _search(
        _first_order_step(LATE_WINNER),
        beam_size=2,
        max_length=3,
        length_penalty=1.0,
        early_stopping=False,
    )
    assert [h.tokens for h in hypotheses] == [(A, X), (A,)]
    assert [h.score for h in hypotheses] == pytest.approx([-0.5727, -0.6547], abs=1e-4)


def test_early_stopping_by_default_keeps_the_first_k_finished():
    """The default, as the bundles' length penalties were tuned: stop once K finished."""
    step = _counting(_first_order_step(LATE_WINNER))
    [hypotheses] = _search(step, beam_size=2, max_length=8, length_penalty=1.0)
    assert [h.tokens for h in hypotheses] == [(A,), (B,)]
    assert [h.score for h in hypotheses] == pytest.approx([-0.6547, -0.6735], abs=1e-4)
    assert step.calls == 2


@pytest.mark.parametrize("max_length", [3, 4, 5, 8])
def test_search_goes_on_while_a_live_beam_can_beat_the_finished_ones(max_length):
    [hypotheses] = _search(
        _first_order_step(LATE_WINNER),
        beam_size=2,
        max_length=max_length,
        length_penalty=1.0,
        early_stopping=False,
    )
    table = np.broadcast_to(LATE_WINNER, (VOCAB, VOCAB, VOCAB))
    expected = _exhaustive(table, max_length, length_penalty=1.0)[:2]
    assert [h.tokens for h in hypotheses] == [tokens for tokens, _ in expected]
    assert [h.score for h in hypotheses] == pytest.approx([score for _, score in expected])


@pytest.mark.parametrize(("length_penalty", "steps"), [(0.0, 2), (1.0, 6)])
def test_search_stops_once_no_live_beam_can_beat_the_finished_ones(length_penalty, steps):
    # Without a length penalty a score only falls: the live "B Y" (0.24) cannot beat the
    # finished "B" (0.26) after step 2. With one, "B Y A X <end>" wins at step 5 and nothing
    # live can beat the second best after step 6, two steps before max_length.
    step = _counting(_first_order_step(LATE_WINNER))
    _search(step, beam_size=2, max_length=8, length_penalty=length_penalty, early_stopping=False)
    assert step.calls == steps


@pytest.mark.parametrize("seed", range(5))
def test_beam_size_one_is_greedy(seed):
    tables = _second_order_tables(seed)
    [[best]] = _search(_second_order_step(tables), beam_size=1, max_length=6)
    tokens, log_prob, finished = _greedy(tables[0], max_length=6)
    assert (best.tokens, best.finished) == (tokens, finished)
    assert best.log_prob == pytest.approx(log_prob)


def test_no_end_within_max_length_returns_best_unfinished():
    never_ends = _first_order_table(
        {token: {X: 0.7, Y: 0.2, A: 0.1} for token in range(VOCAB)}, floor=1e-12
    )
    [hypotheses] = _search(_first_order_step(never_ends), beam_size=2, max_length=3)
    assert len(hypotheses) == 2
    assert not any(h.finished for h in hypotheses)
    # max_length counts <end>: an unfinished caption stops one word short of it.
    assert hypotheses[0].tokens == (X, X)
    assert hypotheses[0].log_prob == pytest.approx(2 * np.log(0.7), abs=1e-6)


def test_batch_of_different_lengths_matches_each_image_alone():
    tables = _second_order_tables(seed=7, images=3)
    tables[0, ..., END] += 4.0  # ends early
    tables[2, ..., END] = -40.0  # never ends: unfinished
    tables = _log_softmax(tables)
    options = {"beam_size": 3, "max_length": 5, "length_penalty": 0.7, "keep_attention": True}
    batch = _search(_second_order_step(tables), images=3, **options)
    alone = [_search(_second_order_step(tables[i : i + 1]), **options)[0] for i in range(3)]
    assert len({len(hypotheses[0].tokens) for hypotheses in batch}) > 1
    assert not batch[2][0].finished
    for together, single in zip(batch, alone, strict=True):
        assert [h.tokens for h in together] == [h.tokens for h in single]
        assert [h.finished for h in together] == [h.finished for h in single]
        assert [h.score for h in together] == pytest.approx([h.score for h in single])
        for h, s in zip(together, single, strict=True):
            np.testing.assert_allclose(h.attention, s.attention)


def test_attention_follows_each_hypothesis():
    [hypotheses] = _search(_first_order_step(TRAP), beam_size=3, max_length=5, keep_attention=True)
    for h in hypotheses:
        inputs = (START, *h.tokens) if h.finished else (START, *h.tokens[:-1])
        np.testing.assert_array_equal(h.attention, np.eye(VOCAB)[list(inputs)])


def test_same_input_gives_same_output():
    tables = _second_order_tables(seed=3, images=2)
    first = _search(_second_order_step(tables), images=2, beam_size=3, max_length=5)
    second = _search(_second_order_step(tables), images=2, beam_size=3, max_length=5)
    assert first == second


def test_scores_are_length_normalised_log_probs():
    [hypotheses] = _search(_first_order_step(TRAP), beam_size=3, max_length=5, length_penalty=1.0)
    for h in hypotheses:
        assert h.score == pytest.approx(h.log_prob / (len(h.tokens) + 1))
    assert [h.score for h in hypotheses] == sorted((h.score for h in hypotheses), reverse=True)


@pytest.mark.parametrize(
    ("option", "value"), [("beam_size", 0), ("max_length", 0), ("max_length", -1)]
)
def test_non_positive_sizes_raise_value_error_naming_the_value(option, value):
    with pytest.raises(ValueError, match=f"{option} must be >= 1, got {value}$"):
        _search(_first_order_step(TRAP), **{"beam_size": 3, "max_length": 5, option: value})


def test_suppressed_tokens_are_never_generated_even_when_most_likely():
    table = _first_order_table({START: {A: 0.6, X: 0.4}, A: {END: 1.0}, X: {END: 1.0}}, floor=1e-12)
    [[plain]] = _search(_first_order_step(table), beam_size=1, max_length=4)
    [[suppressed]] = _search(_first_order_step(table), beam_size=1, max_length=4, suppress_ids=(A,))
    assert plain.tokens == (A,)
    assert suppressed.tokens == (X,)


@pytest.mark.parametrize("repeatable", [frozenset(), frozenset({A})])
@pytest.mark.parametrize(("seed", "length_penalty"), [(0, 0.0), (1, 0.7), (2, 1.0)])
def test_wide_beam_with_repeat_penalty_returns_exhaustive_ranking(seed, length_penalty, repeatable):
    tables = _second_order_tables(seed)
    max_length, words = 4, 4
    wide = sum(words**n for n in range(max_length + 1))
    options = {"length_penalty": length_penalty, "repeat_penalty": 1.5}
    [hypotheses] = _search(
        _second_order_step(tables),
        beam_size=wide,
        max_length=max_length,
        repeatable_ids=repeatable,
        **options,
    )
    expected = _exhaustive(tables[0], max_length, repeatable=repeatable, **options)
    assert [h.tokens for h in hypotheses] == [tokens for tokens, _ in expected]
    assert [h.score for h in hypotheses] == pytest.approx([score for _, score in expected])


# Per token (length penalty 1), "A X A" (0.9 * 0.5 * 0.99 * 0.5: -0.375 a token) beats "A"
# (0.9 * 0.5: -0.399); once saying A again costs 0.5, "A X A" falls to -0.50 and "A" wins.
REPEATS = _first_order_table(
    {START: {A: 0.9, Y: 0.1}, A: {END: 0.5, X: 0.5}, X: {A: 0.99, B: 0.01}}, floor=1e-12
)


@pytest.mark.parametrize(
    ("repeat_penalty", "repeatable", "best"),
    [
        (0.0, frozenset(), (A, X, A)),
        (0.05, frozenset(), (A, X, A)),
        (0.5, frozenset(), (A,)),
        (0.5, frozenset({A}), (A, X, A)),
    ],
)
def test_repeat_penalty_gives_way_unless_the_word_is_repeatable(repeat_penalty, repeatable, best):
    [hypotheses] = _search(
        _first_order_step(REPEATS),
        beam_size=3,
        max_length=4,
        length_penalty=1.0,
        early_stopping=False,
        repeat_penalty=repeat_penalty,
        repeatable_ids=repeatable,
    )
    assert hypotheses[0].tokens == best
    likelihood = [0.9, 0.5, 0.99, 0.5] if len(best) == 3 else [0.9, 0.5]
    penalised = len(best) == 3 and A not in repeatable
    expected = np.log(likelihood).sum() - (repeat_penalty if penalised else 0.0)
    assert hypotheses[0].log_prob == pytest.approx(expected, abs=1e-6)
