"""What a task receives: JSON-native run specs, grouped ``runs_per_task`` at a time."""

from __future__ import annotations

from study.plan import RunSpec


def run_spec(run: RunSpec) -> dict:
    """Everything a job needs to train one run, JSON-native: the plan's ``RunSpec``."""
    return run.to_json()


def teacher_run_id(run: RunSpec) -> str | None:
    teacher = run.teacher
    return teacher.id if teacher is not None else None


def chunked(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def tasks_of(wave: list, runs_per_task: int) -> list[list]:
    """A wave's runs grouped into tasks (teachers and students are separate waves, never one task)."""
    return chunked(wave, max(1, runs_per_task))
