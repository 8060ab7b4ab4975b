"""Check the built wheel holds every shipped bundle file, with sha256 as in its manifest."""

import hashlib
import json
import sys
import zipfile
from pathlib import Path

PREFIX = "gamelab_caption/models/"


def main(wheel_path: str) -> int:
    shipped = sorted(p for p in Path("sdk/gamelab_caption/models").glob("*/manifest.json"))
    with zipfile.ZipFile(wheel_path) as wheel:
        names = set(wheel.namelist())
        for manifest_path in shipped:
            model = manifest_path.parent.name
            manifest = json.loads(manifest_path.read_text())
            for name, digest in manifest["files"].items():
                member = f"{PREFIX}{model}/{name}"
                if member not in names:
                    print(f"wheel lacks {member}")
                    return 1
                if hashlib.sha256(wheel.read(member)).hexdigest() != digest:
                    print(f"wheel's {member} does not match its manifest sha256")
                    return 1
    print(f"wheel ok: {len(shipped)} bundle(s) in {wheel_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
