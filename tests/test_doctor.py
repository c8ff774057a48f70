"""`study doctor`: the one-call machine check, and its CPU self-test (what CI can run of it)."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO_ROOT

from study import doctor


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


def test_a_crashing_step_is_a_failure_and_the_others_still_run(monkeypatch):
    def broken(opts):
        raise RuntimeError("no GPU driver")

    def fine(opts):
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
