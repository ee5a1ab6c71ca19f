"""Print the rules of the workflow as JSON: name -> {"local": bool, "params": [names], "resources": [names]}.

    python tests/slurm/list_rules.py WORKDIR [SNAKEFILE]

WORKDIR holds config/config.yaml. Used by tests/test_slurm.py to check the SLURM profile against
the rules: every rule that runs a model on the configured device (a `device` param) must get a
GPU there, and local rules must not.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings


def workflow_rules(workdir: Path, snakefile: Path) -> dict:
    with SnakemakeApi(OutputSettings(quiet=None)) as api:
        workflow = api.workflow(
            resource_settings=ResourceSettings(),
            config_settings=ConfigSettings(configfiles=[workdir / "config" / "config.yaml"]),
            snakefile=snakefile,
            workdir=workdir,
        )._workflow
        return {
            rule.name: {
                "local": rule.name in workflow._localrules,
                "params": sorted(rule.params.keys()) if rule.params else [],
                "resources": sorted(rule.resources.keys()) if rule.resources else [],
            }
            for rule in workflow.rules
        }


if __name__ == "__main__":
    repo = Path(__file__).resolve().parents[2]
    workdir = Path(sys.argv[1]).resolve()
    snakefile = Path(sys.argv[2]).resolve() if len(sys.argv) > 2 else repo / "Snakefile"
    print(json.dumps(workflow_rules(workdir, snakefile)))
