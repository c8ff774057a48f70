"""`python -m study bench`: ours against the straightforward implementation, per Mamba backend."""

from __future__ import annotations

# Kernels and the PyTorch scan must give the same logits up to float rounding
# (relative to the logits' size); more is a wrong kernel or a wrong scan.
AGREE_TOLERANCE = 1e-3
BACKEND_WORDS = {"torch": "PyTorch ops only", "native": "C kernels", "cuda": "mamba-ssm kernels"}


def register(sub) -> None:
    p = sub.add_parser("bench", help="time a training step and inference against the mambapy reference",
                       description="Median timings, interleaved with the reference. Prints figures, asserts nothing.")
    p.add_argument("--variant", default="ultralbm", help="row id (default ultralbm)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: the CPUs this process may use)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cpu: time the C kernels and the PyTorch ops and check they agree; cuda: the same for "
                        "the mamba-ssm kernels and the PyTorch scan on the GPU")
    p.add_argument("--scan-length", type=int, default=1024,
                   help="sequence length of the scan micro-benchmark (0 skips it)")
    p.add_argument("--no-reference", action="store_true",
                   help="skip the mambapy reference and the sequential scan reference")
    p.add_argument("--record", action="store_true",
                   help="save this device's train-step figure in the results store, for `run --dry-run` estimates")
    p.add_argument("--results", default=None, help="results store root (default: $STUDY_RESULTS or ./results)")
    p.add_argument("--concurrent", default=None, metavar="K,K,...",
                   help="instead: train K smoke runs at once for each K (e.g. 1,2,4,8) and print the epochs per "
                        "minute of each, and the runs per device (a cluster profile's runs_per_task) it recommends")
    p.add_argument("--epochs", type=int, default=3, help="epochs of each --concurrent smoke run (default 3)")
    p.set_defaults(func=run)


def run_concurrent(args) -> int:
    from study.bench_concurrency import NEAR_BEST, measure, recommend
    from study.errors import ConfigError

    try:
        counts = sorted({int(k) for k in args.concurrent.split(",")})
    except ValueError:
        raise ConfigError(f"--concurrent: expected numbers separated by commas, got {args.concurrent!r}") from None
    if not counts or counts[0] < 1:
        raise ConfigError(f"--concurrent: each K must be at least 1, got {args.concurrent!r}")
    print(f"{args.variant}: smoke runs of {args.epochs} epochs on {args.device}, K at once for K in "
          f"{', '.join(map(str, counts))} (wall clock: run it alone)")
    results = measure(args.variant, counts, args.epochs, args.device)
    best = recommend(results)
    print(f"recommended: {best} run(s) per {args.device} (the fewest within {NEAR_BEST:.0%} of the best "
          f"throughput); on a cluster set runs_per_task = {best} in the profile")
    return 0


def _spread(t) -> str:
    return f"{t.low_s * 1e3:.0f}-{t.high_s * 1e3:.0f} ms"


def _print_comparison(c, repeats: int) -> None:
    print(f"  train step   ours {c.ours_train.median_s:.3f} s ({_spread(c.ours_train)}), "
          f"reference {c.reference_train.median_s:.3f} s ({_spread(c.reference_train)}): "
          f"ratio {c.train_ratio:.2f}")
    print(f"  inference    ours {c.ours_infer.median_s * 1e3:.1f} ms, reference "
          f"{c.reference_infer.median_s * 1e3:.1f} ms per image: ratio {c.infer_ratio:.2f}")
    print(f"  (medians of {repeats} train steps and {repeats * 4} inferences, interleaved; "
          f"largest logit difference {c.logits_max_diff:.1e})")


def _record(args, row, result, where: str) -> None:
    import time

    from study.store.atomic import atomic_write_json
    from study.store.runs import RESULTS_DIR, Store
    from study.train.numerics import settings

    store = Store(args.results or RESULTS_DIR)
    path = store.bench_path(args.device)
    atomic_write_json(path, {"arch": row.arch, "variant": row.id, "size": args.size, "batch": args.batch,
                             "train_step_s": result.train.median_s, "mamba_backend": result.backend,
                             "numerics": settings(args.device),
                             "where": where, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    print(f"  recorded in {path} (used by `run --dry-run` where no epochs are recorded)")


def run(args) -> int:
    import torch

    if args.concurrent:
        return run_concurrent(args)
    from study import kernels
    from study.bench import bench_backend, bench_scan, compare_with_reference
    from study.errors import StudyError
    from study.launch.cpus import configure_process, local_share
    from study.models.mamba import available_backends
    from study.variants import find_row

    row = find_row(args.variant)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise StudyError("--device cuda: no CUDA device is visible to torch here")
    share = local_share([], jobs=1, threads=args.threads)  # the busy CPUs sampled once, for both uses
    configure_process(share.threads)
    from study.train.numerics import apply as apply_numerics

    apply_numerics(args.device)  # before anything probes a kernel or starts cuBLAS
    busy = share.busy
    if busy:
        print(f"warning: {busy} CPU(s) are busy with other work: these timings are unreliable (the ratios less so); "
              "time it alone")
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"{torch.get_num_threads()} CPU threads"
    print(f"variant {row.id} ({row.name}); batch {args.batch}, {args.size}x{args.size}; "
          f"torch {torch.__version__}, {where}")
    if args.device == "cpu":
        print(f"CPU kernels: {kernels.status()}")
    if not args.no_reference:
        print("ours (fast path) vs reference (mambapy's Mamba, plain eager NCHW, AdamW loop):")
        c = compare_with_reference(row.build_model, args.batch, args.size, args.repeats, args.device)
        _print_comparison(c, args.repeats)
    kernel = "cuda" if args.device == "cuda" else "native"
    backends = ["torch"] + ([kernel] if kernel in available_backends() else [])
    results = [bench_backend(row.build_model, b, args.batch, args.size, max(3, args.repeats // 2), args.device)
               for b in backends]
    for r in results:  # the inference of ours was timed above against the reference: said once
        what = BACKEND_WORDS[r.backend]
        infer = "" if not args.no_reference and r is results[-1] else \
            f", inference {r.infer.median_s * 1e3:.1f} ms per image"
        print(f"  ours, {what + ':':28s} train step {r.train.median_s:.3f} s{infer}")
    if args.record:
        _record(args, row, results[-1], where)
    agree = True
    if len(results) == 2:
        diff = float((results[0].logits - results[1].logits).abs().max())
        scale = 1.0 + float(results[0].logits.abs().max())
        agree = diff <= AGREE_TOLERANCE * scale
        print(f"  kernels vs PyTorch: largest logit difference {diff:.1e}: "
              + ("they agree" if agree else f"they DISAGREE (more than {AGREE_TOLERANCE:g} x {scale:.1f})"))
    if args.device == "cuda" and len(results) == 1:
        from study.models.cuda_kernels import kernels_for

        print(f"  mamba-ssm kernels unusable ({kernels_for('cuda').problem}): only the PyTorch scan was timed "
              "(see the README's GPU install)")
    if args.scan_length and args.device == "cpu":
        s = bench_scan(length=args.scan_length, with_reference=not args.no_reference)
        line = f"  selective scan fwd+bwd, batch 4, d 16, state 16, L {args.scan_length}: {s['scan'] * 1e3:.1f} ms"
        if "native" in s:
            line += f", C kernel {s['native'] * 1e3:.1f} ms"
        if "reference" in s:
            line += f", sequential reference {s['reference'] * 1e3:.1f} ms ({s['reference'] / s['scan']:.0f}x)"
        print(line)
    return 0 if agree else 1
