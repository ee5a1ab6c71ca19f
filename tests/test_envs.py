"""Each rule's conda environment provides every package its script imports.

With `--software-deployment-method conda` a rule runs in the environment its `conda:` names, so a
package its script needs at import time and the file lacks fails only on a cluster, hours in. The
imports counted: every import in the step script (its functions run), and the module-level imports
of each `rim` module reachable from there, transitively (a `rim` function's own lazy imports run
only when that function is called, so they are not counted).
"""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
RULE = re.compile(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)+)", re.MULTILINE)
# A rule generated in a loop (figures.smk): `rule:` with its name in a `name:` f-string.
LOOP_RULE = re.compile(r"^([ \t]+)rule:\n((?:\1[ \t]+.*\n|\n)+)", re.MULTILINE)


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def rules_with_envs() -> list[tuple[str, Path, Path]]:
    """(rule, conda env file, script) of every rule that has both."""
    found = []
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        text = smk.read_text()
        blocks = RULE.findall(text + "\n")
        for _, body in LOOP_RULE.findall(text + "\n"):
            name = re.search(r"name:\s*\n\s*f?\"([^\"]+)\"", body)
            blocks.append((name.group(1) if name else "(unnamed)", body))
        for name, body in blocks:
            env = re.search(r"conda:\s*\n\s*\"([^\"]+)\"", body)
            script = re.search(r"script:\s*\n\s*\"([^\"]+)\"", body)
            if env and script:
                found.append((name, (smk.parent / env.group(1)).resolve(), (smk.parent / script.group(1)).resolve()))
    return found


def env_packages(path: Path) -> set[str]:
    """Distribution names a conda env file installs (conda and pip entries, versions dropped)."""
    spec = yaml.safe_load(path.read_text())
    names = set()
    for entry in spec.get("dependencies", []):
        for item in entry["pip"] if isinstance(entry, dict) else [entry]:
            names.add(normalized(re.split(r"[<>=!~ \[]", item, maxsplit=1)[0]))
    return names


def with_dependencies(names: set[str]) -> set[str]:
    """The packages and, transitively, what they require (as installed here; extras left out)."""
    closure, pending = set(), list(names)
    while pending:
        name = pending.pop()
        if name in closure:
            continue
        closure.add(name)
        try:
            needs = requires(name) or []
        except PackageNotFoundError:
            continue
        for requirement in needs:
            if "extra ==" not in requirement:
                pending.append(normalized(re.split(r"[<>=!~ ;\[(]", requirement, maxsplit=1)[0]))
    return closure


def _imports(tree: ast.AST, module_level_only: bool) -> set[str]:
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    names = set()
    for node in nodes:
        if isinstance(node, ast.If) and module_level_only:  # `if TYPE_CHECKING:` blocks never run
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _rim_file(module: str) -> Path | None:
    path = SCRIPTS.joinpath(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def third_party_imports(script: Path) -> set[str]:
    """Top-level names of the non-stdlib, non-rim packages the script needs."""
    pending = list(_imports(ast.parse(script.read_text()), module_level_only=False))
    seen, outside = set(), set()
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        top = module.split(".")[0]
        if top != "rim":
            if top not in sys.stdlib_module_names and top != "__future__":
                outside.add(top)
            continue
        parts = module.split(".")
        for depth in range(1, len(parts) + 1):  # importing rim.a.b runs rim/__init__ and rim/a/__init__
            path = _rim_file(".".join(parts[:depth]))
            if path is not None and path not in seen:
                seen.add(path)
                pending.extend(_imports(ast.parse(path.read_text()), module_level_only=True))
    return outside


RULES = rules_with_envs()


def test_every_rule_with_a_script_is_found():
    names = {name for name, _, _ in RULES}
    assert {"prepare_dataset", "generate", "judge", "generate_and_dump", "safety_neurons", "ras", "ras_table"} <= names
    assert "figure_{figure_name}" in names  # the figure rules, generated from the registry
    assert len(RULES) >= 17


@pytest.mark.parametrize("rule, env, script", RULES, ids=[name for name, _, _ in RULES])
def test_the_rules_environment_provides_what_its_script_imports(rule, env, script):
    provided = with_dependencies(env_packages(env))
    distributions = packages_distributions()
    missing = {}
    for name in sorted(third_party_imports(script)):
        if name == "snakemake":  # Snakemake puts itself on the path of a script it runs
            continue
        candidates = {normalized(d) for d in distributions.get(name, [name])}
        if not candidates & provided:
            missing[name] = sorted(candidates)
    assert not missing, (
        f"rule {rule} runs {script.relative_to(REPO)} in {env.relative_to(REPO)}, which lacks "
        + ", ".join(f"{name} (package {' or '.join(c)})" for name, c in missing.items())
    )


def test_the_check_sees_a_gap(tmp_path):
    """The check itself: h5py imported by a rim module at module level is found through the script."""
    script = tmp_path / "step.py"
    script.write_text(
        "import pandas as pd\nfrom rim.activations import read_input_set\n\ndef run():\n    import altair\n"
    )
    needed = third_party_imports(script)
    assert {"pandas", "h5py", "numpy", "altair"} <= needed
    assert "torch" not in needed  # rim.activations imports torch only inside functions
