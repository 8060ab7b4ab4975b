"""Fail when a test skipped that .ci/allowed_skips.txt does not allow.

python .ci/check_skips.py JUNIT_XML
"""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET  # our own pytest's report, not untrusted input
from pathlib import Path

ALLOWED = Path(__file__).with_name("allowed_skips.txt")


def refused_skips(report: str | Path, allowed: Path = ALLOWED) -> list[str]:
    """Each skip the allowlist does not match, as "module.test: reason".

    JUnit names a test by its dotted module ("tests.export.test_x") and name, so that is the
    form the allowlist's patterns are matched against.
    """
    patterns = [
        re.compile(line.strip())
        for line in allowed.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    refused = []
    for case in ET.parse(report).getroot().iter("testcase"):
        skipped = case.find("skipped")
        if skipped is None:
            continue
        where = f"{case.get('classname')}.{case.get('name')}: {skipped.get('message', '')}"
        if not any(pattern.search(where) for pattern in patterns):
            refused.append(where)
    return refused


def main(report: str) -> int:
    refused = refused_skips(report)
    for where in refused:
        print(f"skipped, not on the allowlist ({ALLOWED.name}): {where}")
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
