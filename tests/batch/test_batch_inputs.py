"""What a batch job reads and refuses, before Ray starts: folders, globs, tables, outputs."""

from __future__ import annotations

import json

import pytest
from PIL import Image

pyarrow = pytest.importorskip("pyarrow")
parquet = pytest.importorskip("pyarrow.parquet")

from gamelab_caption import cli  # noqa: E402
from gamelab_caption.batch import BatchOptions  # noqa: E402
from gamelab_caption.batch_inputs import collect_paths  # noqa: E402
from gamelab_caption.batch_output import PartWriter, done_keys  # noqa: E402
from gamelab_caption.errors import BatchInputError  # noqa: E402


@pytest.fixture()
def folder(tmp_path):
    """a.png, b.jpg, sub/c.jpeg, and notes.txt (not an image)."""
    (tmp_path / "sub").mkdir()
    for name in ("a.png", "b.jpg", "sub/c.jpeg"):
        Image.new("RGB", (4, 4)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("no")
    return tmp_path


def test_folders_globs_and_files_give_absolute_paths_once_each(folder, monkeypatch):
    monkeypatch.chdir(folder)
    images = [str(folder / name) for name in ("a.png", "b.jpg", "sub/c.jpeg")]
    assert collect_paths([folder]) == images
    assert collect_paths(["sub/*.jpeg", "a.png", folder]) == [images[2], images[0], images[1]]
    assert collect_paths(["**/*.jp*g"]) == [images[1], images[2]]


def test_tables_give_their_path_column_relative_to_the_table(folder):
    (folder / "list.csv").write_text("path,label\na.png,x\n,y\nsub/c.jpeg,z\n")
    rows = [{"path": "b.jpg"}, {"other": 1}, {"path": str(folder / "a.png")}]
    (folder / "list.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n\n")
    parquet.write_table(pyarrow.table({"file": ["sub/c.jpeg", None]}), folder / "list.parquet")
    a, b, c = (str(folder / name) for name in ("a.png", "b.jpg", "sub/c.jpeg"))
    assert collect_paths([folder / "list.csv"]) == [a, c]
    assert collect_paths([folder / "list.jsonl"]) == [b, a]
    assert collect_paths([folder / "list.parquet"], column="file") == [c]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("list.csv", "file,label\na.png,x\n", "no column 'path' of image paths.*file, label"),
        ("list.jsonl", '{"file": "a.png"}\n', "no column 'path'.*file"),
        ("list.jsonl", '{"path": "a.png"}\nnot json\n', r"list.jsonl:2: not JSON"),
        ("list.jsonl", "[1, 2]\n", "expected a JSON object"),
        ("list.parquet", "PAR1 but not Parquet", "Cannot read the Parquet table"),
        ("list.csv", b"path\n\xff\xfe\n", "Cannot read the table"),
    ],
)
def test_unusable_tables_are_refused_with_their_name(folder, name, content, message):
    table = folder / name
    table.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(BatchInputError, match=message):
        collect_paths([table])


def test_a_parquet_table_without_the_column_names_its_columns(folder):
    parquet.write_table(pyarrow.table({"file": ["a.png"]}), folder / "list.parquet")
    with pytest.raises(BatchInputError, match="no column 'path'.*--path-column.*file"):
        collect_paths([folder / "list.parquet"])


def test_missing_inputs_and_empty_globs_are_refused(folder):
    with pytest.raises(BatchInputError, match="Input not found: .*nowhere"):
        collect_paths([folder / "nowhere"])
    with pytest.raises(BatchInputError, match="No file matches"):
        collect_paths([str(folder / "*.webp")])


def test_an_output_made_with_other_settings_is_not_mixed_into(tmp_path):
    settings = {"caption": True, "embed": False, "catalog": False, "model_name": "a"}
    writer = PartWriter(str(tmp_path / "out"), settings)
    writer.add(pyarrow.table({"path": ["/x.jpg"], "error": [None]}))
    writer.flush()
    assert done_keys(str(tmp_path / "out"), settings) == {("/x.jpg", None)}
    with pytest.raises(BatchInputError, match="other settings: model_name 'a' \\(now 'b'\\)"):
        done_keys(str(tmp_path / "out"), {**settings, "model_name": "b"})
    (tmp_path / "file").write_text("")
    with pytest.raises(BatchInputError, match="is a file"):
        done_keys(str(tmp_path / "file"), settings)


def test_options_out_of_range_are_refused():
    with pytest.raises(ValueError, match="Nothing to compute"):
        BatchOptions(caption=False, embed=False)
    with pytest.raises(ValueError, match="beam_size must be >= 1"):
        BatchOptions(beam_size=0)
    with pytest.raises(ValueError, match="num_cpus must be > 0"):
        BatchOptions(num_cpus=0)


def test_the_command_reports_bad_input_as_a_usage_error(folder, capsys):
    assert cli.main(["batch", str(folder / "nowhere"), "-o", str(folder / "out")]) == 2
    assert "gamelab-caption batch: error: Input not found" in capsys.readouterr().err
    assert cli.main(["batch", str(folder), "-o", "x", "--num-gpus", "-1"]) == 2
    assert cli.main(["batch", str(folder)]) == 2  # no --output
