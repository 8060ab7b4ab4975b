"""Game titles as comparable text: one normalisation for grouping releases and matching reads.

Catalogue names carry region and dump tags ("Alex Kidd (USA, Europe) (Rev 1)"), sequels are
spelt II or 2, "The" moves ("Ninja, The"), and OCR reads upper case with stray punctuation.
``title_key`` maps all of these to one lower-case, space-separated form, so regional releases
without a catalogue id group by it (catalog.py) and read text compares with names (text_search.py).
"""

from __future__ import annotations

import re
import unicodedata

_TAGS = re.compile(r"[\(\[][^\)\]]*[\)\]]")  # "(USA, Europe)", "[!]", "(Rev 1)"
_NOT_WORD = re.compile(r"[^0-9a-z]+")
# "I" and "X" are left alone: "I" is a word and "X" a letter in many titles ("X-Men").
_ROMAN = {"ii": "2", "iii": "3", "iv": "4", "v": "5", "vi": "6", "vii": "7", "viii": "8", "ix": "9"}
_MOVED_ARTICLE = re.compile(r"^(.*?),\s*(the|a|an)\b(.*)$", re.IGNORECASE)  # "Ninja, The - ..."


def title_key(title: str) -> str:
    """Lower-case words of a title without tags, accents, punctuation or a leading article.

    >>> title_key("Legend of Zelda, The - A Link to the Past (USA) [!]")
    'legend of zelda a link to the past'
    >>> title_key("Phantasy Star II (Japan)")
    'phantasy star 2'
    """
    text = _TAGS.sub(" ", title)
    moved = _MOVED_ARTICLE.match(text)
    if moved:
        text = moved.group(1) + moved.group(3)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    text = text.replace("&", " and ").replace("'", "")
    words = [_ROMAN.get(word, word) for word in _NOT_WORD.sub(" ", text).split()]
    if words and words[0] in ("the", "a", "an") and len(words) > 1:
        words = words[1:]
    return " ".join(words)
