"""What `pip install transferkit` (not editable) ships: every subpackage and the built-in recipes."""

from __future__ import annotations

import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_setup_cfg_lists_every_subpackage_and_the_recipes():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    listed = {line.split("#")[0].strip() for line in config["options"]["packages"].splitlines()} - {""}
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "transferkit").rglob("__init__.py")
    }
    assert listed == on_disk | {"transferkit.builtin_recipes"}
    assert sorted(p.stem for p in (ROOT / "recipes").glob("*.toml")) == [
        "large_dissimilar",
        "large_similar",
        "small_dissimilar",
        "small_similar",
    ]


def test_python_dash_m_transferkit_is_the_command_line():
    import subprocess
    import sys

    import transferkit

    done = subprocess.run(
        [sys.executable, "-m", "transferkit", "--version"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"transferkit, version {transferkit.__version__}"
