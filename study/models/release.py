"""The authors' released UltraLBM-UNet weights, in this project's names.

``from_release(state_dict)`` renames a state dict of the release's
``models/UltraLBM_UNet.py`` (LinLinLin-X/UltraLBM-UNet) to this project's
``UltraLBMUNet`` (paper layout: LMBP at encoder IV and decoder III, GLMBP
elsewhere, one shared skip scalar), so a released checkpoint loads here. The
release flips a chunk's channels for its backward Mamba direction; build the
model with ``bidirectional_flip = "channel"`` to compute what it computes
(``paper/differences.toml``). Names only: no tensor is changed but the skip
scalar's shape (a 0-d ``k`` there, a 1-element ``skip_scale`` here).
"""

from __future__ import annotations

import re

import torch

from study.errors import ConfigError

# Release stage -> (this project's module list, index); encoder1-3 / decoder4-5 are plain convs.
_STAGES = {**{f"encoder{i}": ("encoder", i - 1) for i in range(1, 7)},
           **{f"decoder{i}": ("decoder", i - 1) for i in range(1, 6)}}
_NORMS = {**{f"ebn{i}": f"encoder_norms.{i - 1}" for i in range(1, 6)},
          **{f"dbn{i}": f"decoder_norms.{i - 1}" for i in range(1, 6)}}
# DepthwiseSeparableConvBNAct's parts -> the index in this project's DwConv Sequential.
_DWCONV = {"dw": "0", "bn_dw": "1", "pw": "3", "bn_pw": "4"}
# Which routed chunk each of the release's depthwise branches is: LMBP sep_conv1-3 are
# chunks 0-2; GLMBP's one sep_conv is chunk 2 (chunks 0-1 go to the Mamba).
_SEP_CONV_CHUNK = {"sep_conv1": "0", "sep_conv2": "1", "sep_conv3": "2", "sep_conv": "2"}


def _rename(name: str) -> str:
    if name == "k":
        return "skip_scale"
    if name.startswith("final."):
        return "head." + name[len("final."):]
    head, _, rest = name.partition(".")
    if head in _NORMS:
        return f"{_NORMS[head]}.{rest}"
    if head not in _STAGES:
        raise ConfigError(f"release state dict: unexpected entry {name!r}")
    group, index = _STAGES[head]
    rest = rest.removeprefix("0.")  # each release stage is an nn.Sequential of one block
    match = re.fullmatch(r"(sep_conv\d?)\.(dw|bn_dw|pw|bn_pw)\.(.+)", rest)
    if match:
        conv, part, leaf = match.groups()
        rest = f"dwconvs.{_SEP_CONV_CHUNK[conv]}.{_DWCONV[part]}.{leaf}"
    elif rest == "skip_scale":
        rest = "scale"
    return f"{group}.{index}.{rest}"


def from_release(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The release's UltraLBM_UNet state dict under this project's names."""
    out = {}
    for name, tensor in state_dict.items():
        renamed = _rename(name)
        out[renamed] = tensor.reshape(1) if renamed == "skip_scale" else tensor
    return out
