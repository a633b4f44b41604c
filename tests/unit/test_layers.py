"""The import contract of docs/architecture.md, checked the way CI checks it (`lint-imports`).

The wrong-way cases run the same checker over a copy of the tree with one bad import added,
so a contract that stopped catching its inversion would fail here.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("media", "core", "packager", "ingest", "api", "nebula_live")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def copy_of_tree(destination: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(REPO / package, destination / package)
    shutil.copy(REPO / "pyproject.toml", destination)
    return destination


def test_the_tree_keeps_every_import_contract() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "bad_import", "contract", "chain"),
    [
        (
            "media/hls/playlist.py",
            "import core.stream_keys",
            "Layers",
            "media.hls.playlist -> core",
        ),
        ("core/storage.py", "import packager.keys", "Layers", "core.storage -> packager.keys"),
        ("packager/catalog.py", "import ingest.sessions", "Layers", "packager.catalog -> ingest"),
        ("api/app.py", "import nebula_live.cli", "Layers", "api.app -> nebula_live.cli"),
        (
            "ingest/publication.py",
            "import packager.tasks.ladder",
            "never loads task bodies",
            "ingest.publication -> packager.tasks.ladder",
        ),
        ("ingest/control.py", "import av", "never loads task bodies", "ingest.control -> av"),
        (
            "media/codecs/aac.py",
            "import sqlalchemy",
            "Pure media",
            "media.codecs.aac -> sqlalchemy",
        ),
    ],
)
def test_a_wrong_way_import_breaks_its_contract(
    tmp_path: Path, module: str, bad_import: str, contract: str, chain: str
) -> None:
    tree = copy_of_tree(tmp_path)
    target = tree / module
    target.write_text(target.read_text() + f"\n{bad_import}  # the wrong way\n")
    result = lint_imports(tree)
    assert result.returncode == 1, result.stdout + result.stderr
    broken = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    assert len(broken) == 1 and contract in broken[0], result.stdout
    assert chain in result.stdout


def _imported_top_levels(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    return names


def test_media_imports_only_the_standard_library_and_itself() -> None:
    allowed = set(sys.stdlib_module_names) | {"media"}
    foreign = {
        str(path.relative_to(REPO)): sorted(_imported_top_levels(path) - allowed)
        for path in sorted((REPO / "media").rglob("*.py"))
    }
    assert {path: names for path, names in foreign.items() if names} == {}
