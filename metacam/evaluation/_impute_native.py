"""The CPU solver as one fused C kernel, compiled on first use (private).

ROAD's imputation on the CPU is bound by torch's per-operation overhead and
memory passes, not by arithmetic: the same multigrid PCG as
:mod:`metacam.evaluation._multigrid`, written as row-by-row fused loops, is ~3x faster
per mask and runs masks in parallel threads (ctypes releases the GIL).

The C source below is compiled with the system C compiler (``$CC``, ``cc``,
``gcc`` or ``clang``; about 2 s) into a shared library cached under
``$METACAM_CACHE_DIR`` (default ``~/.cache/metacam``), keyed by the source,
the compiler, the flags and the CPU. Without a compiler, or if anything fails,
:func:`library` returns None and :mod:`metacam.evaluation.imputation` uses the torch
solver: same algorithm and tolerance, slower.

Environment:

* ``METACAM_NATIVE=0`` disables the kernel; ``=1`` makes its absence an error.
* ``METACAM_NATIVE_MARCH``: the ``-march`` value (default ``native``; follows
  ``ATEN_CPU_CAPABILITY=avx2`` / ``default`` with ``x86-64-v3`` / ``x86-64``, so
  that setting benchmarks torch and this kernel on the same instruction set).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor

from metacam.errors import MetaCAMError

__all__ = ["library", "solve", "status"]

_lock = threading.Lock()
_state: dict[str, object] = {}


def _march() -> str | None:
    if "METACAM_NATIVE_MARCH" in os.environ:
        return os.environ["METACAM_NATIVE_MARCH"] or None
    if platform.machine() not in ("x86_64", "AMD64"):
        return "native"
    cap = os.environ.get("ATEN_CPU_CAPABILITY", "").lower()
    return {"avx2": "x86-64-v3", "default": "x86-64"}.get(cap, "native")


def _cache_dir() -> Path:
    if os.environ.get("METACAM_CACHE_DIR"):
        return Path(os.environ["METACAM_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "metacam"


def _cpu_id() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    keep = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags", "Features"))]
    return "\n".join(sorted(set(keep)))


def _compiler() -> str | None:
    for cand in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cand and shutil.which(cand):
            return shutil.which(cand)
    return None


def _build() -> tuple[ctypes.CDLL | None, str]:
    cc = _compiler()
    if cc is None:
        return None, "no C compiler (set CC, or install gcc/clang)"
    march = _march()
    base = ["-O3", "-std=gnu99", "-fPIC", "-shared"]
    # -fopenmp-simd only vectorises two reductions; -march=native everything else
    attempts = [base + ["-fopenmp-simd"] + ([f"-march={march}"] if march else []), base]
    try:
        version = subprocess.run(
            [cc, "--version"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"{cc} --version failed: {exc}"
    errors: list[str] = []
    for flags in attempts:
        key = hashlib.sha256(
            "\0".join(
                [_SOURCE, cc, version, " ".join(flags), platform.machine(), _cpu_id()]
            ).encode()
        ).hexdigest()[:20]
        for folder in (
            _cache_dir(),
            Path(tempfile.gettempdir()) / f"metacam-{getattr(os, 'getuid', lambda: 0)()}",
        ):
            if not _private(folder):
                errors.append(f"{folder}: not ours or writable by others; skipped")
                continue
            lib = folder / f"impute-{key}.so"
            if not lib.exists():
                problem = _compile(cc, flags, folder, lib)
                if problem:
                    errors.append(problem)
                    if problem.startswith("compiler:"):
                        break  # another folder will not help these flags
                    continue
            try:
                arch = " ".join(f for f in flags if f.startswith("-march")) or "no -march"
                return ctypes.CDLL(str(lib)), f"{lib} ({Path(cc).name}, {arch})"
            except OSError as exc:
                errors.append(f"loading {lib}: {exc}")
    return None, "; ".join(errors)[-500:]


def _private(folder: Path) -> bool:
    """True unless ``folder`` exists and another user could have planted a library
    there (not owned by us, or group/world-writable: e.g. a squatted /tmp name)."""
    try:
        st = folder.stat()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    uid = getattr(os, "getuid", lambda: st.st_uid)()
    return st.st_uid == uid and not st.st_mode & 0o022


def _compile(cc: str, flags: list[str], folder: Path, lib: Path) -> str | None:
    """Compile into ``lib`` atomically; returns an error message or None."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            src = Path(tmp) / "impute.c"
            src.write_text(_SOURCE)
            obj = Path(tmp) / lib.name
            done = subprocess.run(
                [cc, *flags, "-o", str(obj), str(src), "-lm"],
                capture_output=True,
                text=True,
                timeout=300,
            )
            if done.returncode != 0:
                return f"compiler: {Path(cc).name} {' '.join(flags)}: {done.stderr.strip()[-300:]}"
            os.replace(obj, lib)  # atomic: concurrent builders race harmlessly
    except (OSError, subprocess.SubprocessError) as err:
        return f"building in {folder}: {err}"
    return None


def library() -> ctypes.CDLL | None:
    """The loaded kernel, or None (disabled, or no compiler / build failed)."""
    with _lock:
        if "lib" not in _state:
            mode = os.environ.get("METACAM_NATIVE", "auto").lower()
            if mode in ("0", "off", "false", "no"):
                lib, why = None, "disabled by METACAM_NATIVE=0"
            else:
                lib, why = _build()
            if lib is not None:
                fn = lib.mg_solve_one
                i, i64, p, d = ctypes.c_int, ctypes.c_int64, ctypes.c_void_p, ctypes.c_double
                fn.argtypes = [i, i, i, p, i64, i64, p, p, i64, i64, p, i64, i64, d, i, i, p]
                fn.restype = i
            _state["lib"], _state["why"] = lib, why
            if lib is None and mode in ("1", "on", "true", "yes", "require"):
                raise MetaCAMError(f"METACAM_NATIVE={mode} but the C kernel is unavailable: {why}")
    return _state["lib"]  # type: ignore[return-value]


def status() -> str:
    """One line: which kernel :func:`library` loaded, or why none."""
    lib = library()
    return f"C kernel {_state['why']}" if lib is not None else f"torch solver ({_state['why']})"


def solve(
    x: Tensor,
    removed: Tensor,
    out: Tensor,
    rows: Tensor,
    *,
    tol: float,
    max_iter: int,
    max_coarse: int,
    threads: int,
) -> tuple[Tensor, Tensor]:
    """Solve the masks ``rows`` with the C kernel, writing ``out[rows]``.

    x: (N, C, H, W) float32 on the CPU with unit column stride (any other
    strides, 0 included); removed: (N, H, W) uint8, contiguous; out: (N, C,
    H, W) float32, contiguous, holding x (only each mask's window is written);
    rows: (K,) int64 masks to solve, each with >= 1 removed and >= 1 kept pixel.
    Returns (iterations, estimates): (K,) int64 (-1: tol not reached) and
    (K,) float64 final error estimates.
    """
    lib = library()
    assert lib is not None
    n, c, h, w = x.shape
    assert x.dtype == out.dtype == torch.float32 and x.stride(-1) == 1
    assert removed.dtype == torch.uint8 and removed.is_contiguous() and out.is_contiguous()
    assert removed.shape == (n, h, w) and out.shape == x.shape
    k = rows.numel()
    # Results go to Python lists, not tensors: inference mode is thread-local, so a
    # tensor made under the caller's torch.inference_mode() is an inference tensor
    # that these worker threads (outside it) may not write in place.
    iterations = [0] * k
    estimates = [0.0] * k
    todo = rows.tolist()
    nxt = iter(range(k))
    take = threading.Lock()
    es = x.element_size()
    xs0, xs_c, xs_h = x.stride(0), x.stride(1), x.stride(2)
    os_c, os_h = out.stride(1), out.stride(2)

    def worker() -> None:
        est = ctypes.c_double()
        while True:
            with take:
                j = next(nxt, None)
            if j is None:
                return
            i = todo[j]
            res = lib.mg_solve_one(
                c, h, w, x.data_ptr() + i * xs0 * es, xs_c, xs_h,
                removed.data_ptr() + i * h * w, None, 0, 0,
                out.data_ptr() + i * out.stride(0) * es, os_c, os_h,
                tol, max_iter, max_coarse, ctypes.byref(est),
            )  # fmt: skip
            iterations[j], estimates[j] = res, est.value
            if res == -2:
                raise MemoryError("linear_impute: out of memory in the C kernel")

    threads = max(1, min(threads, k))
    if threads == 1:
        worker()
    else:
        with ThreadPoolExecutor(threads) as pool:
            for f in [pool.submit(worker) for _ in range(threads)]:
                f.result()
    return torch.tensor(iterations, dtype=torch.int64), torch.tensor(estimates, dtype=torch.float64)


_SOURCE = r"""
/* Multigrid-preconditioned CG for ROAD's linear imputation, one mask per call:
 * the algorithm of metacam/evaluation/_multigrid.py (scaled integer stencil, Galerkin
 * coarse levels, V(1,1) Jacobi cycle, warm start, float64 residual replacement)
 * with its passes fused row by row. Planes are stored with a zero halo (1
 * row/column before, 2 after) so that stencils and grid transfers need no
 * bounds tests. Single-threaded; the caller runs masks in parallel. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAXLEV 24

typedef struct {
    int h, w, wp;
    long n;         /* plane size (h + 3) * (w + 3) */
    float *m;       /* 1 = unknown */
    float *s;       /* Jacobi weights */
    float *diag;    /* level 0: m (12 D + 4); the stencil is diag v - m box121(v) */
    float *coef;    /* coarser levels: 9 planes of Galerkin coefficients */
    float *e, *z;   /* C planes each: the correction, the cycle's result */
    float *rhs;     /* C planes: right-hand side (coarser levels) */
    int nu;         /* coarsest level: unknowns, their plane positions, inverse */
    long *uidx;
    double *inv, *buf;
} level_t;

typedef struct {
    int nlev, C;
    float *row;     /* scratch rows */
    level_t L[MAXLEV];
} hier_t;

static const int OFF[9][2] = {{-1, -1}, {-1, 0}, {-1, 1}, {0, -1}, {0, 0},
                              {0, 1},   {1, -1}, {1, 0},  {1, 1}};
#define CENTRE 4
#define AT(l, i, j) (((long)(i) + 1) * (l)->wp + (j) + 1)

static void *zalloc(size_t bytes) { return calloc(1, bytes ? bytes : 1); }

static void level_free(level_t *l) {
    free(l->m); free(l->s); free(l->diag); free(l->coef); free(l->e); free(l->z);
    free(l->rhs); free(l->uidx); free(l->inv); free(l->buf);
    memset(l, 0, sizeof(*l));
}

static int level_alloc(level_t *l, int h, int w, int C, int fine) {
    memset(l, 0, sizeof(*l));
    l->h = h; l->w = w; l->wp = w + 3;
    l->n = (long)(h + 3) * l->wp;
    const size_t p = sizeof(float) * (size_t)l->n;
    l->m = zalloc(p); l->s = zalloc(p);
    if (fine) l->diag = zalloc(p);
    else { l->coef = zalloc(9 * p); l->rhs = zalloc(C * p); }
    l->e = zalloc(C * p); l->z = zalloc(C * p);
    if (!l->m || !l->s || !l->e || !l->z || (fine ? !l->diag : (!l->coef || !l->rhs)))
        return -1;
    return 0;
}

/* ------------------------------------------------------------------ stencil rows */
/* dst[j] = (A v)(i, j), j < w, for the row starting at plane offset o */
static inline void stencil_row(const level_t *l, int lev, const float *v, long o,
                               float *restrict dst) {
    const int w = l->w, wp = l->wp;
    const float *a = v + o - wp, *b = v + o, *c = v + o + wp;
    if (lev == 0) {
        const float *restrict dg = l->diag + o, *restrict m = l->m + o;
        for (int j = 0; j < w; j++) {
            const float up = a[j - 1] + 2.0f * a[j] + a[j + 1];
            const float mid = b[j - 1] + 2.0f * b[j] + b[j + 1];
            const float dn = c[j - 1] + 2.0f * c[j] + c[j + 1];
            dst[j] = dg[j] * b[j] - m[j] * (up + 2.0f * mid + dn);
        }
    } else {
        const long n = l->n;
        const float *restrict k = l->coef + o;
        for (int j = 0; j < w; j++)
            dst[j] = k[j] * a[j - 1] + k[n + j] * a[j] + k[2 * n + j] * a[j + 1]
                   + k[3 * n + j] * b[j - 1] + k[4 * n + j] * b[j] + k[5 * n + j] * b[j + 1]
                   + k[6 * n + j] * c[j - 1] + k[7 * n + j] * c[j] + k[8 * n + j] * c[j + 1];
    }
}

/* fine row i of P ec, into dst[0..w) (unmasked) */
static inline void prolong_row(const level_t *f, const level_t *c, const float *ec, int i,
                               float *restrict tmp, float *restrict dst) {
    const float *c0 = ec + AT(c, i >> 1, 0);
    if (i & 1) {
        const float *c1 = c0 + c->wp;
        for (int J = 0; J < c->w; J++) tmp[J] = 0.5f * (c0[J] + c1[J]);
    } else {
        for (int J = 0; J < c->w; J++) tmp[J] = c0[J];
    }
    const int w = f->w;
    for (int J = 0; 2 * J < w; J++) dst[2 * J] = tmp[J];
    for (int J = 0; 2 * J + 1 < w; J++) dst[2 * J + 1] = 0.5f * (tmp[J] + tmp[J + 1]);
}

/* ------------------------------------------------------------------ V-cycle */
static void dense_solve(level_t *l, int C, const float *r, float *out) {
    const int nu = l->nu;
    for (int ch = 0; ch < C; ch++) {
        const float *rp = r + ch * l->n;
        float *op = out + ch * l->n;
        for (int a = 0; a < nu; a++) l->buf[a] = rp[l->uidx[a]];
        for (int a = 0; a < nu; a++) {
            double acc = 0.0;
            const double *row = l->inv + (long)a * nu;
            for (int b = 0; b < nu; b++) acc += row[b] * l->buf[b];
            op[l->uidx[a]] = (float)acc;
        }
    }
}

/* Pass A of level lev, all channels row by row: e = s r; rc += R (r - A e). */
static void pass_a(hier_t *H, int lev, const float *r, float *e, float *rc) {
    const level_t *l = &H->L[lev], *c = &H->L[lev + 1];
    const int w = l->w, C = H->C;
    const long n = l->n, nc = c->n;
    float *t = H->row + 1; /* t[-1] = t[w] = t[w + 1] = 0 */
    float *u = H->row + l->wp + 4;
    t[-1] = t[w] = t[w + 1] = 0.0f;
    for (int i = -1; i < l->h; i++) {
        for (int ch = 0; ch < C; ch++) {
            if (i + 1 < l->h) {
                const long o = AT(l, i + 1, 0);
                const float *restrict s = l->s + o, *restrict rr = r + ch * n + o;
                float *restrict ee = e + ch * n + o;
                for (int j = 0; j < w; j++) ee[j] = s[j] * rr[j];
            }
            if (i < 0) continue;
            const long o = AT(l, i, 0);
            stencil_row(l, lev, e + ch * n, o, t);
            const float *restrict rr = r + ch * n + o;
            for (int j = 0; j < w; j++) t[j] = rr[j] - t[j];
            for (int J = 0; J < c->w; J++)
                u[J] = 0.5f * t[2 * J - 1] + t[2 * J] + 0.5f * t[2 * J + 1];
            float *restrict d0 = rc + ch * nc + AT(c, i >> 1, 0);
            if (i & 1) {
                float *restrict d1 = d0 + c->wp;
                for (int J = 0; J < c->w; J++) { d0[J] += 0.5f * u[J]; d1[J] += 0.5f * u[J]; }
            } else {
                for (int J = 0; J < c->w; J++) d0[J] += u[J];
            }
        }
    }
}

/* Pass B of level lev, all channels row by row: e += m P ec; z = e + s (r - A e).
 * If acc: acc[ch] += <r, z>, acc[C] = max(acc[C], |z|). */
static void pass_b(hier_t *H, int lev, const float *r, float *e, const float *ec, float *z,
                   double *acc) {
    const level_t *l = &H->L[lev], *c = &H->L[lev + 1];
    const int w = l->w, C = H->C;
    const long n = l->n, nc = c->n;
    float *t = H->row, *tmp = H->row + l->wp + 4, *pr = tmp + c->wp + 4;
    float mx = 0.0f;
    for (int i = -1; i < l->h; i++) {
        for (int ch = 0; ch < C; ch++) {
            if (i + 1 < l->h) {
                const long o = AT(l, i + 1, 0);
                prolong_row(l, c, ec + ch * nc, i + 1, tmp, pr);
                const float *restrict m = l->m + o;
                float *restrict ee = e + ch * n + o;
                for (int j = 0; j < w; j++) ee[j] += m[j] * pr[j];
            }
            if (i < 0) continue;
            const long o = AT(l, i, 0);
            stencil_row(l, lev, e + ch * n, o, t);
            const float *restrict rr = r + ch * n + o, *restrict s = l->s + o;
            const float *restrict ee = e + ch * n + o;
            float *restrict zz = z + ch * n + o;
            for (int j = 0; j < w; j++) zz[j] = ee[j] + s[j] * (rr[j] - t[j]);
            if (acc) {
                float d = 0.0f;
#pragma omp simd reduction(+ : d) reduction(max : mx)
                for (int j = 0; j < w; j++) {
                    d += rr[j] * zz[j];
                    mx = fabsf(zz[j]) > mx ? fabsf(zz[j]) : mx;
                }
                acc[ch] += d;
            }
        }
    }
    if (acc && mx > acc[C]) acc[C] = mx;
}

/* z = V r on level lev (r: C planes); returns the level's z. acc: per channel
 * <r, z> (C values) and the max |z| (acc[C]) when lev == 0. */
static float *vcycle(hier_t *H, int lev, const float *r, double *acc) {
    level_t *l = &H->L[lev];
    const int C = H->C;
    if (lev == H->nlev - 1) {
        dense_solve(l, C, r, l->z);
        if (acc) {
            for (int ch = 0; ch < C; ch++) {
                double d = 0.0;
                for (long o = 0; o < l->n; o++) {
                    d += (double)r[ch * l->n + o] * l->z[ch * l->n + o];
                    const double v = fabs(l->z[ch * l->n + o]);
                    if (v > acc[C]) acc[C] = v;
                }
                acc[ch] += d;
            }
        }
        return l->z;
    }
    level_t *c = &H->L[lev + 1];
    memset(c->rhs, 0, sizeof(float) * c->n * C);
    pass_a(H, lev, r, l->e, c->rhs);
    for (int ch = 0; ch < C; ch++) {
        float *rc = c->rhs + ch * c->n;
        for (int I = 0; I < c->h; I++) {
            const long o = AT(c, I, 0);
            for (int J = 0; J < c->w; J++) rc[o + J] *= c->m[o + J];
        }
    }
    const float *ec = vcycle(H, lev + 1, c->rhs, NULL);
    pass_b(H, lev, r, l->e, ec, l->z, acc);
    return l->z;
}

/* ------------------------------------------------------------------ hierarchy */
static double KER[9][9][9]; /* [d][e][s]: R A P as a stride-2 correlation */

static double bil(int ty, int tx) { return (1.0 - abs(ty) / 2.0) * (1.0 - abs(tx) / 2.0); }

/* filled once when the library is loaded, before any thread runs */
__attribute__((constructor)) static void init_kernel(void) {
    memset(KER, 0, sizeof(KER));
    for (int d = 0; d < 9; d++)
        for (int e = 0; e < 9; e++)
            for (int s = 0; s < 9; s++) {
                const int ty = OFF[s][0] + OFF[e][0] - 2 * OFF[d][0];
                const int tx = OFF[s][1] + OFF[e][1] - 2 * OFF[d][1];
                if (abs(ty) <= 1 && abs(tx) <= 1)
                    KER[d][e][s] += bil(OFF[s][0], OFF[s][1]) * bil(ty, tx);
            }
}

static const float W12[9] = {1, 2, 1, 2, 0, 2, 1, 2, 1};

/* level 0's 9 coefficient planes (zero halo) */
static void fine_coef(const level_t *l, const float *d12, float *cf) {
    const long n = l->n;
    for (int k = 0; k < 9; k++) {
        const long sh = OFF[k][0] * l->wp + OFF[k][1];
        for (int i = 0; i < l->h; i++) {
            const long o = AT(l, i, 0);
            const float *restrict m = l->m + o;
            float *restrict dst = cf + k * n + o;
            if (k == CENTRE) {
                const float *restrict d = d12 + o;
                for (int j = 0; j < l->w; j++) dst[j] = m[j] * d[j];
            } else {
                const float *restrict m2 = l->m + o + sh;
                for (int j = 0; j < l->w; j++) dst[j] = -W12[k] * m[j] * m2[j];
            }
        }
    }
}

/* Jacobi weights 1 / a_ii capped by the l1 bound 2 / sum_j |a_ij|: keeps
 * 2 W^-1 - A positive definite, hence the V-cycle SPD (plain Jacobi reaches
 * the bound 2 on single-pixel-wide images). */
static void jacobi(level_t *l, const float *cf) {
    const long n = l->n;
    for (int i = 0; i < l->h; i++) {
        const long o = AT(l, i, 0);
        for (int j = 0; j < l->w; j++) {
            float sum = 0.0f;
            for (int k = 0; k < 9; k++) sum += fabsf(cf[k * n + o + j]);
            float den = cf[CENTRE * n + o + j];
            den = 0.505f * sum > den ? 0.505f * sum : den;
            l->s[o + j] = l->m[o + j] != 0.0f ? 1.0f / den : 0.0f;
        }
    }
}

static void galerkin(const level_t *f, const float *fcoef, level_t *c) {
    static const int FWD[5] = {4, 5, 6, 7, 8};
    const long nf = f->n, nc = c->n;
    for (int I = 0; I < c->h; I++)
        for (int J = 0; J < c->w; J++) {
            const int i = 2 * I < f->h ? 2 * I : f->h - 1, j = 2 * J < f->w ? 2 * J : f->w - 1;
            c->m[AT(c, I, J)] = f->m[AT(f, i, j)];
        }
    for (int q = 0; q < 5; q++) {
        const int d = FWD[q];
        float *out = c->coef + d * nc;
        for (int e = 0; e < 9; e++)
            for (int s = 0; s < 9; s++) {
                const float k = (float)KER[d][e][s];
                if (k == 0.0f) continue;
                const float *a = fcoef + e * nf;
                for (int I = 0; I < c->h; I++) {
                    const float *restrict src = a + AT(f, 2 * I + OFF[s][0], OFF[s][1]);
                    float *restrict dst = out + AT(c, I, 0);
                    for (int J = 0; J < c->w; J++) dst[J] += k * src[2 * J];
                }
            }
        /* both ends must be coarse unknowns (the zero halo covers the grid's edge) */
        const long sh = OFF[d][0] * c->wp + OFF[d][1];
        for (int I = 0; I < c->h; I++) {
            const long o = AT(c, I, 0);
            for (int J = 0; J < c->w; J++) out[o + J] *= c->m[o + J] * c->m[o + J + sh];
        }
    }
    for (int q = 1; q < 5; q++) { /* symmetry: A(J, J - d) = A(J - d, J) */
        const int d = FWD[q];
        const long sh = OFF[d][0] * c->wp + OFF[d][1];
        const float *src = c->coef + d * nc;
        float *dst = c->coef + (8 - d) * nc;
        for (int I = 0; I < c->h; I++) {
            const long o = AT(c, I, 0);
            for (int J = 0; J < c->w; J++) dst[o + J] = src[o + J - sh];
        }
    }
    jacobi(c, c->coef);
}

static int dense_inverse(level_t *l, const float *cf) {
    const long n = l->n;
    int nu = 0;
    for (int i = 0; i < l->h; i++)
        for (int j = 0; j < l->w; j++) nu += l->m[AT(l, i, j)] != 0.0f;
    const size_t nn = (size_t)(nu ? nu : 1);
    l->nu = nu;
    l->uidx = malloc(sizeof(long) * nn);
    l->inv = calloc(nn * nn, sizeof(double));
    l->buf = calloc(nn, sizeof(double));
    long *pos = malloc(sizeof(long) * n);
    double *a = calloc(nn * nn, sizeof(double)), *x = calloc(nn, sizeof(double));
    int rc = -1;
    if (!l->uidx || !l->inv || !l->buf || !pos || !a || !x) goto done;
    for (long o = 0; o < n; o++) pos[o] = -1;
    int u = 0;
    for (int i = 0; i < l->h; i++)
        for (int j = 0; j < l->w; j++) {
            const long o = AT(l, i, j);
            if (l->m[o] != 0.0f) { pos[o] = u; l->uidx[u++] = o; }
        }
    for (int p = 0; p < nu; p++) {
        const long o = l->uidx[p];
        for (int k = 0; k < 9; k++) {
            const long o2 = o + OFF[k][0] * l->wp + OFF[k][1];
            if (pos[o2] >= 0) a[p * nn + pos[o2]] += cf[k * n + o];
        }
    }
    for (int p = 0; p < nu; p++) /* symmetrise rounding */
        for (int q = p + 1; q < nu; q++)
            a[p * nn + q] = a[q * nn + p] = 0.5 * (a[p * nn + q] + a[q * nn + p]);
    for (int j = 0; j < nu; j++) { /* Cholesky, lower, in place */
        double d = a[j * nn + j];
        for (int k = 0; k < j; k++) d -= a[j * nn + k] * a[j * nn + k];
        d = sqrt(d > 1e-300 ? d : 1e-300); /* SPD in exact arithmetic */
        a[j * nn + j] = d;
        for (int i = j + 1; i < nu; i++) {
            double v = a[i * nn + j];
            for (int k = 0; k < j; k++) v -= a[i * nn + k] * a[j * nn + k];
            a[i * nn + j] = v / d;
        }
    }
    for (int col = 0; col < nu; col++) { /* inverse: L L^T x = e_col */
        for (int i = 0; i < nu; i++) {
            double v = i == col ? 1.0 : 0.0;
            for (int k = 0; k < i; k++) v -= a[i * nn + k] * x[k];
            x[i] = v / a[i * nn + i];
        }
        for (int i = nu - 1; i >= 0; i--) {
            double v = x[i];
            for (int k = i + 1; k < nu; k++) v -= a[k * nn + i] * x[k];
            x[i] = v / a[i * nn + i];
        }
        for (int i = 0; i < nu; i++) l->inv[i * nn + col] = x[i];
    }
    rc = 0;
done:
    free(pos); free(a); free(x);
    return rc;
}

static void hier_free(hier_t *H) {
    for (int i = 0; i < H->nlev; i++) level_free(&H->L[i]);
    free(H->row);
    H->row = NULL;
    H->nlev = 0;
}

/* removed: the (h, w) window, row stride rs, origin (gy0, gx0) in the GH x GW image. */
static int hier_build(hier_t *H, const uint8_t *removed, long rs, int h, int w, int gy0,
                      int gx0, int GH, int GW, int C, int max_coarse, float **d12_out) {
    memset(H, 0, sizeof(*H));
    H->C = C;
    H->row = zalloc(sizeof(float) * (3 * (size_t)(w + 8) + 16));
    level_t *l0 = &H->L[0];
    if (!H->row || level_alloc(l0, h, w, C, 1)) return -1;
    H->nlev = 1;
    float *d12 = zalloc(sizeof(float) * l0->n);
    *d12_out = d12;
    if (!d12) return -1;
    for (int i = 0; i < h; i++)
        for (int j = 0; j < w; j++) {
            const long o = AT(l0, i, j);
            const int gi = gy0 + i, gj = gx0 + j;
            const int ny = (gi > 0) + (gi < GH - 1), nx = (gj > 0) + (gj < GW - 1);
            const float dd = (float)((2 + ny) * (2 + nx) - 4); /* 12 D: box121(1) - 4 */
            const float m = removed[(long)i * rs + j] ? 1.0f : 0.0f;
            d12[o] = dd;
            l0->m[o] = m;
            l0->diag[o] = m * (dd + 4.0f);
        }
    float *fcoef = zalloc(sizeof(float) * 9 * (size_t)l0->n);
    if (!fcoef) return -1;
    fine_coef(l0, d12, fcoef);
    jacobi(l0, fcoef);
    const float *src = fcoef;
    while (1) {
        level_t *f = &H->L[H->nlev - 1];
        const int hc = f->h / 2 + 1, wc = f->w / 2 + 1;
        if ((long)f->h * f->w <= max_coarse || (hc == f->h && wc == f->w) || H->nlev == MAXLEV)
            break;
        level_t *c = &H->L[H->nlev];
        if (level_alloc(c, hc, wc, C, 0)) { free(fcoef); return -1; }
        H->nlev++;
        galerkin(f, src, c);
        src = c->coef;
    }
    const int rc = dense_inverse(&H->L[H->nlev - 1], src);
    free(fcoef);
    return rc;
}

/* ------------------------------------------------------------------ PCG */
/* r = m box121(y) - diag y, in double from the float iterate (the true residual) */
static void true_residual(const level_t *l, const float *y, float *r) {
    const int wp = l->wp;
    for (int i = 0; i < l->h; i++) {
        const long o = AT(l, i, 0);
        const float *a = y + o - wp, *b = y + o, *c = y + o + wp;
        const float *restrict m = l->m + o, *restrict dg = l->diag + o;
        float *restrict q = r + o;
        for (int j = 0; j < l->w; j++) {
            const double up = (double)a[j - 1] + 2.0 * a[j] + a[j + 1];
            const double mid = (double)b[j - 1] + 2.0 * b[j] + b[j + 1];
            const double dn = (double)c[j - 1] + 2.0 * c[j] + c[j + 1];
            q[j] = (float)((double)m[j] * (up + 2.0 * mid + dn) - (double)dg[j] * b[j]);
        }
    }
}

static void image_residual(const level_t *l, const float *y, float *r) {
    const int wp = l->wp;
    for (int i = 0; i < l->h; i++) {
        const long o = AT(l, i, 0);
        const float *a = y + o - wp, *b = y + o, *c = y + o + wp;
        const float *restrict m = l->m + o, *restrict dg = l->diag + o;
        float *restrict q = r + o;
        for (int j = 0; j < l->w; j++) {
            const float up = a[j - 1] + 2.0f * a[j] + a[j + 1];
            const float mid = b[j - 1] + 2.0f * b[j] + b[j + 1];
            const float dn = c[j - 1] + 2.0f * c[j] + c[j + 1];
            q[j] = m[j] * (up + 2.0f * mid + dn) - dg[j] * b[j];
        }
    }
}

/* p = z + beta p (if z) row by row one row ahead of q = A p; returns <p, q> */
static double update_p_apply(const level_t *l, float *p, const float *z, float beta, float *q) {
    const int w = l->w;
    double acc = 0.0;
    for (int i = -1; i < l->h; i++) {
        if (z && i + 1 < l->h) {
            const long o = AT(l, i + 1, 0);
            float *restrict pp = p + o;
            const float *restrict zz = z + o;
            for (int j = 0; j < w; j++) pp[j] = zz[j] + beta * pp[j];
        }
        if (i < 0) continue;
        const long o = AT(l, i, 0);
        stencil_row(l, 0, p, o, q + o);
        const float *restrict pp = p + o, *restrict qq = q + o;
        float d = 0.0f;
#pragma omp simd reduction(+ : d)
        for (int j = 0; j < w; j++) d += pp[j] * qq[j];
        acc += d;
    }
    return acc;
}

/* Solve one mask. x: the image, C planes of GH x GW floats (strides xs_c, xs_h,
 * unit column stride); removed: GH x GW bytes, row stride GW, nonzero = removed,
 * at least one pixel kept; guess: NULL (start from x) or initial values of the
 * removed pixels, strides gs_c, gs_h; out: strides os_c, os_h, written inside
 * the window (the removed pixels' bounding box + 1 px): x on kept pixels, the
 * solution on removed ones. est_out: the final error estimate.
 * Returns the CG iterations (>= 0), -1 if tol was not reached within max_iter,
 * -2 when out of memory. */
int mg_solve_one(int C, int GH, int GW, const float *x, int64_t xs_c, int64_t xs_h,
                 const uint8_t *removed, const float *guess, int64_t gs_c, int64_t gs_h,
                 float *out, int64_t os_c, int64_t os_h, double tol, int max_iter,
                 int max_coarse, double *est_out) {
    int y0 = GH, y1 = -1, x0 = GW, x1 = -1; /* window: removed pixels + 1 px */
    for (int i = 0; i < GH; i++) {
        const uint8_t *row = removed + (long)i * GW;
        int lo = -1, hi = -1;
        for (int j = 0; j < GW; j++)
            if (row[j]) { if (lo < 0) lo = j; hi = j; }
        if (lo < 0) continue;
        if (y0 > i) y0 = i;
        y1 = i;
        if (x0 > lo) x0 = lo;
        if (x1 < hi) x1 = hi;
    }
    if (est_out) *est_out = 0.0;
    if (y1 < 0) return 0;
    y0 = y0 > 0 ? y0 - 1 : 0; x0 = x0 > 0 ? x0 - 1 : 0;
    y1 = y1 + 1 < GH ? y1 + 1 : GH - 1; x1 = x1 + 1 < GW ? x1 + 1 : GW - 1;
    const int h = y1 - y0 + 1, w = x1 - x0 + 1;
    hier_t H;
    float *d12 = NULL;
    float *y = NULL, *r = NULL, *p = NULL, *q = NULL;
    int result = -2;
    if (hier_build(&H, removed + (long)y0 * GW + x0, GW, h, w, y0, x0, GH, GW, C, max_coarse,
                   &d12))
        goto done;
    level_t *l = &H.L[0];
    const long n = l->n;
    y = zalloc(sizeof(float) * n * C); r = zalloc(sizeof(float) * n * C);
    p = zalloc(sizeof(float) * n * C); q = zalloc(sizeof(float) * n * C);
    double *rz = zalloc(sizeof(double) * 4 * (C + 1)), *acc = rz + (C + 1);
    double *alpha = acc + (C + 1), *beta = alpha + (C + 1);
    if (!y || !r || !p || !q || !rz) { free(rz); goto done; }
    for (int ch = 0; ch < C; ch++)
        for (int i = 0; i < h; i++) {
            const float *xr = x + ch * xs_c + (long)(y0 + i) * xs_h + x0;
            const float *gr = guess ? guess + ch * gs_c + (long)(y0 + i) * gs_h + x0 : NULL;
            const float *m = l->m + AT(l, i, 0);
            float *yr = y + ch * n + AT(l, i, 0);
            for (int j = 0; j < w; j++) yr[j] = (gr && m[j] != 0.0f) ? gr[j] : xr[j];
        }
    for (int ch = 0; ch < C; ch++) image_residual(l, y + ch * n, r + ch * n);
    memset(acc, 0, sizeof(double) * (C + 1));
    float *z = vcycle(&H, 0, r, acc);
    for (int ch = 0; ch < C; ch++) rz[ch] = acc[ch];
    double est = acc[C], ratio = 0.3;
    int exact = 0, restart = 1; /* restart: p = z (no beta) */
    result = -1;
    for (int it = 0; it <= max_iter; it++) {
        if (est <= tol && !exact) { /* confirm with the true residual, restart from it */
            for (int ch = 0; ch < C; ch++) true_residual(l, y + ch * n, r + ch * n);
            memset(acc, 0, sizeof(double) * (C + 1));
            z = vcycle(&H, 0, r, acc);
            for (int ch = 0; ch < C; ch++) rz[ch] = acc[ch];
            est = acc[C];
            exact = 1;
            restart = 1;
        }
        if (est <= tol) { result = it; break; }
        if (it == max_iter) break;
        for (int ch = 0; ch < C; ch++) {
            float *pc = p + ch * n;
            if (restart) memcpy(pc, z + ch * n, sizeof(float) * n);
            const double pq = update_p_apply(l, pc, restart ? NULL : z + ch * n,
                                             (float)beta[ch], q + ch * n);
            alpha[ch] = pq > 0.0 ? rz[ch] / pq : 0.0;
            const float a = (float)alpha[ch];
            float *yc = y + ch * n, *rc = r + ch * n;
            const float *qc = q + ch * n;
            for (int i = 0; i < h; i++) {
                const long o = AT(l, i, 0);
                for (int j = 0; j < w; j++) {
                    yc[o + j] += a * pc[o + j];
                    rc[o + j] -= a * qc[o + j];
                }
            }
        }
        /* convergence predicted: replace the residual by the true one and restart
         * from it (keeping the old direction would mix in the recursive
         * residual's rounding, which diverges below float32's reach) */
        exact = restart = est * ratio <= tol;
        if (exact)
            for (int ch = 0; ch < C; ch++) true_residual(l, y + ch * n, r + ch * n);
        memset(acc, 0, sizeof(double) * (C + 1));
        z = vcycle(&H, 0, r, acc);
        ratio = acc[C] / (est > 1e-300 ? est : 1e-300);
        ratio = ratio < 0.01 ? 0.01 : (ratio > 1.0 ? 1.0 : ratio);
        est = acc[C];
        for (int ch = 0; ch < C; ch++) {
            beta[ch] = rz[ch] > 0.0 ? acc[ch] / rz[ch] : 0.0;
            rz[ch] = acc[ch];
        }
    }
    if (est_out) *est_out = est;
    for (int ch = 0; ch < C; ch++)
        for (int i = 0; i < h; i++) {
            const float *xr = x + ch * xs_c + (long)(y0 + i) * xs_h + x0;
            const float *m = l->m + AT(l, i, 0), *yr = y + ch * n + AT(l, i, 0);
            float *dst = out + ch * os_c + (long)(y0 + i) * os_h + x0;
            for (int j = 0; j < w; j++) dst[j] = m[j] != 0.0f ? yr[j] : xr[j];
        }
    free(rz);
done:
    free(y); free(r); free(p); free(q); free(d12);
    hier_free(&H);
    return result;
}
"""
