"""How an epoch is timed (study.train.timing) and the train.deterministic switch's config."""

from __future__ import annotations

import pytest
import torch

from study.config import TrainConfig
from study.errors import ConfigError
from study.train import numerics
from study.train.timing import EventClock, HostClock, epoch_clock, epoch_clock_name
from study.variants import find_row


class StandInEvent:
    """torch.cuda.Event's timing interface over a counter (no GPU here): each record is 1 ms later."""

    now = 0.0

    def record(self):
        StandInEvent.now += 1.0
        self.at = StandInEvent.now

    def elapsed_time(self, end):
        return end.at - self.at


def test_the_event_clock_sums_intervals_per_part_and_waits_once_per_epoch():
    waits = []
    clock = EventClock(make_event=StandInEvent, synchronize=lambda: waits.append(1))
    for _ in range(3):
        clock.begin("data")
        clock.end("data")  # 1 ms
        clock.begin("step")
        StandInEvent.now += 4.0  # the step's kernels
        clock.end("step")  # 5 ms
    assert waits == []  # nothing waits for the device until the epoch's end
    assert clock.seconds() == pytest.approx({"data": 0.003, "step": 0.015})
    assert waits == [1]


def test_the_clock_follows_the_device():
    assert isinstance(epoch_clock("cpu"), HostClock) and epoch_clock_name("cpu") == "host clock"
    assert epoch_clock_name("cuda:0") == "CUDA events"
    host = HostClock()
    host.begin("step")
    host.end("step")
    assert set(host.seconds()) == {"step"} and host.seconds()["step"] >= 0


def test_train_deterministic_is_validated_and_leaves_stored_hashes_alone():
    with pytest.raises(ConfigError, match="train.deterministic: expected true or false, got 'no'"):
        TrainConfig(deterministic="no")
    row = find_row("t3-ours")
    default = row.run_config()
    assert "deterministic" not in default.identity()["train"]
    fast = row.run_config(overrides={"train": {"deterministic": False}})
    assert fast.hash != default.hash and fast.identity()["train"]["deterministic"] is False


def test_numerics_apply_sets_and_records_the_switch():
    try:
        assert numerics.apply("cpu", deterministic=False)["deterministic_algorithms"] is False
        assert torch.backends.cudnn.benchmark is True
    finally:
        settings = numerics.apply("cpu")
    assert settings["deterministic_algorithms"] is True and torch.backends.cudnn.benchmark is False
