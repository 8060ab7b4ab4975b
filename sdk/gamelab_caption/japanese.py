"""Japanese text read in an image, in the romaji that catalogues name Japanese games with.

A Japanese box or title screen carries the title in kanji and kana (孔雀王), the catalogue the
romanised name ("Kujaku Ou (Japan)"). A kanji word's reading needs a dictionary: Sudachi's
small one (``sudachipy`` and ``sudachidict_small``, Apache-2.0) gives each word's reading in
katakana, and ``jaconv`` (MIT) spells it in Hepburn romaji. They live in the ``ocr`` extra
(110 MB of dictionary); without them nothing is romanised and such reads match no name.
"""

from __future__ import annotations

import functools
import re
import threading

# Two kana or CJK ideographs or more: one alone ("4.号", "用") is a misread or a label more
# often than a title. Latin letters, digits and punctuation around them stay as they are.
_JAPANESE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]{2,}")
_KATAKANA = re.compile(r"[\u30a0-\u30ff]+")
_local = threading.local()  # a Sudachi tokenizer is not to be shared between threads


@functools.cache
def japanese_available() -> bool:
    """Whether Sudachi and its dictionary are installed (the ``ocr`` extra)."""
    try:
        import jaconv  # noqa: F401
        import sudachidict_small  # noqa: F401
        import sudachipy  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def _dictionary():
    from sudachipy import Dictionary

    return Dictionary(dict="small")


def _tokenizer():
    if not hasattr(_local, "tokenizer"):
        _local.tokenizer = _dictionary().tokenizer()
    return _local.tokenizer


def has_japanese(text: str) -> bool:
    return _JAPANESE.search(text) is not None


def romanise(text: str) -> str:
    """The Japanese words of ``text`` in romaji, space-separated ("孔雀王" -> "kujaku ou").

    Words Sudachi has no reading for (a misread character) are left out; "" when nothing is
    Japanese or the dictionary is not installed.
    """
    if not has_japanese(text) or not japanese_available():
        return ""
    import jaconv

    words = []
    for span in _JAPANESE.findall(text):
        for morpheme in _tokenizer().tokenize(span):
            reading = morpheme.reading_form()
            if _KATAKANA.fullmatch(reading):  # "ー" lengthens a vowel: "ma-jan" -> "majan"
                words.append(jaconv.kana2alphabet(jaconv.kata2hira(reading)).replace("-", ""))
    return " ".join(words)
