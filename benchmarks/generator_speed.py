"""StyleGAN2 generator speed on this machine (a script, not a test).

Measures, for the config-f 256 and 1024 generators at batch 1:
  * forward (no grad) and forward+backward (gradients for every generator weight, as DHR's
    weight refinement needs) wall time, best of --repeats runs;
  * FLOPs of both with torch.utils.flop_counter.FlopCounterMode;
  * this machine's dense matmul throughput (fp32 and bf16, 4096^3 GEMM) as the peak;
  * achieved GFLOP/s and the achieved/peak ratio;
  * the variants: dhr's default path (channels-last activations on CPU), plain NCHW,
    torch.compile of the default path, and bf16 autocast.
Target (2-core CPU): forward+backward of the 1024 generator >= 35% of the fp32 matmul peak.

    python benchmarks/generator_speed.py [--sizes 256 1024] [--repeats 3] [--variants ...]
        [--json results.json]

The CPU may be shared: the load average is printed before and after, and best-of-N timing
is used to reduce (not remove) the effect of other processes.
"""

from __future__ import annotations

import argparse
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
    return best_times(fn, repeats, warmup)[0]


def best_times(fn: Callable[[], object], repeats: int, warmup: int = 1) -> tuple[float, float]:
    """(best wall time, process CPU time of that run): CPU time / wall time close to the
    thread count means the run had the cores to itself."""
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        runs.append((time.perf_counter() - t, time.process_time() - c))
    return min(runs)


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
    gen.channels_last = False if variant == "nchw" else None
    model: Callable = gen
    if variant == "compile":
        model = torch.compile(gen)
    amp = (
        (lambda: torch.autocast("cpu", dtype=torch.bfloat16))
        if variant == "bf16"
        else (lambda: nullcontext())
    )

    def fwd() -> None:
        with torch.no_grad(), amp():
            model(w)

    def fwd_bwd() -> None:
        gen.zero_grad(set_to_none=True)
        with amp():
            img = model(w)
        img.float().square().mean().backward()

    return fwd, fwd_bwd


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    print(
        f"machine: {cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    mm32, dnn32 = matmul_peak(torch.float32)
    mm16, dnn16 = matmul_peak(torch.bfloat16)
    peak32, peak16 = max(mm32, dnn32), max(mm16, dnn16)
    print(
        f"dense matmul (4096^3, best of 5): fp32 torch.mm {mm32:.1f}, oneDNN {dnn32:.1f} GFLOP/s; "
        f"bf16 torch.mm {mm16:.1f}, oneDNN {dnn16:.1f} GFLOP/s; peak = the higher of each"
    )
    results: dict = {
        "matmul_gflops": {
            "fp32_mm": mm32,
            "fp32_onednn": dnn32,
            "bf16_mm": mm16,
            "bf16_onednn": dnn16,
        },
        "peak_fp32_gflops": peak32,
        "peak_bf16_gflops": peak16,
        "runs": [],
    }

    header = f"{'size':>5} {'variant':>8} {'pass':>7} {'GFLOP':>7} {'time s':>8} {'GFLOP/s':>8} {'/fp32 peak':>10} {'cpu/wall':>5}"
    print(header)
    print("-" * len(header))
    for size in args.sizes:
        torch.manual_seed(0)
        gen = Generator(GeneratorConfig.config_f(size))
        w = torch.randn(1, gen.n_latent, gen.style_dim)
        fwd, fwd_bwd = make_steps(gen, w, "default")
        flops = {"fwd": count_flops(fwd), "fwd+bwd": count_flops(fwd_bwd)}
        for variant in args.variants:
            try:
                t_compile = time.perf_counter()
                fwd, fwd_bwd = make_steps(gen, w, variant)
                fwd()  # for torch.compile: the (long) compilation happens here
                fwd_bwd()
                t_compile = time.perf_counter() - t_compile
                for name, fn in (("fwd", fwd), ("fwd+bwd", fwd_bwd)):
                    t, cpu = best_times(fn, args.repeats, warmup=0)
                    gflops = flops[name] / t / 1e9
                    row = {
                        "size": size,
                        "variant": variant,
                        "pass": name,
                        "gflop": flops[name] / 1e9,
                        "seconds": t,
                        "cpu_seconds": cpu,
                        "gflops": gflops,
                        "ratio_fp32_peak": gflops / peak32,
                    }
                    if variant == "bf16":
                        row["ratio_bf16_peak"] = gflops / peak16
                    if variant == "compile":
                        row["first_call_seconds"] = t_compile
                    results["runs"].append(row)
                    extra = (
                        f"  (/bf16 peak {row['ratio_bf16_peak']:.0%})" if variant == "bf16" else ""
                    )
                    if variant == "compile" and name == "fwd":
                        extra = f"  (compile+first calls {t_compile:.0f} s)"
                    print(
                        f"{size:>5} {variant:>8} {name:>7} {flops[name] / 1e9:>7.1f} {t:>8.3f} "
                        f"{gflops:>8.1f} {gflops / peak32:>10.0%} {cpu / t:>5.2f}{extra}",
                        flush=True,
                    )
            except Exception as e:  # noqa: BLE001 - a variant failing is a result, not a crash
                print(
                    f"{size:>5} {variant:>8}  failed: {type(e).__name__}: {str(e).splitlines()[0]}"
                )
                results["runs"].append({"size": size, "variant": variant, "error": str(e)})
            finally:
                gen.channels_last = None
                torch._dynamo.reset()
        del gen

    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    main_run = [
        r
        for r in results["runs"]
        if r.get("size") == 1024 and r.get("variant") == "default" and r.get("pass") == "fwd+bwd"
    ]
    if main_run:
        ratio = main_run[0]["ratio_fp32_peak"]
        verdict = "met" if ratio >= TARGET else "NOT met"
        print(
            f"target: 1024 fwd+bwd (default path) at {ratio:.0%} of fp32 matmul peak "
            f"(target >= {TARGET:.0%}): {verdict}"
        )
        results["target_met"] = ratio >= TARGET
    for size in args.sizes:
        rows = [r for r in results["runs"] if r.get("size") == size and r.get("pass") == "fwd+bwd"]
        if rows:
            best = min(rows, key=lambda r: r["seconds"])
            print(f"fastest fwd+bwd at {size}: {best['variant']} ({best['seconds']:.2f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
