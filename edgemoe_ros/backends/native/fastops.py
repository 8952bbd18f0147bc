# SPDX-License-Identifier: Apache-2.0
"""Build, cache and bind ``fastops.cpp``: the CPU backend's fused float32 kernels.

The library is compiled on first use with the flags below into ``build/native/`` of a source
checkout, or into ``$XDG_CACHE_HOME/edgemoe_ros/native`` (``~/.cache/...``) where that is not
writable (an installed package). Its file name carries a hash of the source, the compiler, the
flags and the host CPU, so an edited source, other flags or a build for another machine
(``-march=native``) can never be picked up; concurrent builders are serialised with a file lock
and the library is renamed into place only when complete. On load the library must report
``ABI_VERSION``, which refuses a foreign or stale file put there by hand.

``native_ops(mode)`` is the policy the backend uses: ``"auto"`` returns ``None`` (numpy path)
with ONE warning per process if the library cannot be built, ``"on"`` raises, ``"off"`` never
builds.
"""

from __future__ import annotations

import ctypes
import fcntl
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..base import BackendError

log = logging.getLogger(__name__)

#: Must equal FASTOPS_ABI_VERSION in fastops.cpp.
ABI_VERSION = 6
SOURCE = Path(__file__).with_name("fastops.cpp")
LIB_PREFIX = "libedgemoe_fastops"
#: Environment variable naming the C++ compiler (``g++`` when unset).
COMPILER_ENV = "EDGEMOE_CXX"
DEFAULT_COMPILER = "g++"
#: No -ffast-math: it would reassociate every sum and, with GCC < 13, link crtfastmath.o, which
#: flushes denormals to zero for the whole process. Only what changes nothing beyond float32
#: rounding: FMA contraction, no errno/FP-trap bookkeeping (lets comparisons vectorise), and
#: -fopenmp-simd (no runtime, no threads) so only the sums marked ``omp simd reduction`` are
#: reassociated. -fno-gnu-unique as for the csim library: two loaded copies stay independent.
CXXFLAGS = ("-O3", "-march=native", "-ffp-contract=fast", "-fno-trapping-math", "-fno-math-errno",
            "-fopenmp-simd", "-fno-gnu-unique", "-std=c++17", "-fPIC", "-shared", "-Wall",
            "-Wextra")
#: Seconds the compile may take (about 2 s on one core).
BUILD_TIMEOUT_S = 120
MODES = ("auto", "on", "off")
#: Kernel return codes (fastops.cpp).
ERRORS = {-1: "index out of range", -2: "out of memory", -3: "bad argument"}
#: Columns per packed weight panel (fastops.cpp: PANEL; checked against the library at load).
PANEL = 16

_REPO_ROOT = Path(__file__).resolve().parents[3]


class NativeBuildError(BackendError):
    """The native library could not be built or loaded (no compiler, compile error, ABI
    mismatch)."""


def compiler() -> str:
    return os.environ.get(COMPILER_ENV, DEFAULT_COMPILER)


def build_dirs() -> list[Path]:
    """Candidate build directories, preferred first."""
    dirs = []
    if (_REPO_ROOT / "setup.py").is_file():  # a source checkout (or editable install)
        dirs.append(_REPO_ROOT / "build" / "native")
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    dirs.append(Path(cache) / "edgemoe_ros" / "native")
    return dirs


def _host_tag() -> str:
    """What -march=native depends on: the CPU model and its feature flags."""
    tag = [platform.machine()]
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("model name", "flags", "Features", "CPU part")):
                    tag.append(line.strip())
                if line.strip() == "":  # the first processor is enough
                    break
    except OSError:
        tag.append(platform.processor())
    return "\n".join(tag)


def library_name(compiler_path: str, source: bytes) -> str:
    """``libedgemoe_fastops-<hash>.so``: the hash covers everything the binary depends on."""
    digest = hashlib.sha256()
    for part in (source, compiler_path.encode(), " ".join(CXXFLAGS).encode(),
                 _host_tag().encode()):
        digest.update(part)
        digest.update(b"\0")
    return f"{LIB_PREFIX}-{digest.hexdigest()[:16]}.so"


def _writable_dir(candidates: list[Path]) -> Path:
    for d in candidates:
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(d, os.W_OK | os.X_OK):
            return d
    raise NativeBuildError("native: no writable build directory among "
                           f"{[str(d) for d in candidates]}")


def build_library(cxx: str | None = None, build_dir: Path | None = None) -> Path:
    """Compile ``fastops.cpp`` if no up-to-date library exists; return the library's path."""
    cxx = cxx or compiler()
    exe = shutil.which(cxx)
    if exe is None:
        raise NativeBuildError(f"native: C++ compiler {cxx!r} not found (set "
                               f"{COMPILER_ENV} or install g++)")
    try:
        source = SOURCE.read_bytes()
    except OSError as exc:
        raise NativeBuildError(f"native: kernel source {SOURCE} missing "
                               f"({exc.strerror})") from None
    directory = _writable_dir([build_dir] if build_dir is not None else build_dirs())
    target = directory / library_name(exe, source)
    if target.is_file():  # renamed into place only when complete: no lock needed to use it
        return target
    with open(directory / ".fastops.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_file():  # another process built it while we waited
            return target
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            proc = subprocess.run([exe, *CXXFLAGS, "-o", str(tmp), str(SOURCE)],
                                  capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
            if proc.returncode != 0:
                tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
                raise NativeBuildError(f"native: compiling {SOURCE.name} failed ({cxx} exit "
                                       f"{proc.returncode}):\n{tail}")
            os.replace(tmp, target)
        except subprocess.TimeoutExpired:
            raise NativeBuildError(f"native: compiling {SOURCE.name} took more than "
                                   f"{BUILD_TIMEOUT_S} s") from None
        except OSError as exc:
            raise NativeBuildError(f"native: cannot run {cxx!r}: {exc}") from None
        finally:
            tmp.unlink(missing_ok=True)
    log.info("native: built %s", target)
    return target


@dataclass(frozen=True)
class PackedMatrix:
    """Weights ``B`` (K, N) of ``x @ B`` (or a stack (E, K, N)) in the GEMM kernel's layout:
    ``panels[..., p, k, j] = B[..., k, p * PANEL + j]``, zero past N. Packed once per model so the
    kernel streams contiguous panels and never repacks (what OpenBLAS does on every call)."""

    panels: np.ndarray  # (..., ceil(N / PANEL), K, PANEL) float32, C-contiguous
    k: int
    n: int

    def __post_init__(self) -> None:
        # The kernels index panels from (k, n) alone: a mismatched array would be read out of
        # bounds.
        want = (-(-self.n // PANEL), self.k, PANEL)
        if (self.panels.shape[-3:] != want or self.panels.dtype != np.float32
                or not self.panels.flags.c_contiguous):
            raise ValueError(f"native: packed panels must be C-contiguous float32 (..., {want}), "
                             f"got {self.panels.dtype} {self.panels.shape}")


def pack(b: np.ndarray) -> PackedMatrix:
    """Pack (K, N) or stacked (E, K, N) weights, (in, out) orientation, for ``FastOps.gemm``."""
    *lead, k, n = b.shape
    width = -(-n // PANEL) * PANEL
    padded = np.zeros((*lead, k, width), np.float32)
    padded[..., :n] = b
    panels = padded.reshape(*lead, k, width // PANEL, PANEL)
    return PackedMatrix(np.ascontiguousarray(np.moveaxis(panels, -2, -3)), k, n)


def pack_out_in(weight: np.ndarray) -> PackedMatrix:
    """Pack PyTorch-layout weights, (out, in) or stacked (E, out, in), for ``x @ W.T``."""
    return pack(np.ascontiguousarray(np.swapaxes(np.asarray(weight, dtype=np.float32), -1, -2)))


_F32, _I32 = np.dtype(np.float32), np.dtype(np.int32)
_char = ctypes.c_char


def _check(arr: np.ndarray, dtype: np.dtype, name: str) -> int:
    """The buffer address of a C-contiguous ``dtype`` array: the kernels trust their pointers."""
    if arr.dtype != dtype or not arr.flags.c_contiguous:
        raise ValueError(f"native: {name} must be a C-contiguous {dtype.name} array, "
                         f"got {arr.dtype} with strides {arr.strides}")
    if arr.flags.writeable and arr.size:
        # ~3x cheaper than arr.ctypes.data, which matters at ~200 kernel arguments per frame.
        return ctypes.addressof(_char.from_buffer(arr))
    return arr.ctypes.data


def _dest(arr: np.ndarray, dtype: np.dtype, name: str,
          inputs: tuple[np.ndarray | None, ...] = ()) -> int:
    """The address of a buffer a kernel *writes*: like ``_check``, and also writeable and apart
    from the call's inputs. A read-only array (e.g. a view of immutable ``bytes``) would otherwise
    be rewritten behind Python's back, and an output overlapping an input is read after it was
    overwritten (garbage, not an error). The bounds test of ``np.may_share_memory`` is cheap."""
    if not arr.flags.writeable:
        raise ValueError(f"native: {name} is written by the kernel but is read-only")
    for other in inputs:
        if other is not None and np.may_share_memory(arr, other):
            raise ValueError(f"native: {name} overlaps an input of the same "
                             "call; pass a separate array")
    return _check(arr, dtype, name)


def _opt(arr: np.ndarray | None, size: int, name: str) -> int | None:
    """Address of an optional float32 vector of ``size`` entries (None → NULL)."""
    if arr is None:
        return None
    if arr.size != size:
        raise ValueError(f"native: {name} needs {size} entries, got {arr.size}")
    return _check(arr, _F32, name)


def _vec(arr: np.ndarray | None, size: int, name: str) -> int:
    """Address of a required float32 vector of ``size`` entries (the kernel reads it unchecked)."""
    if arr is None:
        raise ValueError(f"native: {name} is required ({size} float32 entries)")
    return _opt(arr, size, name)


class ThreadPool:
    """Worker threads of the native kernels (``fastops.cpp``: Pool), made by ``FastOps.pool``.

    ``threads`` counts the calling thread, so 1 starts none. Workers sleep between kernels; a
    pool used by two callers at once runs the second on its own thread rather than waiting.
    ``close`` joins the workers; it must not run while a kernel uses the pool.
    """

    def __init__(self, lib: ctypes.CDLL, threads: int) -> None:
        self._lib = lib
        self._handle: int | None = None  # before any raise: __del__ runs on a half-made pool too
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"native: threads must be an integer >= 1, got {threads!r}")
        self.threads = threads
        if threads > 1:
            self._handle = lib.fastops_pool_create(threads)
            if not self._handle:
                raise BackendError(f"native: could not start {threads - 1} worker threads")
            got = lib.fastops_pool_threads(self._handle)
            if got != threads:
                # an ABI slip would otherwise show up as a wrong speed-up, not an error
                raise BackendError(f"native: pool reports {got} threads, asked for {threads}")

    @property
    def handle(self) -> int | None:
        return self._handle

    def close(self) -> None:
        handle, self._handle = self._handle, None
        if handle:
            self._lib.fastops_pool_destroy(handle)

    def __del__(self) -> None:
        self.close()


def _handle(pool: ThreadPool | None) -> int | None:
    return None if pool is None else pool.handle


class FastOps:
    """ctypes binding of one built ``fastops`` library.

    Every method checks dtypes, contiguity and sizes before passing pointers (a wrong pointer
    would corrupt memory, not raise), and works in place or into caller-given buffers so the
    backend controls allocation. Kernels are reentrant and ctypes drops the GIL while they run.
    """

    def __init__(self, path: Path) -> None:
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as exc:
            raise NativeBuildError(f"native: cannot load {path}: {exc}") from None
        try:
            lib.fastops_abi_version.restype = ctypes.c_int32
            abi = lib.fastops_abi_version()
        except AttributeError:
            raise NativeBuildError(f"native: {path} is not a fastops library (no "
                                   "fastops_abi_version)") from None
        if abi != ABI_VERSION:
            raise NativeBuildError(f"native: {path} has ABI {abi}, expected {ABI_VERSION}: a "
                                   f"stale or foreign build; delete it to rebuild")
        p, i64, i32, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_float
        sigs = {
            "fastops_panel_width": (i32, []),
            "fastops_pool_create": (p, [i32]),
            "fastops_pool_destroy": (None, [p]),
            "fastops_pool_threads": (i32, [p]),
            "fastops_gemm": (i32, [p, i64, i64, p, i64, i64, p, i64, p, i64, p, i32, p]),
            "fastops_moe_experts": (i32, [p, i64, i64, p, p, i32, i64, p, p, p, p, p, p, p]),
            "fastops_attention": (i32, [p, i64, i64, i32, i64, p, p]),
            "fastops_add_layernorm": (None, [p, p, p, p, i64, i64, f32, p, p]),
            "fastops_softmax_rows": (None, [p, i64, i64]),
            "fastops_moe_route": (None, [p, i64, i64, i32, i32, p, p]),
            "fastops_moe_group": (i64, [p, i64, i32, i64, i32, p, p, p]),
            "fastops_moe_combine": (i32, [p, i64, p, p, i64, i32, i64, p]),
            "fastops_guided_refine": (i32, [p, p, i64, i64, i64, i32, i32, p, p, p, p, i32, p, p,
                                            i32, p, p, p, p]),
            "fastops_pixels_planar": (None, [p, i64, i64, i64, i32, p, p, p]),
            "fastops_conv3x3": (i32, [p, i64, i32, i64, i64, p, p, i32, i32, i32, p, p]),
            "fastops_pointwise": (i32, [p, i64, i32, i64, i64, p, p, i32, i32, p, p]),
            "fastops_upsample_fuse": (i32, [p, i64, i32, i64, i64, p, i32, i64, i64, p, p, p, i32,
                                            p, p]),
            "fastops_mix_block": (i32, [p, i64, i32, i64, i64, p, p, p, p, p, p]),
        }
        for name, (restype, argtypes) in sigs.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = restype, argtypes
        if lib.fastops_panel_width() != PANEL:
            raise NativeBuildError(f"native: {path} packs {lib.fastops_panel_width()} columns per "
                                   f"panel, expected {PANEL}: a stale build; delete it to rebuild")
        self._lib, self.path = lib, path

    @staticmethod
    def _ok(rc: int, what: str) -> int:
        if rc < 0:
            raise BackendError(f"native: {what}: {ERRORS.get(rc, f'error {rc}')}")
        return rc

    def pool(self, threads: int) -> ThreadPool:
        """Worker threads for ``gemm``, ``moe_experts``, ``attention`` and the head kernels
        (``threads`` counts the calling thread)."""
        return ThreadPool(self._lib, threads)

    def gemm(self, a: np.ndarray, b: PackedMatrix, out: np.ndarray | None = None,
             bias: np.ndarray | None = None, gelu: bool = False, rows: np.ndarray | None = None,
             pool: ThreadPool | None = None) -> np.ndarray:
        """``out = act(a[rows] @ B + bias)`` with act = exact-erf GELU if ``gelu``; ``a`` (R, K),
        ``rows`` (M,) int32 row indices into ``a`` (default: all rows in order), out (M, N); split
        over ``pool``'s threads by column panels when it is worth it (same bits either way)."""
        if b.panels.ndim != 3 or a.ndim != 2 or a.shape[1] != b.k:
            raise ValueError(f"native: gemm shapes a {a.shape} and packed {b.panels.shape} "
                             f"(K={b.k}) do not fit")
        m = a.shape[0] if rows is None else rows.size
        if out is None:
            out = np.empty((m, b.n), np.float32)
        elif out.shape != (m, b.n):
            raise ValueError(f"native: gemm out must be ({m}, {b.n}), got {out.shape}")
        rc = self._lib.fastops_gemm(
            _check(a, _F32, "a"), b.k, a.shape[0],
            None if rows is None else _check(rows, _I32, "rows"), m, b.k,
            _check(b.panels, _F32, "packed"), b.n,
            _dest(out, _F32, "out", (a, rows, b.panels, bias)), b.n,
            _opt(bias, b.n, "bias"), int(gelu),
            _handle(pool))
        self._ok(rc, "gemm")
        return out

    def moe_experts(self, h: np.ndarray, uniq_src: np.ndarray, bounds: np.ndarray,
                    fc1: PackedMatrix,
                    fc1_bias: np.ndarray, fc2: PackedMatrix, fc2_bias: np.ndarray,
                    pool: ThreadPool | None = None
                    ) -> np.ndarray:
        """All experts of one MoE layer on their gathered rows (``moe_group`` order): returns (M,
        D) ``fc2_e(GELU(fc1_e(h[uniq_src]) + b1_e)) + b2_e`` with e the expert owning each row;
        experts are shared out over ``pool``'s threads (same bits either way)."""
        e = fc1.panels.shape[0]
        d, hidden = h.shape[1], fc1.n
        if (fc1.panels.ndim != 4 or fc2.panels.shape[0] != e
                or (fc1.k, fc2.k, fc2.n) != (d, hidden, d)
                or fc1_bias.shape != (e, hidden) or fc2_bias.shape != (e, d)
                or bounds.shape != (e + 1,)):
            raise ValueError(f"native: moe_experts shapes h {h.shape}, fc1 {fc1.panels.shape}, "
                             f"fc2 {fc2.panels.shape}, biases {fc1_bias.shape} {fc2_bias.shape}, "
                             f"bounds {bounds.shape}")
        m = uniq_src.size
        if bounds[-1] != m:
            raise ValueError(f"native: moe_experts bounds end at {bounds[-1]}, "
                             f"but {m} rows were grouped")
        hid = np.empty((m, hidden), np.float32)
        out = np.empty((m, d), np.float32)
        rc = self._lib.fastops_moe_experts(
            _check(h, _F32, "h"), h.shape[0], d, _check(uniq_src, _I32, "uniq_src"),
            _check(bounds, _I32, "bounds"),
            e, hidden, _check(fc1.panels, _F32, "fc1"), _check(fc1_bias, _F32, "fc1_bias"),
            _check(fc2.panels, _F32, "fc2"), _check(fc2_bias, _F32, "fc2_bias"),
            _check(hid, _F32, "hidden"), _check(out, _F32, "out"), _handle(pool))
        self._ok(rc, "moe_experts")
        return out

    def attention(self, qkv: np.ndarray, streams: int, heads: int, out: np.ndarray | None = None,
                  pool: ThreadPool | None = None) -> np.ndarray:
        """Multi-head self-attention of ``streams`` token sets stacked in ``qkv`` (streams * N,
        3 * D), each row ``[q | k | v]`` with heads concatenated and q already scaled: returns
        (streams * N, D), per token the heads' ``softmax(q k^T) v`` concatenated (before the output
        projection). Items (stream, head) are shared out over ``pool``'s threads."""
        if qkv.ndim != 2 or isinstance(heads, bool) or int(heads) < 1 or int(streams) < 1:
            raise ValueError(f"native: attention needs a 2-D qkv and heads, streams >= 1, got qkv "
                             f"{qkv.shape}, heads {heads!r}, streams {streams!r}")
        rows, width = qkv.shape
        if width == 0 or rows == 0 or width % (3 * heads) or rows % streams:
            raise ValueError(f"native: attention qkv {qkv.shape} does not split into {streams} "
                             f"streams and 3 x {heads} heads")
        d, n = width // 3, rows // streams
        if out is None:
            out = np.empty((rows, d), np.float32)
        elif out.shape != (rows, d):
            raise ValueError(f"native: attention out must be ({rows}, {d}), got {out.shape}")
        self._ok(self._lib.fastops_attention(_check(qkv, _F32, "qkv"), streams, n, heads,
                                             d // heads, _dest(out, _F32, "out", (qkv,)),
                                             _handle(pool)), "attention")
        return out

    def add_layernorm(self, x: np.ndarray, delta: np.ndarray | None, out: np.ndarray, eps: float,
                      delta_bias: np.ndarray | None = None, gamma: np.ndarray | None = None,
                      beta: np.ndarray | None = None) -> np.ndarray:
        """``x += delta (+ delta_bias)`` in place, then ``out = LayerNorm(x)`` over the last axis
        (standardisation only unless ``gamma`` and ``beta`` are both given); returns ``out``."""
        if out.shape != x.shape or (delta is not None and delta.shape != x.shape):
            raise ValueError(f"native: add_layernorm shapes x {x.shape}, delta "
                             f"{None if delta is None else delta.shape}, out {out.shape} differ")
        if (gamma is None) != (beta is None):
            raise ValueError("native: add_layernorm needs both gamma and beta, or neither")
        if x.ndim < 1 or x.shape[-1] < 1:
            raise ValueError("native: add_layernorm needs rows of at least one "
                             f"value, got shape {x.shape}")
        if delta_bias is not None and delta is None:
            raise ValueError("native: add_layernorm delta_bias is only added with a delta")
        if not (eps > 0 and np.isfinite(eps)):
            raise ValueError(f"native: add_layernorm eps must be a finite number > 0, got {eps!r}")
        cols = x.shape[-1]
        inputs = (delta, delta_bias, gamma, beta)
        x_ptr = (_check(x, _F32, "x") if delta is None
                 else _dest(x, _F32, "x (updated in place)", inputs))
        self._lib.fastops_add_layernorm(
            x_ptr, None if delta is None else _check(delta, _F32, "delta"),
            _opt(delta_bias, cols, "delta_bias"), _dest(out, _F32, "out", (x, *inputs)),
            x.size // cols, cols, eps, _opt(gamma, cols, "gamma"), _opt(beta, cols, "beta"))
        return out

    def softmax_rows(self, x: np.ndarray) -> np.ndarray:
        """In place: softmax over the last axis."""
        cols = x.shape[-1]
        ptr = _dest(x, _F32, "x")
        if x.size:
            self._lib.fastops_softmax_rows(ptr, x.size // cols, cols)
        return x

    def moe_route(self, logits: np.ndarray, col0: int, num_experts: int, chosen: np.ndarray,
                  gates: np.ndarray) -> None:
        """Top-k experts (ties → lower id) and their un-renormalised softmax gates for the logits
        in columns ``col0:col0 + num_experts`` of ``logits`` (rows, ≥ col0 + E), into (rows, k)
        buffers."""
        if logits.ndim != 2 or chosen.ndim != 2:
            raise ValueError("native: moe_route needs 2-D logits and outputs, got "
                             f"{logits.shape}, {chosen.shape}")
        rows, ld = logits.shape
        k = chosen.shape[-1]
        if col0 < 0 or col0 + num_experts > ld or not 1 <= k <= num_experts:
            raise ValueError(f"native: moe_route columns {col0}:{col0 + num_experts} / top_k {k} "
                             f"do not fit logits {logits.shape}")
        if chosen.shape != (rows, k) or gates.shape != (rows, k):
            raise ValueError(f"native: moe_route outputs must be ({rows}, {k}), got "
                             f"{chosen.shape}, {gates.shape}")
        base = _check(logits, _F32, "logits")
        self._lib.fastops_moe_route(base + 4 * col0, rows, ld, num_experts, k,
                                    _dest(chosen, _I32, "chosen", (logits, gates)),
                                    _dest(gates, _F32, "gates", (logits, chosen)))

    def moe_group(self, experts: np.ndarray, num_src: int, num_experts: int) -> tuple[
            np.ndarray, np.ndarray, np.ndarray]:
        """Group a MoE layer's (token, slot) pairs by expert (``experts``: (rows, k) expert ids;
        pair j reads source row ``(j // k) % num_src``). Returns ``uniq_src`` (M,) rows to gather,
        sorted by expert then row; ``bounds`` (E + 1,) each expert's slice; ``inverse`` (rows, k)
        each pair's position in that order."""
        if experts.ndim != 2:
            raise ValueError("native: moe_group needs (rows, top_k) expert ids, got shape "
                             f"{experts.shape}")
        k = experts.shape[1]
        uniq = np.empty(experts.size, np.int32)
        bounds = np.empty(num_experts + 1, np.int32)
        inverse = np.empty(experts.shape, np.int32)
        m = self._lib.fastops_moe_group(_check(experts, _I32, "experts"), experts.size, k, num_src,
                                        num_experts, uniq.ctypes.data, bounds.ctypes.data,
                                        inverse.ctypes.data)
        return uniq[:self._ok(m, "moe_group")], bounds, inverse

    def moe_combine(self, expert_out: np.ndarray, inverse: np.ndarray, gates: np.ndarray,
                    out: np.ndarray
                    ) -> np.ndarray:
        """``out[t] = Σ_i gates[t, i] * expert_out[inverse[t, i]]`` (the MoE layer's gated mix)."""
        if gates.ndim != 2 or out.ndim != 2 or expert_out.ndim != 2:
            raise ValueError("native: moe_combine needs 2-D arrays, got expert_out "
                             f"{expert_out.shape}, gates {gates.shape}, out {out.shape}")
        rows, k = gates.shape
        cols = out.shape[-1]
        if (inverse.shape != (rows, k) or out.shape != (rows, cols)
                or expert_out.shape[1:] != (cols,)):
            raise ValueError(f"native: moe_combine shapes expert_out {expert_out.shape}, inverse "
                             f"{inverse.shape}, gates {gates.shape}, out {out.shape}")
        rc = self._lib.fastops_moe_combine(
            _check(expert_out, _F32, "expert_out"), expert_out.shape[0],
            _check(inverse, _I32, "inverse"), _check(gates, _F32, "gates"), rows, k, cols,
            _dest(out, _F32, "out", (expert_out, inverse, gates)))
        self._ok(rc, "moe_combine")
        return out

    def guided_refine(self, coarse: np.ndarray, images: np.ndarray, pix_scale: np.ndarray,
                      pix_offset: np.ndarray,
                      guide_w: np.ndarray, guide_b: np.ndarray, fuse_w: np.ndarray,
                      fuse_b: np.ndarray,
                      refine_w: np.ndarray, refine_b: np.ndarray, out: np.ndarray | None = None,
                      pool: ThreadPool | None = None) -> np.ndarray:
        """The guided head's refinement (``model.heads.guided_refine``) in one pass per image row,
        rows shared out over ``pool``'s threads (same bits either way).

        ``coarse`` (B, H, W, C) float32 and ``images`` (B, H, W, CIN) uint8, channels-last; the
        pixels are normalised as ``u8 * pix_scale + pix_offset``; weights in PyTorch layout.
        Returns ``out`` (B, H, W, C), a new array unless given (it must not be ``coarse``).
        """
        if (coarse.ndim != 4 or images.ndim != 4 or images.shape[:3] != coarse.shape[:3]
                or min(images.shape) < 1):
            raise ValueError(f"native: guided_refine coarse {coarse.shape} and images "
                             f"{images.shape} must be non-empty (B, H, W, C) and (B, "
                             "H, W, CIN) of one size")
        b, h, w, c = coarse.shape
        cin = images.shape[3]
        g, hid = guide_w.shape[0], fuse_w.shape[0]
        if (guide_w.shape != (g, cin, 3, 3) or fuse_w.shape != (hid, c + g)
                or refine_w.shape != (c, hid)):
            raise ValueError(f"native: guided_refine weights guide {guide_w.shape}, fuse "
                             f"{fuse_w.shape}, refine {refine_w.shape} do not fit {c} channels "
                             f"and {cin} input channels")
        out = self._out(out, coarse.shape, (coarse,), "guided_refine")
        self._ok(self._lib.fastops_guided_refine(
            _check(coarse, _F32, "coarse"), _check(images, np.dtype(np.uint8), "images"), b, h, w,
            c, cin, _vec(pix_scale, cin, "pix_scale"), _vec(pix_offset, cin, "pix_offset"),
            _check(guide_w, _F32, "guide_w"), _opt(guide_b, g, "guide_b"), g,
            _check(fuse_w, _F32, "fuse_w"), _opt(fuse_b, hid, "fuse_b"), hid,
            _check(refine_w, _F32, "refine_w"), _opt(refine_b, c, "refine_b"),
            _check(out, _F32, "out"), _handle(pool)), "guided_refine")
        return out


    def linear(self, x: np.ndarray, weight: np.ndarray | PackedMatrix,
               bias: np.ndarray | None = None,
               gelu: bool = False, pool: ThreadPool | None = None) -> np.ndarray:
        """``act(x @ weight.T + bias)`` over the last axis of ``x`` (..., in): a head's per-token
        layer, ``weight`` in PyTorch's (out, in) layout (packed here on every call; ``PooledHeads``
        packs once) or already a ``PackedMatrix`` of its (in, out) transpose."""
        packed = weight if isinstance(weight, PackedMatrix) else pack_out_in(weight)
        rows = np.ascontiguousarray(x.reshape(-1, x.shape[-1]), dtype=_F32)
        bias = None if bias is None else np.ascontiguousarray(bias, dtype=_F32)
        return self.gemm(rows, packed, bias=bias, gelu=gelu,
                         pool=pool).reshape(*x.shape[:-1], packed.n)

    # ----- the pyramid head (model/pyramid_head.py) on planar (B, C, H, W) float32 maps -----
    @staticmethod
    def _planar(x: np.ndarray, name: str) -> tuple[int, int, int, int]:
        """(B, C, H, W) of a map, every size at least 1: the kernels size their outputs and taps by
        C division, which an empty map would turn into writes past the end."""
        if x.ndim != 4 or min(x.shape) < 1:
            raise ValueError(f"native: {name} must be a non-empty planar (B, C, H, W) map, got "
                             f"shape {x.shape}")
        return x.shape

    @staticmethod
    def _out(out: np.ndarray | None, shape: tuple[int, ...], inputs: tuple[np.ndarray, ...],
             what: str) -> np.ndarray:
        out = np.empty(shape, _F32) if out is None else out
        if (out.shape != shape or not out.flags.writeable
                or any(np.shares_memory(out, x) for x in inputs)):
            raise ValueError(f"native: {what} out {out.shape} must be a separate, "
                             f"writeable {shape} array")
        return out

    def pixels_planar(self, images: np.ndarray, scale: np.ndarray, offset: np.ndarray,
                      pool: ThreadPool | None = None) -> np.ndarray:
        """uint8 (B, H, W, C) images → planar float32 (B, C, H, W) ``u8 * scale + offset`` per
        channel (one pass on the calling thread; ``pool`` is accepted like every head kernel's)."""
        if images.ndim != 4 or min(images.shape) < 1:
            raise ValueError("native: pixels_planar images must be non-empty (B, H, W, "
                             f"C), got {images.shape}")
        b, h, w, c = images.shape
        out = np.empty((b, c, h, w), _F32)
        self._lib.fastops_pixels_planar(_check(images, np.dtype(np.uint8), "images"), b, h, w, c,
                                        _vec(scale, c, "scale"), _vec(offset, c, "offset"),
                                        _check(out, _F32, "out"))
        return out

    def conv3x3(self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride: int = 1,
                gelu: bool = False, out: np.ndarray | None = None,
                pool: ThreadPool | None = None) -> np.ndarray:
        """``act(conv3x3(x) + bias)``, zero padding 1, stride 1 or 2; ``weight`` (Cout, Cin, 3,
        3)."""
        b, cin, h, w = self._planar(x, "conv3x3 x")
        cout = weight.shape[0]
        if weight.shape != (cout, cin, 3, 3) or stride not in (1, 2):
            raise ValueError(f"native: conv3x3 weight {weight.shape} / stride {stride} do "
                             f"not fit {cin} channels")
        out = self._out(out, (b, cout, (h - 1) // stride + 1, (w - 1) // stride + 1), (x,),
                        "conv3x3")
        self._ok(self._lib.fastops_conv3x3(
            _check(x, _F32, "x"), b, cin, h, w, _check(weight, _F32, "weight"),
            _opt(bias, cout, "bias"), cout,
            stride, int(gelu), _check(out, _F32, "out"), _handle(pool)), "conv3x3")
        return out

    def pointwise(self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                  gelu: bool = False,
                  out: np.ndarray | None = None, pool: ThreadPool | None = None) -> np.ndarray:
        """``act(weight @ x + bias)`` at every pixel (a 1x1 conv); ``weight`` (Cout, Cin)."""
        b, cin, h, w = self._planar(x, "pointwise x")
        if weight.ndim != 2 or weight.shape[1] != cin:
            raise ValueError(f"native: pointwise weight {weight.shape} does "
                             f"not fit {cin} channels")
        cout = weight.shape[0]
        out = self._out(out, (b, cout, h, w), (x,), "pointwise")
        self._ok(self._lib.fastops_pointwise(
            _check(x, _F32, "x"), b, cin, h, w, _check(weight, _F32, "weight"),
            _opt(bias, cout, "bias"), cout,
            int(gelu), _check(out, _F32, "out"), _handle(pool)), "pointwise")
        return out

    def upsample_fuse(self, coarse: np.ndarray, pixels: np.ndarray, w_pix: np.ndarray,
                      bias: np.ndarray | None,
                      w_coord: np.ndarray, gelu: bool = True, out: np.ndarray | None = None,
                      pool: ThreadPool | None = None) -> np.ndarray:
        """``act(bilinear(coarse) + w_pix @ pixels + bias + w_coord @ [row; col])`` at the pixels'
        resolution: one fusion of the pyramid head, the coarser map's share already projected."""
        b, d, hc, wc = self._planar(coarse, "upsample_fuse coarse")
        pb, p, h, w = self._planar(pixels, "upsample_fuse pixels")
        if pb != b or w_pix.shape != (d, p) or w_coord.shape != (d, 2):
            raise ValueError(f"native: upsample_fuse coarse {coarse.shape}, pixels "
                             f"{pixels.shape}, w_pix {w_pix.shape}, w_coord "
                             f"{w_coord.shape} do not fit")
        out = self._out(out, (b, d, h, w), (coarse, pixels), "upsample_fuse")
        self._ok(self._lib.fastops_upsample_fuse(
            _check(coarse, _F32, "coarse"), b, d, hc, wc, _check(pixels, _F32, "pixels"), p, h, w,
            _check(w_pix, _F32, "w_pix"), _opt(bias, d, "bias"), _check(w_coord, _F32, "w_coord"),
            int(gelu), _check(out, _F32, "out"), _handle(pool)), "upsample_fuse")
        return out

    def mix_block(self, x: np.ndarray, dw_w: np.ndarray, dw_b: np.ndarray | None, pw_w: np.ndarray,
                  pw_b: np.ndarray | None, out: np.ndarray | None = None,
                  pool: ThreadPool | None = None
                  ) -> np.ndarray:
        """``x + GELU(pw_w @ depthwise3x3(x) + pw_b)``; ``dw_w`` (C, 1, 3, 3), ``pw_w`` (C, C)."""
        b, c, h, w = self._planar(x, "mix_block x")
        if dw_w.shape != (c, 1, 3, 3) or pw_w.shape != (c, c):
            raise ValueError(f"native: mix_block weights dw {dw_w.shape}, pw {pw_w.shape} do not "
                             f"fit {c} channels")
        out = self._out(out, x.shape, (x,), "mix_block")
        self._ok(self._lib.fastops_mix_block(
            _check(x, _F32, "x"), b, c, h, w, _check(dw_w, _F32, "dw_w"), _opt(dw_b, c, "dw_b"),
            _check(pw_w, _F32, "pw_w"), _opt(pw_b, c, "pw_b"), _check(out, _F32, "out"),
            _handle(pool)), "mix_block")
        return out


#: The kernels the task heads call (``model.heads.NativeHeads``).
HEAD_KERNELS = ("guided_refine", "pixels_planar", "conv3x3", "pointwise", "upsample_fuse",
                "mix_block", "linear")
#: Packed head weights a ``PooledHeads`` keeps (one model has a few); past it, the cache restarts.
MAX_PACKED_HEAD_WEIGHTS = 64


class PooledHeads:
    """``FastOps``' head kernels bound to a pool (or none) for one loaded model: what the engine
    hands the model's head code (``model.heads.NativeHeads``), which knows nothing of threads.

    ``linear`` packs each weight matrix once, on first use, and keeps it while this object lives
    (the engine makes one per model load), so the heads' per-token MLPs run on the packed GEMM
    like the backbone's linears instead of numpy's BLAS.
    """

    def __init__(self, ops: FastOps, pool: ThreadPool | None = None) -> None:
        self.ops, self.pool = ops, pool
        self._packed: dict[int, tuple[np.ndarray, PackedMatrix]] = {}

    def linear(self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None,
               gelu: bool = False, pool: ThreadPool | None = None) -> np.ndarray:
        """``FastOps.linear`` with ``weight`` packed once (keyed by the array itself)."""
        got = self._packed.get(id(weight))
        if got is None or got[0] is not weight:
            if len(self._packed) >= MAX_PACKED_HEAD_WEIGHTS:
                self._packed.clear()
            got = (weight, pack_out_in(weight))
            self._packed[id(weight)] = got
        return self.ops.linear(x, got[1], bias, gelu, pool=pool or self.pool)

    def __getattr__(self, name: str):  # noqa: ANN204 - one of HEAD_KERNELS, with pool= bound
        if name not in HEAD_KERNELS:
            raise AttributeError(name)
        return functools.partial(getattr(self.ops, name), pool=self.pool)


_lock = threading.Lock()
_loaded: dict[str, FastOps | NativeBuildError] = {}  # by compiler name: the library or why not


def load(cxx: str | None = None) -> FastOps:
    """The process-wide library for compiler ``cxx`` (default: ``$EDGEMOE_CXX`` or g++), built if
    needed.

    A failure is remembered too, so a backend reloading its model does not recompile every time.
    """
    cxx = cxx or compiler()
    with _lock:
        got = _loaded.get(cxx)
        if got is None:
            try:
                got = FastOps(build_library(cxx))
            except NativeBuildError as exc:
                got = exc
            _loaded[cxx] = got
    if isinstance(got, NativeBuildError):
        raise got
    return got


_warned = False


def native_ops(mode: str) -> FastOps | None:
    """The library per the backend option ``native``: "on" (raise if unavailable), "auto" (``None``
    plus one warning per process if unavailable), "off" (``None``, nothing built)."""
    global _warned
    if mode not in MODES:
        raise BackendError(f"cpu: option native must be one of {', '.join(MODES)}; got {mode!r}")
    if mode == "off":
        return None
    try:
        return load()
    except NativeBuildError as exc:
        if mode == "on":
            raise
        if not _warned:
            _warned = True
            log.warning("%s; the cpu backend uses its numpy path (same results, slower). "
                        "Pass native='off' to silence this.", exc)
        return None


def forget() -> None:
    """Drop cached libraries, failures and the warned flag (tests; a process that installs g++
    later)."""
    global _warned
    with _lock:
        _loaded.clear()
        _warned = False
