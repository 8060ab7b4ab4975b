"""The gamelab-caption command, called in-process through main(argv)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from gamelab_caption import __version__, bundled_models
from gamelab_caption.cli import main


def _lines(text: str) -> list[str]:
    return text.splitlines()


def test_captions_each_image_as_path_tab_caption(tiny_bundle, image_files, capsys):
    red, blue = str(image_files["red"]), str(image_files["blue"])
    assert main([red, blue, "--model", str(tiny_bundle)]) == 0
    out, err = capsys.readouterr()
    assert _lines(out) == [f"{red}\tred ball", f"{blue}\tblue box"]
    assert err == ""


def test_json_lines_parse_with_the_documented_keys(tiny_bundle, image_files, capsys):
    images = [str(image_files["red"]), str(image_files["green"])]
    assert main([*images, "--model", str(tiny_bundle), "--json"]) == 0
    records = [json.loads(line) for line in _lines(capsys.readouterr().out)]
    assert [r["image"] for r in records] == images
    assert [r["caption"] for r in records] == ["red ball", "a ball"]
    assert all(set(r) == {"image", "caption", "score", "alternatives"} for r in records)
    assert isinstance(records[0]["score"], float)
    assert records[1]["alternatives"][0]["caption"] == "green box"
    assert isinstance(records[1]["alternatives"][0]["score"], float)


def test_beam_and_max_length_options_reach_the_decoder(tiny_bundle, image_files, capsys):
    green = str(image_files["green"])
    assert main([green, "--model", str(tiny_bundle), "--beam", "1", "--threads", "1"]) == 0
    assert main([green, "--model", str(tiny_bundle), "--max-length", "1"]) == 0
    assert _lines(capsys.readouterr().out) == [f"{green}\tgreen box", f"{green}\tgreen"]


def test_a_reader_that_leaves_early_stops_it_quietly(tiny_bundle, image_files):
    # `gamelab-caption DIR | head -1`: the rest of the output has nowhere to go (600 JSON
    # lines are more than a pipe holds, so a write fails after the reader left)
    command = "import sys; from gamelab_caption.cli import main; sys.exit(main())"
    arguments = [str(image_files["red"])] * 600 + ["--model", str(tiny_bundle), "--json"]
    process = subprocess.Popen(
        [sys.executable, "-c", command, *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert json.loads(process.stdout.readline())["caption"] == "red ball"
    process.stdout.close()
    assert process.wait(timeout=120) == 141
    assert process.stderr.read() == b""


def test_bad_image_is_reported_and_the_others_captioned(tiny_bundle, image_files, capsys):
    red, bad, blue = (str(image_files[name]) for name in ("red", "corrupt", "blue"))
    assert main([red, bad, blue, "--model", str(tiny_bundle)]) == 1
    out, err = capsys.readouterr()
    assert _lines(out) == [f"{red}\tred ball", f"{blue}\tblue box"]
    assert len(_lines(err)) == 1
    assert err.startswith(f"gamelab-caption: error: {bad}: ")


def test_unknown_model_is_a_one_line_usage_error(image_files, capsys):
    assert main([str(image_files["red"]), "--model", "no-such-model"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(_lines(err)) == 1
    assert err.startswith("gamelab-caption: error: Unknown model 'no-such-model'")


def test_broken_bundle_is_a_one_line_usage_error(tmp_path, image_files, capsys):
    (tmp_path / "manifest.json").write_text("{")
    assert main([str(image_files["red"]), "--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert len(_lines(err)) == 1 and "not valid JSON" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["image.jpg", "--beam", "0"],
        ["image.jpg", "--max-length", "1001"],
        ["--no-such-flag"],
        ["batch", "in", "--output", "out", "--max-length", "5000"],
    ],
    ids=["no-images", "beam-zero", "max-length-too-long", "unknown-flag", "batch-max-length"],
)
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2
    assert "gamelab-caption" in capsys.readouterr().err


def test_an_image_piped_to_standard_input_is_captioned(
    tiny_bundle, image_files, capsys, monkeypatch
):
    # `cat photo.jpg | gamelab-caption - other.png`
    red, blue = image_files["red"], str(image_files["blue"])
    with open(red, "rb") as piped:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(piped))
        assert main(["-", blue, "--model", str(tiny_bundle)]) == 0
    assert _lines(capsys.readouterr().out) == ["-\tred ball", f"{blue}\tblue box"]


def test_standard_input_is_read_once(tiny_bundle, capsys):
    assert main(["-", "-", "--model", str(tiny_bundle)]) == 2
    assert capsys.readouterr().err == (
        "gamelab-caption: error: - (standard input) can be given once\n"
    )


def test_standard_input_left_on_the_terminal_is_a_usage_error_not_a_wait(tiny_bundle):
    # a pseudo-terminal as stdin, as when `gamelab-caption -` is typed with nothing piped
    pty = pytest.importorskip("pty")
    leader, follower = pty.openpty()
    command = "import sys; from gamelab_caption.cli import main; sys.exit(main())"
    done = subprocess.run(
        [sys.executable, "-c", command, "-", "--model", str(tiny_bundle)],
        stdin=follower,
        capture_output=True,
        timeout=120,
    )
    os.close(leader)
    os.close(follower)
    assert done.returncode == 2
    assert b"none is piped" in done.stderr


def test_help_lists_the_other_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"\n  {command} " in out for command in ("search", "index", "serve", "batch"))


@pytest.mark.parametrize("module", ["gamelab_caption", "gamelab_caption.cli"])
def test_python_dash_m_runs_the_command(module):
    # for when pip's scripts folder is not on PATH
    done = subprocess.run(
        [sys.executable, "-m", module, "--version"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0
    assert done.stdout.strip() == f"gamelab-caption {__version__}"


def test_version_prints_the_package_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"gamelab-caption {__version__}"


def test_list_models_prints_one_bundled_model_per_line(capsys):
    assert main(["--list-models"]) == 0
    assert _lines(capsys.readouterr().out) == bundled_models()


def test_a_folder_is_captioned_image_by_image(tiny_bundle, tmp_path, capsys):
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (16, 16), (255, 0, 0)).save(tmp_path / "b.png")
    Image.new("RGB", (16, 16), (0, 0, 255)).save(tmp_path / "sub" / "a.png")
    (tmp_path / "notes.txt").write_text("not an image")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(tmp_path), str(empty), "--model", str(tiny_bundle)]) == 1
    out, err = capsys.readouterr()
    assert _lines(out) == [
        f"{tmp_path / 'b.png'}\tred ball",
        f"{tmp_path / 'sub' / 'a.png'}\tblue box",
    ]
    assert _lines(err) == [
        f"gamelab-caption: error: {empty}: a folder with no image files "
        "(.jpg, .jpeg, .png, .webp, .gif, .bmp, .tif, .tiff)"
    ]


def test_the_animal_seen_is_named_unless_the_decoders_words_are_asked_for(capsys):
    cat = str(Path(__file__).parents[2] / "examples" / "images" / "cat.jpg")
    assert main([cat]) == 0
    assert main(["--decoder-words", cat]) == 0
    named, decoded = capsys.readouterr().out.splitlines()
    assert " cat " in named.split("\t")[1] and " dog " in decoded.split("\t")[1]
