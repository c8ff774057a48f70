"""With the release's switches on, this project's UltraLBM-UNet computes what the authors' release computes.

The fixture (paper/release/equivalence_fixture.pt) was written by
paper/release/make_equivalence_fixture.py from the release at the commit it
names: the release's own model module, with mambapy's Mamba (an independent
implementation) standing in for mamba-ssm, random weights and BatchNorm
statistics, one input and its output.
"""

from __future__ import annotations

import pytest
import torch
from conftest import REPO_ROOT

from study.models import build_model
from study.models.release import from_release
from study.train.engine import prepare_batch, prepare_model

FIXTURE = REPO_ROOT / "paper" / "release" / "equivalence_fixture.pt"
RELEASE = {"bidirectional_flip": "channel", "mamba_conv_init": "release"}


def _fixture():
    return torch.load(FIXTURE, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("multiplier", [1.0, 0.5])
@pytest.mark.parametrize("engine", ["plain", "fast"])
def test_release_switches_reproduce_the_release_model(multiplier, engine):
    case = _fixture()[f"x{multiplier}"]
    model = build_model("ultralbm", {**RELEASE, "channel_multiplier": multiplier})
    model.load_state_dict(from_release(case["state_dict"]))
    model = prepare_model(model, engine, "cpu").eval()
    with torch.no_grad():
        got = model(prepare_batch(case["input"], model))
    assert float((got - case["output"]).abs().max()) <= 1e-6


def test_the_paper_s_flip_differs_from_the_release_on_the_same_weights():
    case = _fixture()["x1.0"]
    model = build_model("ultralbm", {"bidirectional_flip": "sequence"})
    model.load_state_dict(from_release(case["state_dict"]))
    with torch.no_grad():
        got = model.eval()(case["input"])
    assert float((got - case["output"]).abs().max()) > 1e-4  # 100 times the tolerance above


def test_the_fixture_names_its_release_commit():
    assert _fixture()["commit"] == "0a99c437bbc2d5a3a1b90a6ca040592f7f023411"
