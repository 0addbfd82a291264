"""The copied fixtures are the ones their README describes (byte for byte)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path


def test_fixtures_match_their_recorded_sha256(fixtures_dir: Path) -> None:
    table = dict(
        re.findall(
            r"^\| `([^`]+)` \|(?: [^|]+ \|)? ([0-9a-f]{64}) \|$",
            (fixtures_dir / "README.md").read_text(),
            flags=re.M,
        )
    )
    on_disk = {
        p.relative_to(fixtures_dir).as_posix()
        for p in fixtures_dir.rglob("*")
        if p.is_file() and p.name != "README.md"
    }
    assert set(table) == on_disk
    for name, digest in table.items():
        assert hashlib.sha256((fixtures_dir / name).read_bytes()).hexdigest() == digest, name
