"""mini_flite's experiment table (conf/exp/experiments.tsv): every row must build its config."""

from __future__ import annotations

from pathlib import Path

import pytest

from opuslm.train.config import load_config

RECIPE = Path(__file__).resolve().parents[1] / "egs2" / "mini_flite" / "speechlm1"
TABLE = RECIPE / "conf" / "exp" / "experiments.tsv"


def rows() -> list[tuple[str, str, list[str]]]:
    out = []
    for line in TABLE.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, config, *rest = line.split("\t")
        # local/run_experiments.sh word-splits the overrides column (no quoting).
        overrides = rest[0].split() if rest else []
        out.append((name, config, overrides))
    return out


ROWS = rows()


def test_experiment_names_are_unique():
    names = [name for name, _, _ in ROWS]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


@pytest.mark.parametrize("name,config,overrides", ROWS, ids=[r[0] for r in ROWS])
def test_every_row_builds_its_config(name, config, overrides):
    # --init_from none is run_experiments.sh's own flag, not a config override.
    overrides = [o for o in overrides if o not in ("--init_from", "none")]
    assert all("=" in o for o in overrides), f"{name}: overrides must be key=value: {overrides}"
    # Unknown keys and values of the wrong type raise here (ConfigError).
    built = load_config(RECIPE / config, overrides)
    assert built.data.train, name
