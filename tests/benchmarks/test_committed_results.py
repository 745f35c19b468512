"""benchmarks/README.md's claims about the committed Auto-RGN profiles, checked against the
committed benchmarks/results/runs.csv (regenerating the CSV must keep the README true)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _profiles() -> dict[tuple[str, str, str], dict[str, float]]:
    """One epoch-1 RGN profile per (shift, regime, seed); every lr of a cell shares it."""
    profiles: dict[tuple[str, str, str], dict[str, float]] = {}
    with (ROOT / "benchmarks" / "results" / "runs.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["method"] != "auto-rgn" or not row["rgn_profile"]:
                continue
            profile = {name: float(value) for name, value in
                       (item.split("=") for item in row["rgn_profile"].split(";"))}
            key = (row["shift"], row["regime"], row["seed"])
            assert profiles.setdefault(key, profile) == profile  # lr-independent (epoch 1)
    return profiles


def test_readme_states_what_the_rgn_profiles_show() -> None:
    profiles = _profiles()
    text = " ".join((ROOT / "benchmarks" / "README.md").read_text().split())
    n = len(profiles)
    first = sum(max(p, key=p.__getitem__) == "block1" for p in profiles.values())
    ordered = sum(p["block1"] > p["block2"] > p["block3"] for p in profiles.values())
    head_above_3 = sum(p["head"] > p["block3"] for p in profiles.values())
    head_below_2 = sum(p["head"] < p["block2"] for p in profiles.values())
    assert f"{n} profiles" in text
    assert f"put block 1 first in all {n}" in text and first == n
    assert f"rank block 1 > block 2 > block 3 in all {n}" in text and ordered == n
    assert f"above block 3 in {head_above_3} of {n}" in text
    assert f"below block 2 in all {n}" in text and head_below_2 == n
    assert not re.search(r"last layer on \*every\* shift", text)
