"""What the peer benchmarks (``detection_vs_ultralytics.py``, ``segmentation_vs_smp.py``) share:
the peer's virtual environment, running a step, the CPU's description, interleaved speed rounds.

A peer library (Ultralytics, segmentation_models_pytorch) is a benchmark-only dependency, never
one of cnnkit's: it gets its own virtual environment.

The peer's environment *sees cnnkit's* (a ``.pth`` file in its site-packages names the running
interpreter's site-packages), so torch, torchvision, NumPy and Pillow are the very same files as
cnnkit's and nothing gigabyte-sized is installed twice; the peer and the few light packages it
really imports are installed with ``pip install --no-deps`` at pinned versions. Packages installed
in the peer environment come first on ``sys.path``, cnnkit's after them.

A peer that brings its own framework (TensorFlow for Keras) is built ``isolated=True`` instead: a
plain virtual environment that does not see cnnkit's, its pins installed with their dependencies.

It lives under cnnkit's cache folder (``$CNNKIT_CACHE/peer-venvs/NAME-HASH``), the hash covering
the pins and cnnkit's site-packages path, so every checkout with the same environment shares one,
and a changed pin builds a new one. A marker file written last says the build finished; a folder
without it (an interrupted build) is built again.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import site
import statistics
import subprocess
import sys
import time
import venv
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

MARKER = "cnnkit-peer.json"


def cnnkit_site_packages() -> list[str]:
    """The running interpreter's site-packages folders (cnnkit's virtual environment)."""
    return [p for p in site.getsitepackages() if Path(p).is_dir()]


def peer_python(
    name: str, pins: Sequence[str], cache: Path | None = None, *, isolated: bool = False
) -> Path:
    """The Python executable of the peer environment ``name`` holding ``pins`` (``pkg==version``),
    built on first use (network: PyPI, through pip's own configuration). ``isolated``: an
    environment of its own that does not see cnnkit's, the pins installed with their dependencies."""
    from cnnkit.io import atomic_write_bytes, cache_dir

    parents = [] if isolated else cnnkit_site_packages()
    key = hashlib.sha256(json.dumps([list(pins), parents]).encode()).hexdigest()[:10]
    root = (cache or cache_dir("peer-venvs")) / f"{name}-{key}"
    python = root / "bin" / "python"
    if (root / MARKER).is_file():
        return python
    if root.exists():  # an interrupted build
        shutil.rmtree(root)
    deps = [] if isolated else ["--no-deps"]
    print(f"building the {name} environment in {root} (pip install {' '.join(deps + list(pins))})")
    venv.EnvBuilder(with_pip=True, clear=True).create(root)
    if not isolated:
        packages = subprocess.run(
            [python, "-c", "import site; print(site.getsitepackages()[0])"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        (Path(packages) / "cnnkit_parent_venv.pth").write_text("".join(p + "\n" for p in parents))
    install = [python, "-m", "pip", "install", *deps, "--disable-pip-version-check", *pins]
    if subprocess.run(install).returncode:
        raise SystemExit(f"{root}: pip could not install {' '.join(pins)} (its output is above)")
    atomic_write_bytes(root / MARKER, json.dumps({"pins": list(pins), "sees": parents}).encode())
    return python


def child_environment(threads: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a benchmark's child process: ``threads`` intra-op threads (OpenMP and
    MKL), cnnkit importable from where this process imported it (a checkout's ``src/`` first),
    output unbuffered (it is shown as it comes), plus ``extra``."""
    import cnnkit

    env = dict(os.environ)
    source = str(Path(cnnkit.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH", "")) if p)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def run(command: list[Any], env: dict[str, str], log: Path) -> float:
    """Run ``command`` (its output to the console and to ``log``); its wall-clock seconds."""
    print("$", " ".join(str(c) for c in command), flush=True)
    start = time.perf_counter()
    with log.open("w") as sink:
        process = subprocess.Popen(
            [str(c) for c in command], env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        assert process.stdout is not None
        for line in process.stdout:
            sink.write(line)
            if "\x1b[K" not in line:  # progress-bar updates (erase-line escapes) stay in the log
                print("  " + line, end="", flush=True)
        code = process.wait()
    if code:
        raise SystemExit(f"{command[0]} exited with status {code}; its output is in {log}")
    return time.perf_counter() - start


def forbid_network() -> None:
    """Make every connection attempt and name lookup of this process an error, so a peer
    library that reaches for the network (weights, fonts, telemetry, update checks) fails loudly
    instead of depending on it."""
    import socket

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OSError(f"network access refused in a peer benchmark: {args[:2]}")

    socket.socket.connect = refuse  # type: ignore[method-assign]
    socket.socket.connect_ex = refuse  # type: ignore[method-assign]
    socket.create_connection = refuse
    socket.getaddrinfo = refuse


def budget_seconds(text: str) -> float:
    """``--budget`` as ``cnnkit train --time-budget`` reads it (300, 90s, 5m)."""
    from cnnkit.cli._common import parse_duration

    return parse_duration(text)


def cpu_description() -> dict[str, str]:
    """``lscpu``'s model name and flags (empty where lscpu is missing)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {"model_name": "", "flags": ""}
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {
        "model_name": fields.get("Model name", "").strip(),
        "flags": fields.get("Flags", "").strip(),
    }


#: the flags that decide a CPU's fp32 and bf16 speed, as the benchmark tables name them
SIMD_FLAGS = ("avx2", "fma")
SIMD_PREFIXES = ("avx512", "amx")


def cpu_line() -> str:
    """One line for a benchmark table: ``lscpu``'s model name and its SIMD flags (AVX2, FMA,
    AVX-512, AMX), e.g. "AMD EPYC (avx2 fma)"."""
    cpu = cpu_description()
    simd = [f for f in cpu["flags"].split() if f in SIMD_FLAGS or f.startswith(SIMD_PREFIXES)]
    return f"{cpu['model_name'] or platform.machine()} ({' '.join(simd) or 'no AVX2'})"


def interleaved_speed(
    calls: dict[str, Callable[[Any], object]],
    images: Any,
    batches: Sequence[int],
    rounds: int,
    images_per_setting: int,
) -> dict[str, dict[str, dict[str, float]]]:
    """Images/s of each of ``calls`` (name → a function of a uint8 batch) at each batch size: in
    every one of ``rounds`` rounds, each (batch, call) setting in turn gets one warm-up call
    (kernels are picked on the first call of a shape) and then ``images_per_setting`` images
    timed, so load from other processes hits all of them alike. Per name and batch size (as a
    string): the median, min and max over the rounds. Run it under ``torch.inference_mode``."""
    if len(images) < max(batches):
        raise ValueError(
            f"speed: {len(images)} images, fewer than the largest batch {max(batches)}"
        )
    rates: dict[tuple[str, int], list[float]] = {(n, b): [] for n in calls for b in batches}
    for _ in range(rounds):
        for batch in batches:
            x = images[:batch]
            for name, call in calls.items():
                call(x)
                repeats = max(1, images_per_setting // batch)
                start = time.perf_counter()
                for _ in range(repeats):
                    call(x)
                rates[(name, batch)].append(repeats * batch / (time.perf_counter() - start))
    return {
        name: {
            str(b): {
                "median": statistics.median(rates[(name, b)]),
                "min": min(rates[(name, b)]),
                "max": max(rates[(name, b)]),
            }
            for b in batches
        }
        for name in calls
    }


if __name__ == "__main__":  # build one by hand: python benchmarks/peers.py NAME PIN...
    print(peer_python(sys.argv[1], sys.argv[2:]))
