"""`python -m study doctor`: is this machine ready to train the study, and how fast (one screen)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("doctor", help="check this machine end to end: kernels, every row, a bench, a repeat run",
                       description="Checks the environment and the kernels' probes, runs every row forward and "
                       "backward on the device, compares the kernels with the PyTorch scan forward and backward at "
                       "every (layer, sequence length, width) the rows run, says which operations of each row cannot "
                       "repeat bit for bit on CUDA, "
                       "times a step per backend and per layout, trains a 2-epoch smoke run twice with the same "
                       "seed, and prints a one-screen summary. Exit 1 if a step failed.")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="default: cuda when a GPU is visible, else cpu (the CPU self-test)")
    p.add_argument("--size", type=int, default=None, help="input side (default 256 on cuda, 64 on cpu)")
    p.add_argument("--batch", type=int, default=None, help="batch of the timed step (default 8 on cuda, 4 on cpu)")
    p.add_argument("--no-train", action="store_true", help="skip the two smoke runs")
    p.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="stop the whole check after this long, saying where (default 1800 on cuda, 900 on cpu)")
    p.add_argument("--json", metavar="FILE", default=None, help="also write the findings as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    import torch

    from study.doctor import DoctorOptions, findings_json, run_doctor, verdict_line
    from study.errors import StudyError

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise StudyError("--device cuda: no CUDA device is visible to torch here "
                         f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})")
    opts = DoctorOptions.for_device(device, size=args.size, batch=args.batch, train=not args.no_train,
                                     time_limit_s=args.time_limit)
    print(f"study doctor on {device}: every row, the kernels, a bench and a repeated smoke run "
          f"(input {opts.size}x{opts.size})", flush=True)
    findings = run_doctor(opts, log=lambda line: print(line, flush=True))
    print(verdict_line(findings))
    if args.json:
        Path(args.json).write_text(findings_json(findings) + "\n")
    return 1 if any(f.verdict == "FAIL" for f in findings) else 0
