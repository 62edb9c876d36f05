"""llama.cpp's own `llama-server`, the peer to beat: built once from the llama.cpp source that the installed
llama-cpp-python release vendors (the same commit parley runs), with the CPU flags parley's own build uses,
and cached outside the repository.

    python -m parley.bench.llama_server_build        # build it when missing (about 7 minutes on 2 cores)
    binary()                                         # its path, or None when it is not built yet

Where: `$PARLEY_LLAMA_SERVER_DIR`, else `~/.cache/parley/llama-server`, one directory per llama-cpp-python
version and flag set (`0.3.36-<hash of the flags>/llama-server`, with `build.json` saying how it was built
and how long that took). Steps: `pip download --no-binary :all:` the sdist of the installed version (PyPI
has no other), unpack it, `cmake` its `vendor/llama.cpp` with `scripts/llama-cmake-args`' flags (the native
build crashes on these Xeons' AMX; see that script) and a static link, build the one target `llama-server`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

FLAGS_SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "llama-cmake-args"
# what llama-server needs and nothing more: no curl (no internet here), no tests, examples or multimodal
FIXED = ["-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=ON",
         "-DBUILD_SHARED_LIBS=OFF", "-DCMAKE_BUILD_TYPE=Release"]


def version() -> str:
    return importlib.metadata.version("llama-cpp-python")


def cpu_flags() -> list[str]:
    """The -DGGML_* flags scripts/llama-cmake-args picks for this CPU (the ones llama-cpp-python was built with
    by `make`), without LLAVA (a llama-cpp-python option, not llama.cpp's)."""
    if not FLAGS_SCRIPT.exists():
        raise RuntimeError(f"{FLAGS_SCRIPT} is missing: build llama-server from a parley checkout")
    out = subprocess.run(["sh", str(FLAGS_SCRIPT)], check=True, capture_output=True, text=True).stdout.split()
    return [f for f in out if not f.startswith("-DLLAVA")]


def home() -> Path:
    return Path(os.environ.get("PARLEY_LLAMA_SERVER_DIR") or Path.home() / ".cache" / "parley" / "llama-server")


def build_dir(flags: list[str] | None = None) -> Path:
    flags = cpu_flags() if flags is None else flags
    key = hashlib.sha256(" ".join(flags + FIXED).encode()).hexdigest()[:10]
    return home() / f"{version()}-{key}"


def binary() -> Path | None:
    """The built llama-server for this llama-cpp-python version and CPU, or None."""
    try:
        path = build_dir() / "llama-server"
    except (RuntimeError, OSError, subprocess.CalledProcessError):
        return None
    return path if path.is_file() and os.access(path, os.X_OK) else None


def build(log=lambda msg: print(msg, file=sys.stderr, flush=True)) -> Path:
    """Build llama-server when it is missing; its path. Raises RuntimeError saying which step failed."""
    found = binary()
    if found is not None:
        return found
    flags = cpu_flags()
    out = build_dir(flags)
    started = time.monotonic()
    log(f"building llama-server from llama-cpp-python {version()}'s vendored llama.cpp with {' '.join(flags)} "
        "(once per machine; about 7 minutes on 2 cores)")
    with tempfile.TemporaryDirectory(prefix="parley-llama-server-") as tmp:
        work = Path(tmp)
        run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--dest", str(work),
             f"llama-cpp-python=={version()}"], "pip download of the llama-cpp-python sdist")
        (sdist,) = work.glob("llama_cpp_python-*.tar.gz")
        with tarfile.open(sdist) as t:
            t.extractall(work, filter="data")
        (src,) = [p / "vendor" / "llama.cpp" for p in work.iterdir() if p.is_dir()]
        build_tree = work / "build"
        run(["cmake", "-S", str(src), "-B", str(build_tree), *flags, *FIXED], "cmake configure")
        run(["cmake", "--build", str(build_tree), "-j", str(os.cpu_count() or 2), "--target", "llama-server"],
            "cmake build")
        made = build_tree / "bin" / "llama-server"
        if not made.is_file():
            raise RuntimeError(f"the build finished without {made}")
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy2(made, out / "llama-server.part")
        (out / "llama-server.part").rename(out / "llama-server")
    took = time.monotonic() - started
    (out / "build.json").write_text(json.dumps({"llama_cpp_python": version(), "flags": flags + FIXED,
                                                "seconds": round(took, 1), "built_at": time.time()}, indent=1))
    log(f"built {out / 'llama-server'} in {took / 60:.1f} min")
    return out / "llama-server"


def run(argv: list[str], step: str) -> None:
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{step} failed (exit {r.returncode}): {(r.stderr or r.stdout)[-1500:]}")


def main() -> int:
    try:
        path = build()
    except RuntimeError as e:
        print(f"llama-server: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
