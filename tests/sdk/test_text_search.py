"""Titles as text: title_key's normalisation, clean_read's boilerplate filter, and TitleMatcher
ranking games by noisy OCR reads of their names."""

from __future__ import annotations

import pytest

from gamelab_caption.text_search import MIN_SCORE, TextMatch, TitleMatcher, clean_read
from gamelab_caption.titles import title_key

pytest.importorskip("rapidfuzz", reason="text matching needs rapidfuzz (the ocr extra)")

NAMES = (  # game number = position
    "Phantasy Star II (Japan)",
    "Phantasy Star (USA, Europe)",
    "Phantasy Star III - Generations of Doom (USA)",
    "Castle of Illusion Starring Mickey Mouse (USA)",
    "Alex Kidd in Miracle World (USA, Europe)",
    "Alex Kidd - The Lost Stars (World)",
    "Sonic the Hedgehog 2 (Europe)",
    "Sonic the Hedgehog (USA, Europe)",
    "Golvellius - Valley of Doom (USA, Europe)",
    "Wonder Boy in Monster Land (USA, Europe)",
    "Sonic Chaos (Europe)",
    "NiGHTS into Dreams... (Japan)",
)


@pytest.fixture(scope="module")
def matcher() -> TitleMatcher:
    matcher = TitleMatcher()
    for game, name in enumerate(NAMES):
        matcher.add(game, name)
    return matcher


def _ranked(matcher: TitleMatcher, lines: list[str]) -> list[tuple[str, float]]:
    matches = matcher.match(matcher.clean(lines))  # as search does: names' words are kept
    ranked = sorted(matches.items(), key=lambda item: -item[1].score)
    return [(NAMES[game], match.score) for game, match in ranked]


def _matcher_of(*names: str) -> TitleMatcher:
    """A matcher knowing each name as the game of its position."""
    matcher = TitleMatcher()
    for game, name in enumerate(names):
        matcher.add(game, name)
    return matcher


def _best_game(matcher: TitleMatcher, lines: list[str]) -> int:
    """The game that the lines read match best, as search cleans and matches them."""
    matches = matcher.match(matcher.clean(lines))
    return max(matches, key=lambda game: matches[game].score)


@pytest.mark.parametrize(
    ("title", "key"),
    [
        ("Phantasy Star II (Japan)", "phantasy star 2"),
        ("PHANTASY STAR 2", "phantasy star 2"),
        ("Final Fantasy VI", "final fantasy 6"),
        ("Mega Man X (USA)", "mega man x"),  # "X" is a letter, not ten
        ("Ninja, The (Europe)", "ninja"),
        ("The Ninja", "ninja"),
        (
            "Legend of Zelda, The - A Link to the Past (USA) [!]",
            "legend of zelda a link to the past",
        ),
        (
            "Flintstones, The - The Rescue of Dino & Hoppy",
            "flintstones the rescue of dino and hoppy",
        ),
        ("Alex Kidd in Miracle World (USA, Europe) (Rev 1)", "alex kidd in miracle world"),
        ("Kirby's Adventure [b1]", "kirbys adventure"),
        ("Pokémon Pinball", "pokemon pinball"),
        ("Astérix (Europe) (En,Fr,De)", "asterix"),
        ("Dragon, Andromeda", "dragon andromeda"),  # "An" starts a word here: not moved
        ("ソニック", ""),  # no Latin letters: nothing left (catalog.py keeps the name)
    ],
)
def test_title_key_normalises_titles(title, key):
    assert title_key(title) == key


def test_title_key_makes_releases_and_reads_of_one_title_equal():
    assert title_key("Phantasy Star II (Japan)") == title_key("PHANTASY STAR 2")
    assert title_key("Ninja, The (USA)") == title_key("The Ninja (Europe) [!]")
    assert title_key("Astérix") == title_key("ASTERIX")
    assert title_key("Phantasy Star II") != title_key("Phantasy Star III")


@pytest.mark.parametrize(
    ("lines", "words"),
    [
        (["SONIC CHAOS", "PUSH START BUTTON", "©SEGA 1989"], "sonic chaos"),
        (["PRESS START", "© 1991 SEGA ENTERPRISES LTD.", "ALL RIGHTS RESERVED"], ""),
        (["PUSH STAPT EUTTON", "GOLVELLIUS", "CSEGA1988"], "golvellius"),  # misread boilerplate
        (["PRESSSTARTBUTTON", "PUSH1", "SEGA1993", "TM"], ""),  # run together, as OCR gives it
        (["SATELLTE7", "PUSH1PLAY START BUTTON", "PUSH 2 PLAY"], "satellte7"),
        (["MARBLE MADNESS", "TM ATARI GAMES"], "marble madness atari"),  # a publisher's "GAMES"
        (["LICENSED BY SEGA ENTERPRISES LTD"], ""),
        (["STREETS OF RAGE 2"], "streets rage 2"),  # a sequel number stays, a year goes
        (["WONDER BOY", "IN MONSTER LAND", "© SEGA 1988"], "wonder boy in monster land"),
        (["1P START", "2P START"], ""),
        (["2 PLAYERS", "PUSH 1 PLAY", "CLOUD MASTER"], "cloud"),  # numbers of boilerplate lines
        (["TM", "THE HEDGEHOG", "2"], "hedgehog 2"),  # a sequel number on its own line
        (["STREETS OF RAGE", "II"], "streets rage 2"),
        (["EDUSOFT", "2×2=", "3+7="], "edusoft"),  # sums, not sequel numbers
        (["GREAT", "30", "PUSH 1 PLAY START BUTTON"], "great"),  # a time or a score
        (["3.", "4.号", "5."], ""),  # numbers and nothing else
        (["GOLD CARTRIDGE", "BUBBLE BOBBLE"], "bubble bobble"),  # a Sega box's branding
        (["SEGA MY CARD MARK III", "GHOST HOUSE"], "ghost house"),
    ],
)
def test_clean_read_keeps_title_words_and_drops_boilerplate(lines, words):
    assert clean_read(lines) == words


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["PHANTASY STAR 2"], "Phantasy Star II (Japan)"),
        (["phantasy star II"], "Phantasy Star II (Japan)"),
        (["MICKEY MOUSE CASTLE OF LLUSION"], "Castle of Illusion Starring Mickey Mouse (USA)"),
        (["ALEX IN MIRACLE WORLD PUSH START BUTTON"], "Alex Kidd in Miracle World (USA, Europe)"),
        (["ALEX KIDD THE LOST STARS"], "Alex Kidd - The Lost Stars (World)"),
        (["SONIC THE HEDGEHOG 2"], "Sonic the Hedgehog 2 (Europe)"),
        (["SONIC THE HEDGEHOG", "PRESS START BUTTON"], "Sonic the Hedgehog (USA, Europe)"),
        (["GOLVELLIUS"], "Golvellius - Valley of Doom (USA, Europe)"),
        (
            ["WONDER BOY", "IN MONSTER LAND", "© SEGA 1988"],
            "Wonder Boy in Monster Land (USA, Europe)",
        ),
    ],
)
def test_noisy_reads_rank_the_right_game_first(matcher, lines, expected):
    ranked = _ranked(matcher, lines)
    assert ranked and ranked[0][0] == expected
    assert all(MIN_SCORE <= score <= 1.0 for _, score in ranked)


def test_sequel_numbers_separate_phantasy_star_from_its_sequels(matcher):
    first, second, third = NAMES[1], NAMES[0], NAMES[2]
    for lines, expected in [
        (["PHANTASY STAR"], first),
        (["PHANTASY STAR 2"], second),
        (["PHANTASY STAR III"], third),
    ]:
        ranked = dict(_ranked(matcher, lines))
        others = {first, second, third} - {expected}
        assert all(ranked[expected] > ranked.get(other, 0.0) for other in others), lines


def test_a_match_says_what_was_read_and_what_it_matched(matcher):
    matches = matcher.match(clean_read(["GOLVELLIUS", "PUSH START BUTTON"]))
    assert list(matches) == [8]
    assert matches[8] == TextMatch(matches[8].score, "golvellius", NAMES[8], "name")
    assert MIN_SCORE <= matches[8].score <= 1.0


@pytest.mark.parametrize(
    "lines",
    [["PUSH START BUTTON", "©SEGA 1989"], ["ZQXV WKPJ"], ["AB"], []],
    ids=["boilerplate", "unrelated", "too-short", "nothing"],
)
def test_a_read_that_names_no_game_matches_nothing(matcher, lines):
    assert matcher.match(clean_read(lines)) == {}


def test_match_returns_at_most_limit_games(matcher):
    read = clean_read(["PHANTASY STAR"])
    assert len(matcher.match(read)) >= 3
    assert list(matcher.match(read, limit=1)) == [1]


def test_text_read_in_catalogue_images_is_matched_with_its_kind():
    matcher = TitleMatcher()
    matcher.add(0, "Sonic Chaos (Europe)")
    matcher.add(1, "Sonic the Hedgehog (USA, Europe)")
    # OCR of a pixel font often drops spaces; the game's own title screen carries the same
    # logo, so its read (made at index time) matches the query's
    matcher.add(0, "SONICCHAOS PUSHSTARTBUTTON", "title_screen")
    size = len(matcher)
    matcher.add(0, "SONICCHAOS PUSHSTARTBUTTON", "title_screen")  # the same text again
    matcher.add(1, "PUSH START BUTTON ©SEGA 1991", "title_screen")  # only boilerplate
    matcher.add(1, "Ab", "name")  # too short to tell games apart
    assert len(matcher) == size == 3
    matches = matcher.match(matcher.clean(["SONICCHAOS", "PUSHSTARTBUTTON"]))
    assert max(matches, key=lambda game: matches[game].score) == 0
    assert matches[0].score == 1.0 and matches[0].score > matches.get(1, matches[0]).score - 1
    # the title screen's read alone finds the game too
    reads = TitleMatcher()
    reads.add(0, "SONICCHAOS PUSHSTARTBUTTON", "title_screen")
    reads.add(1, "Sonic the Hedgehog (USA, Europe)")
    found = reads.match(reads.clean(["SONICCHAOS", "PUSH START"]))
    assert max(found, key=lambda game: found[game].score) == 0
    assert (found[0].source, found[0].matched) == ("title_screen", "SONICCHAOS PUSHSTARTBUTTON")


def test_a_title_word_that_looks_like_boilerplate_still_matches(matcher):
    # "nights" ~ "rights", "star" ~ "start": kept, as words of the catalogue's names
    assert matcher.clean(["NIGHTS", "PRESS START"]) == "nights"
    assert matcher.clean(["PHANTASY STAR"]) == "phantasy star"
    assert [name for name, _ in _ranked(matcher, ["NIGHTS INTO DREAMS"])][:1] == [NAMES[11]]


def test_a_boilerplate_word_of_a_name_is_kept_beside_the_rest_of_the_name():
    # "master" names no game on a box's "SEGA MASTER SYSTEM", but it does in "CLOUD MASTER"
    vocabulary = {"cloud", "master", "darkness", "o"}
    assert clean_read(["CLOUD MASTER", "SEGA MASTER SYSTEM"], vocabulary) == "cloud master"
    assert clean_read(["MASTER OF DARKNESS"], vocabulary) == "master darkness"
    assert clean_read(["REPROGRAMMED GAME O SEGA"], vocabulary) == "o"  # "o" names nothing


def test_a_read_with_its_spaces_dropped_matches_the_name(matcher):
    assert [name for name, _ in _ranked(matcher, ["SONICCHAOS"])][:1] == [NAMES[10]]


def test_a_sequels_title_screen_read_without_its_number_is_not_the_first_game():
    # OCR often misses the "II" of a logo: the sequel's own screen then reads "MORTAL KOMBAT",
    # which must not outrank the first game's name for a query that reads the same
    matcher = TitleMatcher()
    matcher.add(0, "Mortal Kombat (Europe)")
    matcher.add(1, "Mortal Kombat II (Europe)")
    matcher.add(1, "MORTAL KOMBAT", "title_screen")
    matches = matcher.match(matcher.clean(["PAOWRY", "MORTAL KOMBAT"]))
    assert max(matches, key=lambda game: matches[game].score) == 0
    assert matches[0].score > matches[1].score
    # with the number read, the sequel's read and name win
    assert _best_game(matcher, ["MORTAL KOMBAT", "II"]) == 1


def test_short_words_a_read_misses_do_not_count_against_a_name():
    # "and the" are dropped from reads as boilerplate or not read at all: "Asterix and the Great
    # Rescue" is the game a box reading "ISTERX GREAT RESCUE" shows, not "Asterix"
    matcher = _matcher_of(
        "Asterix (Europe) (En,Fr) (Rev 1)", "Asterix and the Great Rescue (Europe, Brazil)"
    )
    assert _best_game(matcher, ["ACTION", "ISTERX GREAT RESCUE"]) == 1
    # a read of the first game's name alone still finds it
    assert _best_game(matcher, ["ASTERIX"]) == 0


def test_a_franchise_name_before_a_subtitle_keeps_the_games_sequel_number():
    # "Rambo - First Blood Part II" is also known as "Rambo", but as a second game: a read of
    # "RAMBO III" finds Rambo III
    matcher = _matcher_of("Rambo - First Blood Part II (USA)", "Rambo III (USA, Europe)")
    assert _best_game(matcher, ["RAMBO III"]) == 1
    assert _best_game(matcher, ["RAMBO II"]) == 0


def test_a_subtitle_read_alone_finds_its_game():
    # A title screen may show only the subtitle: Fantasy Zone II's reads "TOP 10000" and
    # "Thetears of OPA-OPA" (a real read), which found "Opa Opa" before the subtitle was a key
    matcher = _matcher_of(
        "Fantasy Zone II - The Tears of Opa-Opa (USA, Europe)",
        "Opa Opa (Japan)",
        "Terminator 2 - Judgment Day (Europe)",
        "Dragon - The Bruce Lee Story (Europe)",
    )
    assert _best_game(matcher, ["TOP", "10000", "Thetears of OPA-OPA"]) == 0
    assert _best_game(matcher, ["OPA OPA"]) == 1
    # with its own sequel numbers: no number in "Judgment Day" to differ from the read's
    assert _best_game(matcher, ["JUDGMENT DAY"]) == 2
    # compared word by word only: a noise read whose letters run together resemble
    # "thebruceleestory" (a real box read, 0.56 that way) matches nothing
    assert matcher.match(matcher.clean(["XULE", "TEOTOY"])) == {}


def test_a_boxs_genre_banner_names_no_game():
    # Sega's boxes carry "SHOOTING", "ACTION" or "ROLE PLAYING" in a corner: read alone on its
    # line (misread too), it must not find "Shooting Gallery" for Laser Ghost's box
    matcher = _matcher_of(
        "Shooting Gallery (USA, Europe)", "Laser Ghost (Europe)", "T2 - The Arcade Game (Europe)"
    )
    for banner in ("SHOOTING", "SHOOTINC", "ROLE PLAYING", "SMULATION", "ACTION"):
        assert matcher.clean([banner, "SEGA"]) == ""
    # the word still counts in a line that holds more than the banner
    assert matcher.clean(["SHOOTING GALLERY"]) == "shooting gallery"
    assert matcher.clean(["T2", "THE ARCADE", "GAME"]) == "t2 arcade"
    assert _best_game(matcher, ["SHOOTING", "SEGA", "LASER GHOST"]) == 1
    # and as a logo's own line, when another line holds a name's word too (a real title
    # screen's read; the banner rule had left "gallery" alone, too little to name the game)
    assert matcher.clean(["SHOOTING", "GALLERY", "@ SEGA 1987"]) == "shooting gallery"
    assert _best_game(matcher, ["SHOOTING", "GALLERY", "@ SEGA 1987"]) == 0


def test_of_two_names_a_read_covers_the_one_explaining_more_of_it_wins():
    # Both are known by their main title, "Simpsons": read whole, it covers both alike; the
    # rest of the read names one of them
    matcher = _matcher_of(
        "Simpsons, The - Bart vs. the World (Europe)",
        "Simpsons, The - Bart vs. the Space Mutants (Europe)",
    )
    matches = matcher.match(matcher.clean(["SIMPSONS", "BART VS THE SPACEMUTANTS"]))
    assert matches[1].score > matches[0].score
    matches = matcher.match(matcher.clean(["SIMPSONS", "BART VS THE WORLD"]))
    assert matches[0].score > matches[1].score


def test_a_hyphenated_name_is_found_when_its_logo_reads_as_one_word():
    matcher = _matcher_of(
        "Ultima IV - Quest of the Avatar (Europe)",
        "E-SWAT - City Under Siege (USA, Europe)",
        "R-Type (World)",
    )
    assert _best_game(matcher, ["ESWAT", "ULTIMATE FACTOR"]) == 1
    assert _best_game(matcher, ["RTYPE", "PUSH START BUTTON"]) == 2


def test_a_logo_read_as_one_word_among_other_reads_matches_the_name():
    # real reads of real title screens: the logo's words run together, amid noise
    matcher = _matcher_of(
        "Micro Machines (Europe)",
        "Space Gun (Europe)",
        "Champions of Europe (Europe)",
        "Captain Silver (Japan, Europe)",
    )
    assert _best_game(matcher, ["ORICIA", "MicroMachines", "INIATUG"]) == 0
    assert _best_game(matcher, ["EPACEGUN", "Tito", "CORP0RAT10N_1992"]) == 1
    assert _best_game(matcher, ["GHAMPIONSBFEUROPE", "UEFR 1987"]) == 2


def test_a_names_words_read_inside_one_run_together_word_count_as_read():
    # "OUTRUN" spells "Out Run" whole, and the "out" and "run" of "Battle Out Run": without
    # the second, the noise ("SIARI") would hand the read to the shorter name
    matcher = _matcher_of("Out Run (World)", "Battle Out Run (Europe)")
    assert _best_game(matcher, ["BATTLE", "OUTRUN", "SIARI"]) == 1
    assert _best_game(matcher, ["OUTRUN", "PRESS START"]) == 0


def test_a_short_name_read_alone_on_its_line_counts_whole():
    # Alf's title screen, as read: its name alone, over copyright lines that hold "Alien"
    matcher = _matcher_of("Alf (USA)", "Alien 3 (Europe)")
    lines = ["ALF", "@19895EGA", "TM and @ 19s9Alien productions"]
    read = matcher.clean(lines)
    assert 0 not in matcher.match(read)  # three letters anywhere in a read: maybe chance
    matches = matcher.match(read, lines=lines)
    assert max(matches, key=lambda game: matches[game].score) == 0
    assert matches[0].score > 0.8


def test_only_a_whole_name_alone_on_a_line_counts_whole():
    # "RAMBO" is the main title of a longer name: alone it may be another Rambo game
    matcher = _matcher_of("Rambo - First Blood Part II (USA)")
    lines = ["RAMBO", "PUSH START BUTTON"]
    read = matcher.clean(lines)
    with_lines = matcher.match(read, min_score=0.0, lines=lines)[0].score
    assert with_lines == matcher.match(read, min_score=0.0)[0].score < MIN_SCORE
