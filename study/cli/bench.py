"""`python -m study bench`: train-step and inference timings per Mamba backend."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("bench", help="time a training step and inference of a variant, per Mamba backend",
                       description="Median CPU (and, where available, CUDA) timings. Prints figures, asserts nothing.")
    p.add_argument("--variant", default="ultralbm", help="row id (default ultralbm)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--scan-length", type=int, default=1024,
                   help="sequence length of the scan micro-benchmark (0 skips it)")
    p.add_argument("--no-reference", action="store_true", help="skip the slow sequential reference scan")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from study.bench import bench_model, bench_scan
    from study.models.mamba import available_backends
    from study.variants import find_row

    if args.threads:
        torch.set_num_threads(args.threads)
    row = find_row(args.variant)
    print(f"variant {row.id} ({row.name}); batch {args.batch}, {args.size}x{args.size}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    for backend in available_backends():
        r = bench_model(row.build_model, backend, args.batch, args.size, args.repeats)
        print(f"  mamba backend {r.backend:5s} on {r.device}: train step {r.train_step_s:.3f} s "
              f"(median of {args.repeats}), inference {r.infer_ms:.1f} ms per image")
    if args.scan_length:
        s = bench_scan(length=args.scan_length, with_reference=not args.no_reference)
        line = f"  selective scan fwd+bwd, batch 4, d 16, state 16, L {args.scan_length}: blocked {s['blocked'] * 1e3:.1f} ms"
        if "reference" in s:
            line += f", sequential reference {s['reference'] * 1e3:.1f} ms ({s['reference'] / s['blocked']:.0f}x)"
        print(line)
    return 0
