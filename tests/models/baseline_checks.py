"""The tests every Table 1 baseline must pass, shared by test_baselines_a.py and test_baselines_b.py.

Each baseline must reproduce the public implementation's parameter count
exactly and its thop MACs (1x3x256x256, one class) within 1%, and train
through ``forward_logits`` like every other model.

Each of those files runs them over its own table with a ``TestContract``
subclass of ``BaselineContract`` (not collected here: the name does not start
with ``Test``).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from study.complexity import count_params, macs_thop
from study.models import build_model, registered_models

MACS_TOLERANCE = 0.01


class BaselineContract:
    """Set ``TABLE`` (name: (params, GMACs) of the public implementation) and
    ``side`` (the side of the small square inputs); override ``configurable_shape``
    for another input shape there."""

    TABLE: dict[str, tuple[int, float]] = {}

    def side(self, name: str) -> int:
        raise NotImplementedError  # each test file picks the side its models take cheaply

    def configurable_shape(self, name: str) -> tuple[int, int]:
        """(height, width) of the input of ``test_in_channels_and_classes_are_configurable``."""
        return self.side(name), self.side(name)

    def pytest_generate_tests(self, metafunc):
        # pytest calls this hook on test classes too: every test taking ``name`` runs over TABLE.
        if "name" in metafunc.fixturenames:
            metafunc.parametrize("name", list(self.TABLE))

    def test_all_registered(self):
        assert set(self.TABLE) <= set(registered_models())

    def test_params_equal_the_public_implementation(self, name):
        assert count_params(build_model(name)) == self.TABLE[name][0]

    def test_thop_macs_within_one_percent(self, name):
        torch.manual_seed(0)
        gmacs = macs_thop(build_model(name)) / 1e9
        assert gmacs == pytest.approx(self.TABLE[name][1], rel=MACS_TOLERANCE)

    def test_forward_backward_small_input(self, name):
        torch.manual_seed(0)
        model = build_model(name).train()
        n = self.side(name)
        x = torch.randn(2, 3, n, n)
        logits = model.forward_logits(x)
        assert logits.shape == (2, 1, n, n)
        target = (torch.rand(2, 1, n, n) > 0.5).float()
        F.binary_cross_entropy_with_logits(logits, target).backward()
        # Only what the release itself never uses may go without a gradient: Rolling-UNet's
        # Lo2 blocks hold an uncalled LayerNorm, MK-UNet discards its deep-supervision heads.
        unused = getattr(model, "unused_parameters", ())
        for pname, p in model.named_parameters():
            if any(part in pname for part in unused):
                assert p.grad is None, f"{pname} is listed unused but got a gradient"
                continue
            assert p.grad is not None, f"{pname} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
        model.eval()
        with torch.no_grad():
            probs, logits = model(x), model.forward_logits(x)
        assert probs.shape == (2, 1, n, n)
        assert probs.min() >= 0 and probs.max() <= 1
        assert torch.allclose(probs, torch.sigmoid(logits))

    def test_in_channels_and_classes_are_configurable(self, name):
        h, w = self.configurable_shape(name)
        model = build_model(name, {"in_channels": 1, "num_classes": 2}).eval()
        with torch.no_grad():
            assert model.forward_logits(torch.randn(1, 1, h, w)).shape == (1, 2, h, w)
