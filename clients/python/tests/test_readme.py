"""The README's Python examples run as written against a real server."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from server import TOKEN, Server

README = Path(__file__).resolve().parents[1] / "README.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_the_readme_has_examples() -> None:
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_readme_example_runs(index: int, sqlite_server: Server, tmp_path: Path) -> None:
    script = tmp_path / f"example_{index}.py"
    script.write_text(EXAMPLES[index])
    env = {"KEYWARD_URL": sqlite_server.url, "KEYWARD_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    if index == 0:
        answers, counts = done.stdout.strip().splitlines()
        assert "None" in answers or "cooling=0" in counts
        assert counts.endswith("leased=0")
        if "None" in answers:
            assert "cooling=1" in counts, "the 429 put the key in cooldown"
