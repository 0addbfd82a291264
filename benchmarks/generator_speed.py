"""StyleGAN2 generator speed on this machine (a script, not a test).

Measures, for the config-f 256 and 1024 generators at batch 1:
  * forward (no grad) and forward+backward (gradients for every generator weight, as DHR's
    weight refinement needs) wall time, best of --repeats runs;
  * FLOPs of both with torch.utils.flop_counter.FlopCounterMode;
  * this machine's dense matmul throughput (fp32 and bf16, 4096^3 GEMM) as the peak;
  * achieved GFLOP/s and the achieved/peak ratio;
  * the variants: dhr's default path (channels-last activations and weights on CPU), plain
    NCHW (activations and weights), torch.compile of the default path, bf16 autocast.
Target (2-core CPU): forward+backward of the 1024 generator >= 35% of the fp32 matmul peak.

    python benchmarks/generator_speed.py [--sizes 256 1024] [--repeats 3] [--variants ...]
        [--json results.json]

The CPU may be shared: variants run interleaved in rounds (so they see the same load), the
best round is kept, the load average is printed and each row reports process CPU time over
wall time (close to the thread count = the run had its cores; much lower = contention).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch
from torch.utils.flop_counter import FlopCounterMode

from dhr_cli.nets.stylegan2 import Generator, GeneratorConfig

TARGET = 0.35
VARIANTS = ("default", "nchw", "compile", "bf16")


def best_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    return min(timed(fn)[0] for _ in range(repeats))


def matmul_peak(dtype: torch.dtype, n: int = 4096, repeats: int = 5) -> tuple[float, float]:
    """Dense GEMM GFLOP/s (best of `repeats`): (torch.mm, the same GEMM as a oneDNN 1x1 conv).

    torch.mm goes to MKL, which on non-Intel CPUs may not use its fastest kernels; the
    convolutions run on oneDNN, so its GEMM speed is the fairer (and higher) peak.
    """
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    mm = 2 * n**3 / best_time(lambda: a @ b, repeats) / 1e9
    # [1, n, 64, 64] x [n, n, 1, 1] is a 4096 x n x n GEMM
    x = torch.randn(1, n, 64, 64).to(dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(n, n, 1, 1).to(dtype).contiguous(memory_format=torch.channels_last)
    conv = 2 * 64 * 64 * n * n / best_time(lambda: torch.nn.functional.conv2d(x, w), repeats) / 1e9
    return mm, conv


def count_flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def make_steps(gen: Generator, w: torch.Tensor, variant: str):
    """(forward, forward+backward) closures for one variant."""
    if variant == "nchw":  # a copy with plain NCHW weights (dhr stores them channels-last)
        gen = copy.deepcopy(gen)
        for p in gen.parameters():
            p.data = p.data.contiguous()
    model: Callable = torch.compile(gen) if variant == "compile" else gen
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if variant == "bf16" else nullcontext()
    layout = False if variant == "nchw" else None

    def fwd() -> None:
        gen.channels_last = layout
        try:
            with torch.no_grad(), amp:
                model(w)
        finally:
            gen.channels_last = None

    def fwd_bwd() -> None:
        gen.channels_last = layout
        try:
            gen.zero_grad(set_to_none=True)
            with amp:
                img = model(w)
            img.float().square().mean().backward()
        finally:
            gen.channels_last = None

    return fwd, fwd_bwd


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds (best is kept)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()

    print(
        f"machine: {cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {threads} threads"
    )
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    peaks = {"fp32_mm": 0.0, "fp32_onednn": 0.0, "bf16_mm": 0.0, "bf16_onednn": 0.0}

    def measure_peaks() -> None:
        for dtype, tag in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
            mm, dnn = matmul_peak(dtype, repeats=2)
            peaks[f"{tag}_mm"] = max(peaks[f"{tag}_mm"], mm)
            peaks[f"{tag}_onednn"] = max(peaks[f"{tag}_onednn"], dnn)

    results: dict = {"threads": threads, "runs": []}
    for size in args.sizes:
        torch.manual_seed(0)
        gen = Generator(GeneratorConfig.config_f(size))
        w = torch.randn(1, gen.n_latent, gen.style_dim)
        fwd, fwd_bwd = make_steps(gen, w, "default")
        flops = {"fwd": count_flops(fwd), "fwd+bwd": count_flops(fwd_bwd)}
        steps, first_call, errors = {}, {}, {}
        for variant in args.variants:
            try:
                t = time.perf_counter()
                steps[variant] = make_steps(gen, w, variant)
                for fn in steps[variant]:  # warm-up; torch.compile compiles here
                    fn()
                first_call[variant] = time.perf_counter() - t
            except Exception as e:  # noqa: BLE001 - a variant failing is a result, not a crash
                errors[variant] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
                steps.pop(variant, None)
        best: dict[tuple[str, str], tuple[float, float]] = {}
        for _ in range(args.repeats):  # interleaved, so every variant sees the same load
            measure_peaks()
            for variant, (f1, f2) in steps.items():
                for name, fn in (("fwd", f1), ("fwd+bwd", f2)):
                    run = timed(fn)
                    if (variant, name) not in best or run < best[(variant, name)]:
                        best[(variant, name)] = run
        results["runs"] += [
            {
                "size": size,
                "variant": v,
                "pass": n,
                "gflop": flops[n] / 1e9,
                "seconds": t,
                "cpu_seconds": c,
                "first_call_seconds": first_call[v],
            }
            for (v, n), (t, c) in best.items()
        ]
        results["runs"] += [{"size": size, "variant": v, "error": e} for v, e in errors.items()]
        del gen, steps
        torch._dynamo.reset()

    peak32 = max(peaks["fp32_mm"], peaks["fp32_onednn"])
    peak16 = max(peaks["bf16_mm"], peaks["bf16_onednn"])
    results.update(matmul_gflops=peaks, peak_fp32_gflops=peak32, peak_bf16_gflops=peak16)
    print(
        f"dense matmul 4096^3 (best over the rounds): fp32 torch.mm {peaks['fp32_mm']:.1f}, "
        f"oneDNN {peaks['fp32_onednn']:.1f} GFLOP/s; bf16 torch.mm {peaks['bf16_mm']:.1f}, "
        f"oneDNN {peaks['bf16_onednn']:.1f} GFLOP/s; peak = the higher of each"
    )
    header = (
        f"{'size':>5} {'variant':>8} {'pass':>7} {'GFLOP':>7} {'time s':>8} {'GFLOP/s':>8} "
        f"{'/fp32 peak':>10} {'cpu/wall':>8}"
    )
    print(header)
    print("-" * len(header))
    for row in results["runs"]:
        if "error" in row:
            print(f"{row['size']:>5} {row['variant']:>8}  failed: {row['error']}")
            continue
        row["gflops"] = row["gflop"] / row["seconds"]
        row["ratio_fp32_peak"] = row["gflops"] / peak32
        extra = ""
        if row["variant"] == "bf16":
            row["ratio_bf16_peak"] = row["gflops"] / peak16
            extra = f"  (/bf16 peak {row['ratio_bf16_peak']:.0%})"
        if row["variant"] == "compile" and row["pass"] == "fwd":
            extra = f"  (compile + first calls {row['first_call_seconds']:.0f} s)"
        print(
            f"{row['size']:>5} {row['variant']:>8} {row['pass']:>7} {row['gflop']:>7.1f} "
            f"{row['seconds']:>8.3f} {row['gflops']:>8.1f} {row['ratio_fp32_peak']:>10.0%} "
            f"{row['cpu_seconds'] / row['seconds']:>8.2f}{extra}"
        )
    print(
        f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}  "
        f"(cpu/wall near {threads} = the run had its cores)"
    )
    main_run = [
        r
        for r in results["runs"]
        if r.get("size") == 1024 and r.get("variant") == "default" and r.get("pass") == "fwd+bwd"
    ]
    if main_run:
        ratio = main_run[0]["ratio_fp32_peak"]
        results["target_met"] = ratio >= TARGET
        print(
            f"target: 1024 fwd+bwd (default fp32 path) at {ratio:.0%} of the fp32 matmul peak "
            f"(target >= {TARGET:.0%}): {'met' if ratio >= TARGET else 'NOT met'}"
        )
    for size in args.sizes:
        rows = [r for r in results["runs"] if r.get("size") == size and r.get("pass") == "fwd+bwd"]
        if rows:
            fastest = min(rows, key=lambda r: r["seconds"])
            print(f"fastest fwd+bwd at {size}: {fastest['variant']} ({fastest['seconds']:.2f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
