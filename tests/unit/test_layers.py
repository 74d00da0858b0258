"""The shape of the house: import contracts between layers, and task families as policies that the
pipeline asks instead of branching on a family's name."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llmxmr.errors import ConfigError
from llmxmr.families import QuotingFamily, family
from llmxmr.prompts import TASK_FAMILIES

PACKAGE = Path(__file__).resolve().parents[2] / "llmxmr"


def test_the_import_contracts_hold():
    """pyproject.toml's [tool.importlinter]: every import goes down the layers (the library never
    imports the CLI or the harnesses, the stages know no task family, clients know no stages), and
    chunking and token counting do no network I/O."""
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint is None:
        pytest.skip("import-linter (the dev extra) is not installed")
    checked = subprocess.run([lint], capture_output=True, text=True, cwd=PACKAGE.parent, timeout=300)
    assert checked.returncode == 0, checked.stdout[-3000:]


def test_every_task_family_has_a_policy():
    for name in TASK_FAMILIES:
        assert isinstance(family(name), QuotingFamily) and family(name).name == name


def test_an_unknown_family_is_one_line_with_the_closest_name():
    with pytest.raises(ConfigError, match="did you mean 'retrieval'"):
        family("retreival")


@pytest.mark.parametrize(
    "path", [*sorted((PACKAGE / "stages").glob("*.py")), PACKAGE / "pipeline.py"], ids=lambda p: p.name
)
def test_stages_and_the_pipeline_never_branch_on_a_family_name(path):
    names = "|".join(TASK_FAMILIES)
    assert not re.search(rf"""["']({names})["']""", path.read_text(encoding="utf-8"))


def test_every_subpackage_is_installed():
    """pyproject.toml lists the packages a wheel carries: a subpackage missing there imports from
    a checkout and fails after `pip install .`."""
    import tomllib

    listed = set(tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(init.parent.relative_to(PACKAGE.parent).parts) for init in PACKAGE.rglob("__init__.py")}
    assert found - listed == set()
