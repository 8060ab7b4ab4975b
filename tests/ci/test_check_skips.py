"""CI's skip allowlist, checked against the JUnit report a real pytest run writes."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("check_skips", ROOT / ".ci" / "check_skips.py")
check_skips = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_skips)

SKIPPING_MODULES = {
    # Allowed: the reasons CI's machines give for the allowlisted skips.
    "test_torch_checkpoint.py": "import pytest\n\n"
    "def test_matches_torch():\n"
    "    pytest.skip(\"could not import 'torch': No module named 'torch'\")\n\n"
    "def test_reads_lite0():\n"
    "    pytest.skip('torch is slow today')\n",
    "test_golden_captions.py": "import pytest\n\n"
    "@pytest.mark.parametrize('beam', [1, 3])\n"
    "def test_caption_is_golden(beam):\n"
    "    pytest.skip('golden captions not recorded for this CPU class (x): []')\n",
    # Not allowed: another module's skip (and above, an allowlisted module's other reason).
    "test_catalog.py": "import pytest\n\n"
    "def test_reads_catalogue():\n"
    "    pytest.skip('../shared/data not found')\n",
}


def test_only_allowlisted_skips_are_refused_nothing_else(tmp_path):
    package = tmp_path / "tests" / "export"
    package.mkdir(parents=True)
    for folder in (tmp_path / "tests", package):
        (folder / "__init__.py").write_text("")
    for name, source in SKIPPING_MODULES.items():
        (package / name).write_text(source)
    report = tmp_path / "junit.xml"
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    refused = check_skips.refused_skips(report)
    assert sorted(where.split(":")[0] for where in refused) == [
        "tests.export.test_catalog.test_reads_catalogue",
        "tests.export.test_torch_checkpoint.test_reads_lite0",
    ]
