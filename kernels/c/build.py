"""Compile generated programs with the system C compiler into a content-addressed cache.

A binary's file name carries a hash of its source, the compiler flags and the compiler's version,
so a changed generator, flag or compiler upgrade never reuses a stale binary, and equal programs
are compiled once per machine (a tuner revisits configurations all the time). Builds write to a
temporary file in the cache directory and ``os.replace`` it into place: concurrent processes
building the same program both succeed and readers never see a half-written binary.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

BASE_FLAGS = ("-std=c11", "-O3", "-fopenmp")
NATIVE_FLAG = "-march=native"
COMPILE_TIMEOUT = 300.0
# SpMV: GCC's default -O3 cost model vectorizes the dot loop as a gather followed by an in-order
# (unreassociable) reduction, which measured 1.5x slower than scalar code on an AVX-512 EPYC;
# the "very-cheap" model (GCC's -O2 default) leaves it scalar. SpMM's K loop is contiguous and
# does gain from the default model, so it keeps it.
# SpMV: its loops also start on 32-byte boundaries (-falign-loops/-jumps=32). With GCC's default
# layout under -march=native the row loop of cryg2500 (12k nonzeros, 5 a row) ran in 10.6-11 us
# in most processes against 7.3-8.0 us for scipy; aligned, 6.3-7.5 us (Intel's uop cache works
# in 32-byte windows). Other matrices moved within their run-to-run spread.
OP_FLAGS = {"spmv": ("-fvect-cost-model=very-cheap", "-falign-loops=32", "-falign-jumps=32"),
            "ttv": ("-fvect-cost-model=very-cheap",)}  # TTV's fiber loop is an SpMV dot
CXX_FLAGS = ("-std=c++17", "-O2", "-Wno-unknown-pragmas")
_PROBE = "#include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n"
_CXX_PROBE = "#include <deque>\nint main() { std::deque<int> q; return (int) q.size(); }\n"


class BuildError(RuntimeError):
    """No usable C compiler, or a program failed to compile (an environment problem or a
    generator bug, never the caller's arguments)."""


def cache_dir() -> Path:
    """Where binaries live: $PERFJAX_CACHE if set, else ~/.cache/perfjax/kernels."""
    env = os.environ.get("PERFJAX_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "perfjax" / "kernels"


def _find_compiler(what: str, variable: str, names: tuple[str, ...]) -> str:
    """Path of the first of $``variable`` and ``names`` found on PATH, else BuildError."""
    for name in (os.environ.get(variable), *names):
        path = shutil.which(name) if name else None
        if path:
            return path
    raise BuildError(f"no {what} compiler found (looked for ${variable}, "
                     f"{' and '.join(names)} on PATH)")


def _version(cc: str) -> str:
    """First line of ``cc --version``: part of the cache key."""
    run = _run([cc, "--version"])
    return (run.stdout.splitlines() or [""])[0].strip()


def _complaint(cc: str, used: tuple[str, ...], source: str, language: str) -> str | None:
    """None if ``cc`` with flags ``used`` compiles and links the probe ``source``, else the
    compiler's complaint."""
    with tempfile.TemporaryDirectory(prefix="perfjax-probe-") as tmp:
        run = _run([cc, *used, "-x", language, "-", "-o", str(Path(tmp) / "probe")],
                   stdin=source)
    return None if run.returncode == 0 else run.stderr.strip()[-2000:]


@functools.cache
def compiler() -> str:
    """Path of the C compiler: $CC if set, else ``cc``, else ``gcc``."""
    return _find_compiler("C", "CC", ("cc", "gcc"))


@functools.cache
def compiler_version() -> str:
    """First line of ``cc --version``: part of the cache key."""
    return _version(compiler())


@functools.cache
def flags(op: str) -> tuple[str, ...]:
    """Compiler flags for programs of ``op``: BASE_FLAGS, plus -march=native and the op's
    OP_FLAGS where the compiler accepts them (decided once per process by compiling a tiny
    OpenMP program)."""
    def compiles(candidate: tuple[str, ...]) -> str | None:
        return _complaint(compiler(), candidate, _PROBE, "c")

    common = (NATIVE_FLAG, *BASE_FLAGS)
    if compiles(common) is not None:
        common = BASE_FLAGS
        error = compiles(common)
        if error is not None:
            raise BuildError(f"{compiler()} cannot compile C11 with OpenMP "
                             f"({' '.join(BASE_FLAGS)}): {error}")
    extra = OP_FLAGS.get(op, ())
    return common + extra if extra and compiles(common + extra) is None else common


def source_hash(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


def build(spec) -> Path:
    """Path of the compiled program for ``spec``, compiling it unless the cache has it.

    ``spec`` is a spec of any generator (``perfjax.kernels.c.emit.KernelSpec``,
    ``perfjax.kernels.c.ops.OpSpec``, ``perfjax.kernels.c.hls.HlsSpec``): an object with
    ``name``, ``source()``, ``language`` ("c" or "c++") and ``flag_op``. C++ programs (the HLS
    C simulations) get ``cxx_flags()`` and this directory (``hls_stream.h``) as -I.
    """
    if spec.language == "c++":
        include = Path(__file__).parent
        return build_program(spec.name, spec.source(), cxx_flags(), language="c++",
                             includes=(include,))
    return build_program(spec.name, spec.source(), flags(spec.flag_op))


def build_program(name: str, source: str, used: tuple[str, ...], *, language: str = "c",
                  includes: tuple[Path, ...] = ()) -> Path:
    """Compile ``source`` (C, or C++ with ``language="c++"``) with flags ``used`` into the cache.

    The cache key covers the source, the flags, the compiler's version and the text of every
    header in ``includes`` (the directories passed as -I), so editing a header rebuilds.
    """
    cc = compiler() if language == "c" else cxx_compiler()
    version = compiler_version() if language == "c" else cxx_compiler_version()
    headers = [path.read_text() for directory in includes
               for path in sorted(Path(directory).glob("*.h"))]
    key = hashlib.sha256("\0".join([source, " ".join(used), version, *headers]).encode())
    directory = cache_dir()
    binary = directory / f"{name}-{key.hexdigest()[:20]}"
    if binary.is_file():
        return binary
    suffix = ".c" if language == "c" else ".cpp"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _atomic_write(directory / f"{binary.name}{suffix}", source.encode())  # kept for reading
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{binary.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as exc:
        raise BuildError(f"cannot write to the kernel cache directory {directory}: {exc}") from None
    try:
        include_flags = [f"-I{directory}" for directory in includes]
        run = _run([cc, *used, *include_flags, "-x", language, "-", "-o", tmp], stdin=source)
        if run.returncode != 0:
            raise BuildError(f"compiling {name} failed ({cc} {' '.join(used)}): "
                             f"{run.stderr.strip()[-2000:]}")
        os.chmod(tmp, 0o755)  # mkstemp made it 0600; the linker may keep that mode
        os.replace(tmp, binary)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return binary


@functools.cache
def cxx_compiler() -> str:
    """Path of the C++ compiler (C simulation of the HLS kernels): $CXX, else c++, else g++."""
    return _find_compiler("C++", "CXX", ("c++", "g++"))


@functools.cache
def cxx_compiler_version() -> str:
    """First line of ``c++ --version``: part of the cache key of C++ programs."""
    return _version(cxx_compiler())


@functools.cache
def cxx_flags() -> tuple[str, ...]:
    """Flags for the HLS C simulations: C++17, -O2, and HLS pragmas silently ignored."""
    error = _complaint(cxx_compiler(), CXX_FLAGS, _CXX_PROBE, "c++")
    if error is not None:
        raise BuildError(f"{cxx_compiler()} cannot compile C++17 ({' '.join(CXX_FLAGS)}): "
                         f"{error}")
    return CXX_FLAGS


def _run(args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run the compiler; its failing to start or finish is a BuildError like any other."""
    try:
        return subprocess.run(args, input=stdin, capture_output=True, text=True,
                              timeout=COMPILE_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildError(f"running {args[0]} failed: {exc}") from None


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``path`` (world-readable) so that no reader ever sees it half written."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
