"""`study doctor`: the one-call machine check, and its CPU self-test (what CI can run of it)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings

import pytest
from conftest import REPO_ROOT

from study import doctor
from study.doctor import core, repeat
from study.train import determinism


@pytest.mark.slow
def test_the_cpu_self_test_passes_and_fits_one_screen(tmp_path):
    out = tmp_path / "findings.json"
    done = subprocess.run([sys.executable, "-m", "study", "doctor", "--device", "cpu", "--json", str(out)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) <= 24
    findings = json.loads(out.read_text())
    assert [f["step"] for f in findings] == ["environment", "rows", "kernels", "bench", "repeat"]
    by_step = {f["step"]: f for f in findings}
    assert by_step["rows"]["verdict"] == "PASS" and by_step["kernels"]["verdict"] == "PASS"
    assert "contract stand-ins" in by_step["kernels"]["summary"]
    assert by_step["repeat"]["verdict"] == "PASS" and "bit-identical" in by_step["repeat"]["summary"]
    assert lines[-1].startswith("verdict: ready")
    # Every surveyed shape was compared on both passes, within the stated tolerance.
    cases = by_step["kernels"]["data"]["cases"]
    assert {c["backend"] for c in cases} == {"native", "cuda"} and len(cases) == 2 * len(doctor.survey_shapes(64))
    assert max(c["difference"] for c in cases) <= doctor.AGREE
    # The docs' table of nondeterministic ops per row is what the check finds.
    predicted = by_step["rows"]["data"]["nondeterministic_ops"]
    assert documented_nondeterministic_ops(set(predicted)) == {r: set(ops) for r, ops in predicted.items()}


def documented_nondeterministic_ops(all_rows: set[str]) -> dict[str, set[str]]:
    text = (REPO_ROOT / "docs" / "running.md").read_text()
    table = text.split("<!-- nondeterministic-ops: begin")[1].split("<!-- nondeterministic-ops: end")[0]
    documented = {row: set() for row in all_rows}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 2 or not cells[0].startswith(("`", "none")):
            continue
        named = set(re.findall(r"`([\w-]+)`", cells[1]))
        rows = all_rows - named if cells[1].startswith("every row but") else named
        assert rows <= all_rows, f"docs name rows that do not exist: {rows - all_rows}"
        if cells[0] != "none":
            op = re.match(r"`(\w+)`", cells[0]).group(1)
            for row in rows:
                documented[row].add(op)
    return documented


@pytest.mark.slow
def test_the_kernel_survey_covers_every_length_the_rows_run_at_their_paper_size():
    shapes = doctor.survey_shapes()
    lengths = {shape[1] if kind == "Mamba" else shape[1] * shape[2] for kind, shape in shapes}
    # 256: UltraLBM's GLMBP; 1024: ultralight-vm-unet and t2-all-glmbp; 4096 and 65,536: MambaU-Lite's SS2D.
    assert {256, 1024, 4096, 65536} <= lengths
    longest = max(shapes, key=lambda c: c[1][1] * c[1][2] if c[0] == "SS2D" else 0)
    assert "mambau-lite" in shapes[longest] and longest[1][1:3] == (256, 256)
    assert all(shapes.values())  # each shape names the rows that run it


def test_the_overall_limit_stops_the_check_and_says_where():
    ran = []
    findings = _run_steps([lambda opts, deadline: ran.append(1)], time_limit_s=0)
    assert ran == [] and [f.step for f in findings] == ["<lambda>", "stopped"]
    assert "overall limit of 0 s was reached before the <lambda> step" in findings[0].summary
    assert findings[1].verdict == doctor.FAIL and "out of time" in findings[1].summary


def test_a_broken_cuda_context_ends_the_check_with_that_error(monkeypatch):
    # No GPU here: the context probe is the stand-in; the rest is the doctor's own handling.
    monkeypatch.setattr(core, "context_error", lambda device: "AcceleratorError: CUDA error: an illegal memory access")

    def kernels(opts, deadline):
        try:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        except RuntimeError as exc:
            core.after_failure("cuda", "Mamba(d=8) L=65536", exc)

    def later(opts, deadline):
        raise AssertionError("a later step ran on a broken context")

    findings = _run_steps([kernels, later, later])
    assert [f.step for f in findings] == ["kernels", "stopped"]
    assert "Mamba(d=8) L=65536: RuntimeError: CUDA error: an illegal memory access" in findings[0].summary
    assert "the CUDA context is unusable after it" in findings[0].summary
    assert findings[1].summary.startswith("the CUDA context is broken: the check ends here; not run: later, later")


def _run_steps(steps, **options):
    import pytest as _pytest

    with _pytest.MonkeyPatch.context() as patch:
        patch.setattr(doctor, "STEPS", tuple(steps))
        return doctor.run_doctor(doctor.DoctorOptions.for_device("cuda", **options), log=lambda line: None)


def test_pytorch_nondeterminism_alerts_are_collected_and_other_warnings_pass_on():
    # PyTorch raises these only on CUDA; the message here is its wording, emitted as it emits it.
    log = determinism.AlertLog()
    with warnings.catch_warnings(record=True) as outside:
        warnings.simplefilter("default")  # Python's default: once per place
        with determinism.collect_alerts(log):
            for _ in range(3):
                warnings.warn("upsample_bilinear2d_backward_out_cuda does not have a deterministic implementation, "
                              "but you set 'torch.use_deterministic_algorithms(True, warn_only=True)'.", UserWarning)
                warnings.warn("something else", UserWarning)
    assert log.as_list() == ["upsample_bilinear2d_backward_out_cuda"]
    assert [str(w.message) for w in outside] == ["something else"]  # passed on, once
    assert determinism.predicted_cuda_ops(set(log.ops)) == ["upsample_bilinear2d_backward_out_cuda"]
    assert determinism.op_from_alert("no op here") is None


@pytest.mark.parametrize("device,identical,diff,ops,verdict", [
    ("cpu", True, 0.0, [], doctor.PASS),
    ("cpu", False, 1e-7, ["upsample_bilinear2d_backward_out_cuda"], doctor.FAIL),  # a CPU promises bits
    ("cuda", False, 1e-5, ["upsample_bilinear2d_backward_out_cuda"], doctor.WARN),
    ("cuda", False, 1e-5, [], doctor.FAIL),  # nothing known explains it
    ("cuda", False, 0.2, ["upsample_bilinear2d_backward_out_cuda"], doctor.FAIL),  # beyond rounding
])
def test_the_repeat_check_tells_rounding_on_known_ops_from_a_real_difference(device, identical, diff, ops, verdict):
    got, words = repeat.judge_repeat(device, identical, diff, ops)
    assert got == verdict
    if verdict == doctor.WARN:
        assert "rounding-level" in words and ops[0] in words


def test_a_crashing_step_is_a_failure_and_the_others_still_run(monkeypatch):
    def broken(opts, deadline):
        raise RuntimeError("no GPU driver")

    def fine(opts, deadline):
        return doctor.Finding("fine", doctor.PASS, "ok")

    monkeypatch.setattr(doctor, "STEPS", (broken, fine))
    findings = doctor.run_doctor(doctor.DoctorOptions.for_device("cpu"), log=lambda line: None)
    assert [f.verdict for f in findings] == ["FAIL", "PASS"]
    assert "no GPU driver" in findings[0].summary
    assert doctor.verdict_line(findings).startswith("verdict: NOT READY (broken failed")


def test_options_per_device():
    assert doctor.DoctorOptions.for_device("cuda").size == 256
    cpu = doctor.DoctorOptions.for_device("cpu", batch=2)
    assert (cpu.size, cpu.batch) == (64, 2)


def test_the_cpu_check_says_its_quiet_time_and_warns_when_the_machine_is_busy(monkeypatch):
    from study.launch import cpus

    monkeypatch.setattr(doctor, "STEPS", ())
    for busy, warned in ((0, False), (2, True)):
        monkeypatch.setattr(cpus, "busy_cpus", lambda window_s=0.3, n=busy: n)
        lines = []
        doctor.run_doctor(doctor.DoctorOptions.for_device("cpu"), log=lines.append)
        assert lines[0].startswith(f"  the CPU check takes about {doctor.QUIET_CPU_SECONDS} s on a quiet")
        assert ("busy with other work now" in lines[0]) is warned


def test_only_mamba_ssm_kernels_that_ran_count_as_known_nondeterminism():
    from types import SimpleNamespace

    def record(scan, ops=()):
        return SimpleNamespace(details={"kernels": {"scan": scan}, "attempts": [{"nondeterministic_ops": list(ops)}]})

    assert repeat.known_nondeterminism(record("mamba-ssm 2.3.1")) == ["mamba-ssm selective-scan backward (atomic adds)"]
    # a fallback names mamba-ssm too, but ran the PyTorch scan
    assert repeat.known_nondeterminism(record("PyTorch scan (mamba-ssm unusable: no GPU)")) == []
    assert repeat.known_nondeterminism(record("C scan", ["upsample_bilinear2d_backward_out_cuda"])) == [
        "upsample_bilinear2d_backward_out_cuda"]
