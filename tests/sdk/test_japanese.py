"""Japanese titles: romanise's readings, and the matcher finding games by a read in kanji."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

pytest.importorskip("sudachipy", reason="Japanese readings need sudachipy (the ocr extra)")
pytest.importorskip("rapidfuzz", reason="text matching needs rapidfuzz (the ocr extra)")

from gamelab_caption import text_search  # noqa: E402
from gamelab_caption.japanese import romanise  # noqa: E402
from gamelab_caption.text_search import TitleMatcher  # noqa: E402

GAMES = Path(__file__).resolve().parents[3] / "shared" / "data" / "games"
BOXES = GAMES / "libretro" / "Sega - Master System - Mark III" / "Named_Boxarts"
# Kujaku Ou's Japanese box, as the reader reads it (its catalogue image is SpellCaster's box)
KUJAKU_OU_BOX = ["GUL", "MARIKI/MASTERSYSTEM共用", "孔雀王", "SEGA"]


@pytest.mark.parametrize(
    ("text", "romaji"),
    [
        ("孔雀王", "kujaku ou"),  # kanji, read as a word: not each character's own reading
        ("熱球甲子園", "nekkyuu koushi en"),
        ("マージャン", "majan"),  # katakana, the long vowel mark dropped
        ("L夕肖像", "yuu shouzou"),  # Latin letters around it are not Japanese
        ("PUSH START BUTTON", ""),
        ("", ""),
    ],
)
def test_romanise_reads_japanese_words_in_romaji(text, romaji):
    assert romanise(text) == romaji


def test_romanise_gives_each_thread_the_same_readings():
    texts = ["孔雀王", "熱球甲子園", "上海", "魔王"] * 25
    expected = [romanise(text) for text in texts]
    found: dict[int, list[str]] = {}

    def read(worker: int) -> None:
        found[worker] = [romanise(text) for text in texts]

    threads = [threading.Thread(target=read, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(readings == expected for readings in found.values())


def _best(matcher: TitleMatcher, lines: list[str]) -> int | None:
    matches = matcher.match(matcher.clean(lines), lines=lines)
    return max(matches, key=lambda game: matches[game].score) if matches else None


def test_a_title_read_in_kanji_finds_its_romanised_name(monkeypatch):
    matcher = TitleMatcher()
    for game, name in enumerate(("SpellCaster (USA, Europe)", "Kung Fu Kid", "Kujaku Ou (Japan)")):
        matcher.add(game, name)
    assert _best(matcher, KUJAKU_OU_BOX) == 2
    monkeypatch.setattr(text_search, "romanise", lambda text: "")
    assert _best(TitleMatcher(), KUJAKU_OU_BOX) is None  # the kanji alone match no name


def test_a_name_in_japanese_script_is_found_by_a_read_in_either_script():
    matcher = TitleMatcher()
    matcher.add(0, "孔雀王")  # a Japanese catalogue's name
    matcher.add(1, "Kung Fu Kid")
    assert _best(matcher, ["KUJAKU OU"]) == 0
    assert _best(matcher, KUJAKU_OU_BOX) == 0


@pytest.mark.skipif(not BOXES.is_dir(), reason=f"libretro box art not found at {BOXES}")
def test_the_reader_reads_a_japanese_box_into_its_games_name():
    pytest.importorskip("rapidocr", reason="OCR needs rapidocr (the ocr extra)")
    from gamelab_caption.ocr import TextReader

    lines = [line.text for line in TextReader().read(BOXES / "Kujaku Ou (Japan).jpg")]
    assert "孔雀王" in lines
    matcher = TitleMatcher()
    for game, name in enumerate(("SpellCaster (USA, Europe)", "Kujaku Ou (Japan)")):
        matcher.add(game, name)
    assert _best(matcher, lines) == 1


@pytest.mark.skipif(not BOXES.is_dir(), reason=f"libretro box art not found at {BOXES}")
def test_lines_read_as_japanese_are_read_again_by_ppocrv5_and_latin_ones_are_not():
    pytest.importorskip("rapidocr", reason="OCR needs rapidocr (the ocr extra)")
    from gamelab_caption.ocr import TextReader

    reader = TextReader()
    assert reader._japanese_recogniser is not None  # the ocr extra ships PP-OCRv5
    box = BOXES / "Kenseiden (Japan).jpg"
    lines = [line.text for line in reader.read(box)]
    assert "剣聖伝" in lines  # PP-OCRv4 alone reads 刘聖位, a look-alike that names nothing
    matcher = TitleMatcher()
    for game, name in enumerate(("Kenseiden (Japan)", "Kung Fu Kid", "Ken no Hayashi")):
        matcher.add(game, name)
    assert _best(matcher, lines) == 0
    latin = BOXES.parent / "Named_Titles" / "Alf (USA).png"
    v4_only = TextReader()
    v4_only._japanese_recogniser = None
    assert [line.text for line in reader.read(latin)] == [line.text for line in v4_only.read(latin)]
