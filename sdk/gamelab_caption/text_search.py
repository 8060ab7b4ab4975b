"""Find games by the text read in an image: fuzzy matching of OCR reads against names.

A read title is noisy ("CBPTBIN SILVER", "GA12 GROU2D"), split over lines, surrounded by
"PUSH START BUTTON", copyright lines or a box's branding ("GOLD CARTRIDGE"), and may hold a
subtitle the catalogue drops or a sequel number spelt otherwise or not read. Each game is
known here by its names (every release's name and ROM file name) and by the text read in its
own catalogue images at index time, which carry the same logo and so the same misreads. Both
sides go through ``title_key`` and lose boilerplate words; rapidfuzz (a maintained C++
library) scores each pair.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .japanese import romanise
from .titles import title_key

# Words of title screens and boxes that name no game.
BOILERPLATE = frozenset(
    """push press start button buttons pull trigger to sega master system mark iii
    presents presented copyright all rights reserved licensed license by from inc ltd co corp
    corporation tm r c reprogrammed programmed program game games select mode player players 1p 2p
    score hi high top credit credits insert coin version ver or and of the a an play
    cartridge card my mycard gold us""".split()  # boxes: "GOLD CARTRIDGE", "SEGA MY CARD"
)
# The genre banner in a corner of Sega's boxes: a line that is one of these, also misread
# ("SMULATION"), names no game, though a name may hold the word ("Shooting Gallery").
GENRE_BANNERS = ("action", "arcade", "puzzle", "roleplaying", "shooting", "simulation", "sports")
GENRE_MATCH = 83  # rapidfuzz ratio: "ACTLON" is a banner, "THE ARCADE" is not
# Short words of names that a read often misses or that OCR drops: a name's other words decide.
FUNCTION_WORDS = frozenset("the and of a an or to in on at by for from vs".split())
MIN_READ_CHARS = 3  # a cleaned read shorter than this is noise
MIN_SCORE = 0.5  # matches scoring less are not evidence
READ_WEIGHT = 0.2  # share of a key's score that depends on how much of the read it explains
SEQUEL_MISMATCH = 0.85  # factor on a match whose sequel numbers differ
WORD_MATCH = 0.75  # a key's word is in the read if a read word spells it this nearly
SHORT_KEY = 6  # keys of fewer letters score less: they appear in any read by chance
SHORT_READ = 8  # reads of fewer letters score less: a short misread matches many names
# A read word at least this many letters longer than a key's words is words run together
# ("MICROMACHINES", "EPACEGUN"): compared with the key without spaces, and a key word of
# MIN_INSIDE letters or more spelt inside it ("out" and "run" in "OUTRUN") counts as read.
RUN_TOGETHER = 3
WORD_TOGETHER = 0.85  # rapidfuzz ratio of such a read word to a key without spaces
MIN_INSIDE = 3
_SUBTITLE = re.compile(r"\s+-\s+|:\s+")  # "Title - Subtitle", "Title: Subtitle"
_HYPHEN = re.compile(r"(?<=\w)-(?=\w)")  # "E-SWAT", "R-Type": a logo writes them as one word
# long enough to be misread and still known: "EUTTON", "CSEGA", "PRESSSTAHT"
_MISREAD_BOILERPLATE = (
    "push", "press", "start", "button", "sega", "player", "copyright", "reserved", "rights",
    "licensed", "enterprises", "options", "presents", "mastersystem",
)  # fmt: skip
_SEQUEL = re.compile(r"[2-9]|I{2,3}|IV|VI{0,3}|IX", re.IGNORECASE)  # a line "2" or "III"


@dataclass(frozen=True)
class TextMatch:
    """Why a game matched the text read in a query.

    Attributes:
        score: similarity of the read and the game's text, 0..1.
        read: the query's text, as compared (cleaned).
        matched: the name or catalogue text it matched, as the catalogue has it.
        source: "name" (a release name or ROM file name) or the media kind whose read matched.
    """

    score: float
    read: str
    matched: str
    source: str


def _is_boilerplate(word: str, vocabulary: Collection[str] = ()) -> bool:
    """A boilerplate word, also misread ("eutton", "csega") or run together ("pressstart",
    "sega1993", "push1", "push1play"), as OCR gives them on title screens. Words of
    ``vocabulary`` (those of the catalogue's names) are never taken for misreads: "star" is
    not "start"."""
    from rapidfuzz import fuzz

    if word.isdigit():
        return len(word) >= 3  # years and scores; 1-2 digits are sequel numbers
    pieces = [piece for piece in re.split(r"\d+", word) if piece]
    if len(pieces) > 1 and all(_is_boilerplate(piece, vocabulary) for piece in pieces):
        return True  # "PUSH 1 PLAY" run together
    letters = word.strip("0123456789")
    if word in BOILERPLATE or letters in BOILERPLATE:
        return True
    if letters in vocabulary:
        return False
    if len(letters) >= 4 and any(fuzz.ratio(letters, w) >= 75 for w in _MISREAD_BOILERPLATE):
        return True
    return _joined(letters)


def _is_genre_banner(text: str) -> bool:
    """Whether a whole line is a box's genre banner ("SHOOTING", "ROLE PLAYING")."""
    from rapidfuzz import fuzz

    letters = re.sub(r"[^a-z]", "", text.lower())
    return any(fuzz.ratio(letters, banner) >= GENRE_MATCH for banner in GENRE_BANNERS)


def _joined(letters: str) -> bool:
    """Whether ``letters`` is two or more boilerplate words run together."""
    ends = {0}  # prefixes of ``letters`` made of whole boilerplate words
    for end in range(1, len(letters) + 1):
        if any(letters[start:end] in BOILERPLATE for start in ends if end - start >= 2):
            ends.add(end)
    return len(letters) in ends and letters not in BOILERPLATE


def clean_read(texts: Iterable[str], vocabulary: Collection[str] = ()) -> str:
    """Lines read in an image -> the words that may name a game, in reading order.

    Args:
        texts: the lines read.
        vocabulary: words that name games: never dropped as misread boilerplate, and kept
            even when boilerplate ("master", "star", "world") if their line holds another
            word of a name that is not ("CLOUD MASTER", but not "SEGA MASTER SYSTEM").
            A sequel number counts only beside a word that is not boilerplate ("2 PLAYERS"),
            or alone on its line ("2", "III") when another line holds the title. A line
            that is a genre banner ("ACTION") is dropped whole, unless its words are names'
            words and another line names a game too ("SHOOTING" over "GALLERY").
            Japanese words are read in romaji too (``japanese.romanise``: 孔雀王 is also a
            line "kujaku ou"), when the ``ocr`` extra's dictionary is installed.
    """
    texts = list(texts)
    # Japanese words as the romaji catalogues name the games in, each a line of its own
    texts += [romaji for romaji in map(romanise, texts) if romaji]
    lines = [title_key(text).split() for text in texts]
    dropped_lines = [[_is_boilerplate(word, vocabulary) for word in words] for words in lines]
    naming_lines = [
        any(
            len(word) >= 3 and word in vocabulary and not drop
            for word, drop in zip(words, dropped, strict=True)
        )
        for words, dropped in zip(lines, dropped_lines, strict=True)
    ]
    banners = [_is_genre_banner(text) for text in texts]
    for number, banner in enumerate(banners):
        if not banner:
            continue
        others = [naming for other, naming in enumerate(naming_lines) if not banners[other]]
        if not (any(others) and all(word in vocabulary for word in lines[number])):
            lines[number], dropped_lines[number], naming_lines[number] = [], [], False
    titled_lines = [
        any(not drop and not word.isdigit() for word, drop in zip(words, dropped, strict=True))
        for words, dropped in zip(lines, dropped_lines, strict=True)
    ]
    kept = []
    for number, (words, dropped) in enumerate(zip(lines, dropped_lines, strict=True)):
        titled = titled_lines[number]
        if not titled and _SEQUEL.fullmatch(texts[number].strip()):
            # a sequel number on a line of its own, under the title ("THE HEDGEHOG" / "2")
            titled = any(titled_lines)  # this line is not: another one holds the title
        naming = naming_lines[number]
        for word, drop in zip(words, dropped, strict=True):
            if word.isdigit():  # "2 PLAYERS", "PUSH 1": a number alone with boilerplate
                drop = drop or not titled
            elif drop:
                drop = not (naming and word in vocabulary)
            if not drop:
                kept.append(word)
    return " ".join(kept)


def _numbers(key: str) -> set[str]:
    return {word for word in key.split() if word.isdigit() and len(word) <= 2}


def similarity(read: str, text: str) -> float:
    """How well ``text`` (a game's name or read) is found in ``read`` (a query's), 0..1.

    Both are cleaned keys; see ``TitleMatcher.match`` for the measure.
    """
    matcher = TitleMatcher()
    matcher._add_key(0, text, text, "name")
    return float(matcher._scores(read)[0]) if len(matcher) else 0.0


class _KeyArrays(NamedTuple):
    """The keys of a TitleMatcher as arrays, for scoring reads against all of them at once."""

    words: np.ndarray  # every key's word numbers, key after key
    lengths: np.ndarray  # their letters that count (function words: 0)
    starts: np.ndarray  # (K,) where each key's words start
    totals: np.ndarray  # (K,) letters of each key that count
    numbers: list[frozenset[str]]  # (K,) sequel numbers each key is compared by
    joined: list[str]  # (K,) each key without spaces
    longest: np.ndarray  # (K,) letters of each key's longest word
    vocabulary: list[str]  # every word of every key, by number
    words_only: np.ndarray  # (K,) compared word by word, never as joined letters
    whole_names: dict[str, list[int]]  # a game's whole name without spaces -> its keys


class TitleMatcher:
    """Each game's texts, searched by the text read in a query.

    A key (a name or a read) scores by how much of it the read covers: each of its words
    counts, by its length, if some word of the read spells it nearly (rapidfuzz ratio >=
    WORD_MATCH). So extra words in the read (a subtitle, noise) cost nothing, a partial read
    ("alex in miracle world") scores the part it covers, and a one-word read no longer
    matches every long name that holds the word. Words run together ("SONICCHAOS") are
    compared without spaces as well, the whole read and each of its words that is longer than
    a key's words ("MICROMACHINES" amid noise), and a key's words spelt inside such a word
    count as read ("out" and "run" in "OUTRUN"); a differing sequel number costs
    SEQUEL_MISMATCH (a read made in a game's image without a number has its game's name's);
    function words ("the", "and") weigh nothing; keys shorter than SHORT_KEY letters are
    scaled down, as they appear in any read by chance, unless a line read is a game's whole
    name and nothing else ("ALF" over its copyright lines). READ_WEIGHT of a score is how much of
    the read the key explains, so that of two names a read covers, the one that accounts for
    more of it wins.
    Names with a subtitle are also known by their main title ("Phantasy Star III") and, when
    it has two words or more, by the subtitle alone ("The Tears of Opa-Opa" of "Fantasy Zone II
    - The Tears of Opa-Opa", as a title screen may show it), with its own sequel numbers and
    compared word by word only: its letters run together matched noise reads; and hyphenated
    ones also as one word ("E-SWAT" as "ESWAT", as its logo reads).

    Args:
        None; fill with ``add``.
    """

    def __init__(self):
        self._keys: list[str] = []  # cleaned, compared
        self._shown: list[str] = []  # as the catalogue or the reader had it
        self._games: list[int] = []
        self._sources: list[str] = []
        self._numbers: list[frozenset[str]] = []  # sequel numbers each key is compared by
        self._name_numbers: dict[int, frozenset[str]] = {}  # game -> those its names share
        self._seen: set[tuple[int, str]] = set()
        self._vocabulary: set[str] = set()  # words of the names
        self._words: dict[str, int] = {}  # every word of every key -> its number
        self._key_words: list[list[int]] = []
        self._words_only: list[bool] = []  # compared word by word, never as joined letters
        self._arrays = None  # numpy views of the keys, made on first match

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, game: int, text: str, source: str = "name") -> None:
        """Know game number ``game`` by ``text``: a name, or a read (``source`` its media kind).

        Reads go through the boilerplate filter, so add names first: their words are kept.
        """
        if source != "name":
            # A read without a number ("MORTAL KOMBAT" on Mortal Kombat II's screen, the "II"
            # unread) is compared as its game's name is, so it cannot pass for the first game.
            key = self.clean([text])
            numbers = _numbers(key) or self._name_numbers.get(game, frozenset())
            self._add_key(game, key, text, source, numbers)
            return
        key = title_key(text)
        self._vocabulary.update(key.split())
        known = self._name_numbers.get(game)
        numbers = frozenset(_numbers(key))
        self._name_numbers[game] = numbers if known is None else known & numbers
        self._add_key(game, key, text, source, numbers)
        main, *subtitle = _SUBTITLE.split(text, maxsplit=1)
        if subtitle:  # "Phantasy Star III - Generations of Doom": also "Phantasy Star III"
            # with the whole name's numbers: "Rambo - First Blood Part II" is no "Rambo"
            self._add_key(game, title_key(main), text, source, numbers)
            alone = title_key(subtitle[0])
            if len(alone.split()) >= 2:  # "Judgment Day", not "Special"
                self._add_key(game, alone, text, source, frozenset(_numbers(alone)), True)
        for variant in dict.fromkeys((text, main)):  # "E-SWAT" is read "ESWAT"
            unhyphenated = _HYPHEN.sub("", variant)
            if unhyphenated != variant:
                self._add_key(game, title_key(unhyphenated), text, source, numbers)
        romaji = title_key(romanise(text))  # a name in Japanese script, as a Japanese
        if romaji:  # catalogue writes it, is also known as its reads are romanised
            self._vocabulary.update(romaji.split())
            self._add_key(game, romaji, text, source, numbers)

    def _add_key(
        self,
        game: int,
        key: str,
        shown: str,
        source: str,
        numbers: frozenset[str] | None = None,
        words_only: bool = False,
    ) -> None:
        if len(key.replace(" ", "")) < MIN_READ_CHARS or (game, key) in self._seen:
            return
        self._words_only.append(words_only)
        self._numbers.append(frozenset(_numbers(key)) if numbers is None else numbers)
        self._seen.add((game, key))
        self._keys.append(key)
        self._shown.append(shown)
        self._games.append(game)
        self._sources.append(source)
        self._key_words.append([self._words.setdefault(w, len(self._words)) for w in key.split()])
        self._arrays = None

    def clean(self, texts: Iterable[str]) -> str:
        """``clean_read`` keeping the words of the names added so far."""
        return clean_read(texts, self._vocabulary)

    def _prepare(self):
        if self._arrays is None:
            words = np.array([i for key in self._key_words for i in key], np.int64)
            # function words weigh nothing unless a key has no other ("the" in "Streets of
            # Rage" is dropped as boilerplate from reads, or unread)
            lengths = np.array([len(w) for w in self._words], np.float64)[words]
            function = np.array([w in FUNCTION_WORDS for w in self._words])[words]
            starts = np.cumsum([0] + [len(key) for key in self._key_words[:-1]])
            content = np.add.reduceat(np.where(function, 0.0, lengths), starts)  # (K,)
            only_function = np.repeat(content == 0, [len(key) for key in self._key_words])
            lengths = np.where(function & ~only_function, 0.0, lengths)
            totals = np.add.reduceat(lengths, starts)  # (K,) letters of each key that count
            numbers = self._numbers
            joined = [key.replace(" ", "") for key in self._keys]
            longest = np.array([max(map(len, key.split())) for key in self._keys])  # (K,)
            vocabulary = list(self._words)
            words_only = np.array(self._words_only, bool)  # (K,)
            whole_names: dict[str, list[int]] = {}  # a name's letters -> its keys
            for position, (key, shown, source) in enumerate(
                zip(joined, self._shown, self._sources, strict=True)
            ):
                if source == "name" and title_key(shown).replace(" ", "") == key:
                    whole_names.setdefault(key, []).append(position)
            self._arrays = _KeyArrays(
                words,
                lengths,
                starts,
                totals,
                numbers,
                joined,
                longest,
                vocabulary,
                words_only,
                whole_names,
            )
        return self._arrays

    def _scores(self, read: str, lines: Iterable[str] = ()) -> np.ndarray:
        """(K,) similarity of every key to a cleaned read, made of the raw ``lines``."""
        from rapidfuzz import fuzz, process

        keys = self._prepare()
        words, lengths, starts, totals = keys.words, keys.lengths, keys.starts, keys.totals
        joined, longest, vocabulary = keys.joined, keys.longest, keys.vocabulary
        read_words = read.split()
        read_letters = np.array([len(word) for word in read_words], np.float64)  # (R,)
        ratios = process.cdist(vocabulary, read_words, scorer=fuzz.ratio)  # (W, R)
        ratios[self._inside(read_words)] = 100.0  # "out" in "OUTRUN" is read
        best = ratios.max(axis=1) / 100  # (W,) each word's best spelling in the read
        credit = np.where(best >= WORD_MATCH, best, 0.0)[words] * lengths
        covered = np.add.reduceat(credit, starts) / totals  # (K,)
        together = process.cdist([read.replace(" ", "")], joined, scorer=fuzz.ratio)[0] / 100
        together[keys.words_only] = 0.0
        # one read word spelling a key of several words without their spaces
        per_word = process.cdist(read_words, joined, scorer=fuzz.ratio) / 100  # (R, K)
        nearest = per_word.argmax(axis=0)  # (K,) the read word nearest each key
        run_together = read_letters[nearest] >= longest + RUN_TOGETHER  # (K,)
        word_together = np.where(run_together, per_word.max(axis=0), 0.0)
        word_together[(word_together < WORD_TOGETHER) | keys.words_only] = 0.0
        scores = np.maximum(np.maximum(covered, together), word_together)  # (K,)
        # and how much of the read each key explains: a read of "ASTERIX GREAT RESCUE" covers
        # "Asterix" whole, but "Asterix and the Great Rescue" explains more of it
        spelt = np.maximum.reduceat(ratios[words], starts, axis=0) >= 100 * WORD_MATCH  # (K, R)
        explained = np.maximum(spelt @ read_letters / read_letters.sum(), together)  # (K,)
        word_explained = np.where(word_together > 0, read_letters[nearest] / read_letters.sum(), 0)
        explained = np.maximum(explained, word_explained)
        scores = scores * (1.0 - READ_WEIGHT + READ_WEIGHT * explained)
        read_numbers = _numbers(read)
        sequel = [
            SEQUEL_MISMATCH if n != read_numbers and (n - {"1"} or read_numbers - {"1"}) else 1.0
            for n in keys.numbers
        ]
        # a few letters read ("sera", a misread SEGA) say little about which game it is
        letters = len(read.replace(" ", ""))
        informative = min(1.0, letters / SHORT_READ)
        short = np.minimum(1.0, totals / SHORT_KEY)
        for line in lines:  # a short name alone on its line is not there by chance
            short[keys.whole_names.get(self.clean([line]).replace(" ", ""), [])] = 1.0
        return scores * np.array(sequel) * short * informative

    def _inside(self, read_words: list[str]) -> np.ndarray:
        """(W, R) whether each known word is spelt inside a read word that runs words together:
        at least MIN_INSIDE letters, exactly, and RUN_TOGETHER letters short of the read word."""
        inside = np.zeros((len(self._words), len(read_words)), bool)
        for column, word in enumerate(read_words):
            for size in range(MIN_INSIDE, len(word) - RUN_TOGETHER + 1):
                for start in range(len(word) - size + 1):
                    row = self._words.get(word[start : start + size])
                    if row is not None:
                        inside[row, column] = True
        return inside

    def match(
        self,
        read: str,
        limit: int = 50,
        min_score: float = MIN_SCORE,
        *,
        lines: Iterable[str] = (),
    ) -> dict[int, TextMatch]:
        """The best match per game for a cleaned read, for up to ``limit`` games.

        Args:
            read: ``clean(lines)``.
            lines: the lines read, when known: a short name read alone on one counts whole.

        Returns:
            game number -> TextMatch, only matches scoring at least ``min_score``, best first.
        """
        if len(read.replace(" ", "")) < MIN_READ_CHARS or not self._keys:
            return {}
        scores = self._scores(read, lines)
        best: dict[int, TextMatch] = {}
        for position in np.argsort(-scores, kind="stable"):
            score = float(scores[position])
            if score < min_score or len(best) == limit:
                break
            game = self._games[position]
            if game not in best:
                shown, source = self._shown[position], self._sources[position]
                best[game] = TextMatch(score, read, shown, source)
        return best
