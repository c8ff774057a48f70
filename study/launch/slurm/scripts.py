"""Plain sbatch array scripts for users who submit themselves (``python -m study sbatch``).

Each array task runs ``python -m study.launch.slurm task RUNS.json INDEX``;
``submit.sh`` submits the students' arrays after their teachers'.
"""

from __future__ import annotations

import re
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from study.errors import ConfigError
from study.launch.slurm.cluster import DEFAULT_MAX_ARRAY_SIZE, array_size, cluster_max_array_size
from study.launch.slurm.environment import job_environment
from study.launch.slurm.profile import ClusterProfile
from study.launch.slurm.runs import chunked, run_spec, tasks_of
from study.launch.snapshot import Snapshot, live_code, make_snapshot
from study.plan import RunSpec
from study.store.atomic import atomic_write_bytes, atomic_write_json
from study.store.runs import Store


@dataclass
class SbatchFiles:
    out_dir: Path
    runs_file: Path
    scripts: list[Path] = field(default_factory=list)
    submit_script: Path | None = None
    snapshot: Snapshot | None = None
    student_scripts: list[Path] = field(default_factory=list)


def comment(text: str) -> str:
    """Text safe inside a ``#`` comment line: no line breaks or other control characters."""
    return "".join(ch if ch.isprintable() else "?" for ch in str(text))


PATH_OPTIONS = ("output", "error", "chdir")  # paths are always quoted


_SBATCH_PLAIN = re.compile(r"[A-Za-z0-9_.,:/%@=+-]*")


def sbatch_value(value: str, option: str, always_quote: bool = False) -> str:
    """A value written into an ``#SBATCH --option=value`` line. sbatch reads these lines itself
    (not the shell): a value with anything but plain characters is double-quoted, with ``"``
    and ``\\`` escaped, as its directive parser expects. Control characters are refused."""
    text = str(value)
    if any(not ch.isprintable() for ch in text):
        raise ConfigError(f"#SBATCH --{option}: value {text!r} holds a line break or control character")
    if _SBATCH_PLAIN.fullmatch(text) and not always_quote:
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def sbatch_line(option: str, value: str | None) -> str:
    if not re.fullmatch(r"[a-z][a-z0-9-]*", option):
        raise ConfigError(f"#SBATCH option {option!r}: expected a long option name")
    if value is None:
        return f"#SBATCH --{option}"
    return f"#SBATCH --{option}={sbatch_value(value, option, always_quote=option in PATH_OPTIONS)}"


def _script_text(profile: ClusterProfile, *, name: str, command: str, tasks: list[list[dict]], offset: int,
                 runs_file: Path, log_dir: Path, snapshot: Snapshot, python: str, store_root: Path,
                 students: bool) -> str:
    n = len(tasks)
    specs = [spec for task in tasks for spec in task]
    after = " (students: submit after their teachers, see submit.sh)" if students else ""
    per_task = "one per array task" if len(specs) == n else f"{profile.runs_per_task} per array task, at once"
    lines = ["#!/bin/bash",
             comment(f"# Written by `{command}`."),
             f"# {len(specs)} run(s), {per_task}{after}.",
             "# Each task trains one run into the store, or resumes it from its last checkpoint",
             comment(f"# ({store_root}/runs/<config hash>-s<seed>/checkpoints/last.pt); a completed run is not redone."),
             comment(f"# Runs: {runs_file}"),
             "#",
             "# task  run                    row(s), dataset, seed"]
    lines += [comment(f"# {i:4d}  {s['run_id']:22s} {s['label']}") for i, task in enumerate(tasks) for s in task]
    options = [("job-name", name), ("array", f"0-{n - 1}%{min(n, profile.array_parallelism)}")]
    options += profile.sbatch_options()
    options += [("signal", f"B:USR2@{profile.signal_delay_s}"), ("requeue", None), ("open-mode", "append"),
                ("output", f"{log_dir}/%A_%a.out"), ("error", f"{log_dir}/%A_%a.err")]
    lines.append("")
    lines += [sbatch_line(k, v) for k, v in options]
    lines += ["", "set -euo pipefail"]
    if profile.setup:
        lines += ["# setup (cluster profile)", *profile.setup]
    lines += ["# the code snapshot this script was written with" if snapshot.path else "# the source tree (live)",
              *job_environment(snapshot, profile.threads_per_run)]
    index = '"$SLURM_ARRAY_TASK_ID"' if offset == 0 else f'"$(({int(offset)} + SLURM_ARRAY_TASK_ID))"'
    lines += [f"exec {python} -m study.launch.slurm task {shlex.quote(str(runs_file))} {index}", ""]
    return "\n".join(lines)


def write_sbatch(runs: list[RunSpec], store: Store, profile: ClusterProfile, out_dir: Path, *,
                 roots: dict[str, str], name: str, command: str, snapshot: bool | None = None,
                 max_array_size: int | None = None, python: str | None = None) -> SbatchFiles:
    """Write ``runs.json``, one array script per chunk of runs (students in their own) and
    ``submit.sh``, which submits them in order with the students' dependency."""
    out_dir = Path(out_dir).resolve()
    if (out_dir / "runs.json").exists():
        raise ConfigError(f"{out_dir} already holds scripts (queued jobs may still read its runs.json): "
                          "choose another --out or delete it")
    use_snapshot = profile.snapshot if snapshot is None else snapshot
    snap = make_snapshot(store.root / "snapshots") if use_snapshot else live_code()
    python = python or shlex.quote(sys.executable)
    size = max_array_size or array_size(profile, cluster_max_array_size() if shutil.which("scontrol") else
                                        DEFAULT_MAX_ARRAY_SIZE)
    teachers = [r for r in runs if not r.is_student]
    students = [r for r in runs if r.is_student]
    ordered = teachers + students
    files = SbatchFiles(out_dir, out_dir / "runs.json", snapshot=snap)
    log_dir = out_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    specs = [run_spec(r) for r in ordered]
    # Each array task trains the runs of one entry of "tasks" (indices into "runs").
    groups = tasks_of(list(range(len(teachers))), profile.runs_per_task) + \
        tasks_of(list(range(len(teachers), len(ordered))), profile.runs_per_task)
    atomic_write_json(files.runs_file, {
        "store": str(store.root), "roots": roots, "threads": profile.threads_per_run, "tasks": groups,
        "task_threads": [profile.threads_for(len(g)) for g in groups],
        "max_requeues": profile.max_requeues, "log_dir": str(log_dir), "cluster_profile": profile.name,
        "snapshot": str(snap.code_root), "snapshot_id": snap.id, "commit": snap.commit, "dirty": snap.dirty,
        "command": command, "runs": specs})
    submit = ["#!/bin/bash", comment(f"# Submits the arrays written by `{command}`, students after their teachers."),
              "set -euo pipefail", 'cd "$(dirname "$0")"']
    offset = 0
    teacher_vars = []
    teacher_tasks = len(tasks_of(teachers, profile.runs_per_task))
    for wave, suffix, is_students in ((groups[:teacher_tasks], "", False), (groups[teacher_tasks:], "-students", True)):
        parts = chunked(wave, size)
        for k, chunk in enumerate(parts):
            part = f"-part{k + 1}" if len(parts) > 1 else ""
            path = out_dir / f"{name}{suffix}{part}.sbatch"
            job = f"{profile.job_name}-{name}{suffix}"
            text = _script_text(profile, name=job, command=command, tasks=[[specs[i] for i in g] for g in chunk],
                                offset=offset, runs_file=files.runs_file, log_dir=log_dir, snapshot=snap,
                                python=python, store_root=store.root, students=is_students)
            atomic_write_bytes(path, text.encode())
            path.chmod(0o755)
            (files.student_scripts if is_students else files.scripts).append(path)
            offset += len(chunk)
            if is_students:
                dep = ":".join(f"${v}" for v in teacher_vars)
                submit.append(f"sbatch {'--dependency=afterany:' + dep + ' ' if dep else ''}{shlex.quote(path.name)}")
            else:
                var = f"teachers{len(teacher_vars) + 1}"
                teacher_vars.append(var)
                submit.append(f"{var}=$(sbatch --parsable {shlex.quote(path.name)} | cut -d';' -f1)" if students
                              else f"sbatch {shlex.quote(path.name)}")
    files.submit_script = out_dir / "submit.sh"
    atomic_write_bytes(files.submit_script, ("\n".join(submit) + "\n").encode())
    files.submit_script.chmod(0o755)
    return files
