"""runtime.py: --device values, and how dhr's processes meet signals."""

from __future__ import annotations

import subprocess
import sys


def test_device_is_read_case_blind() -> None:
    from dhr_cli.runtime import check_device_spec

    # torch itself refuses "CPU"; users type it that way, so dhr normalises it.
    assert check_device_spec(" CPU ") == "cpu"
    assert check_device_spec("CUDA:1") == "cuda:1"
    assert check_device_spec("Auto") == "auto"


def test_signals_deferred_reach_their_handlers_after_the_block() -> None:
    import os
    import signal

    from dhr_cli.runtime import signals_deferred

    seen: list[str] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append("handler"))
    try:
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            seen.append("block ends")
        assert seen == ["block ends", "handler"]
    finally:
        signal.signal(signal.SIGTERM, previous)
    # with no handler of its own (bench used as a library) the process still ends, after it
    code = (
        "import os, signal\n"
        "from dhr_cli.runtime import signals_deferred\n"
        "with signals_deferred():\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    print('deferred', flush=True)\n"
        "print('not reached')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == -signal.SIGTERM and r.stdout == "deferred\n", r
