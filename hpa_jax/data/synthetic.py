"""Seeded generator of HPA-like 4-channel fields in the exact Kaggle layout.

The real HPA images cannot be downloaded here, so this is the package's embedded default
dataset. Each field holds a few cells; the reference channels are drawn from the cell
geometry (blue nucleus, red microtubules, yellow ER) and the green protein channel is the
sum of the label set's spatial patterns, each tied to the reference channels the way the
real localisation classes are (nucleoli are the dark holes of the blue nucleus, microtubule
protein follows the red filaments, ...). A classifier therefore has to learn where green
sits relative to the other channels, as on the real data.

All 28 classes are drawn. Two of them change the reference channels as well, as in the real
images: Mitotic spindle (17) turns 1-2 cells mitotic (condensed chromosome plate in blue, a
spindle instead of the interphase microtubules in red), and Cytokinetic bridge (16) and Cell
junctions (22) are drawn only where two cells touch (a field without touching cells shows none).

Varied fields (`render_cells`, `generate(varied_cells=True)`): as HPA found, the cells of one
field need not share a pattern. Each cell carries its own share of the field's classes, the
field is labelled with their union, and each field's true cell and nucleus masks and per-cell
classes are written beside it, the truth that segmentation and per-cell predictions are scored
against. Plain fields (the default) are unchanged by this: every cell shows every class.

Scale: at 128 px a field holds 4-9 cells ~40 px across. Larger images show both a larger
field of view and a higher magnification: lengths grow with sqrt(image_size / 128) and the
number of cells with image_size / 128 (at 512 px: 16-36 cells ~80 px across, close to the
real 512 px Kaggle images), so thin structures stay thin at every size.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import shutil
import tempfile
import time
import uuid
from typing import Callable, NamedTuple, Sequence

import numpy as np
from PIL import Image

from hpa_jax.classes import CHANNELS, KAGGLE_TRAIN_COUNTS
from hpa_jax.data import masks

_VERSION = "synthetic-v2"
CELLS_FOLDER = "cells"      # varied fields' true masks, {Id}_cells.png and {Id}_nuclei.png (`generate`)
CELLS_CSV = "cells.csv"     # and each of their cells' classes
_SPLIT_CODES = {"train": 0, "test": 1}
_TAU = 2 * np.pi
_STEP = 0.7      # sample spacing along filaments (px at 128), below the blur width: lines stay smooth


# ----------------------------------------------------------------------------- image tools

def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable gaussian blur of a 2-D image (reflect padding), pure numpy: scipy is optional."""
    r = max(1, int(3 * sigma + 0.5))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2).astype(np.float32)
    k /= k.sum()
    h, w = img.shape
    p = np.pad(img, [(r, r), (0, 0)], mode="reflect")
    img = sum(wt * p[i:i + h] for i, wt in enumerate(k))
    p = np.pad(img, [(0, 0), (r, r)], mode="reflect")
    return sum(wt * p[:, i:i + w] for i, wt in enumerate(k))


@functools.lru_cache(maxsize=64)
def _noise_filter(size: int, sigma: float, sigma_hi: float | None) -> np.ndarray:
    f2 = -2 * np.pi ** 2 * (np.fft.fftfreq(size)[:, None] ** 2 + np.fft.rfftfreq(size)[None, :] ** 2)
    h = np.exp(f2 * sigma ** 2)
    if sigma_hi is not None:
        h -= np.exp(f2 * sigma_hi ** 2)
    return h.astype(np.float32)


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float, sigma_hi: float | None = None) -> np.ndarray:
    """Unit-std gaussian-filtered white noise (band-pass if sigma_hi is given), via one FFT."""
    f = np.fft.rfft2(rng.standard_normal((size, size), dtype=np.float32))
    n = np.fft.irfft2(f * _noise_filter(size, sigma, sigma_hi), s=(size, size))
    return n / (n.std() + np.float32(1e-6))


def _saturate(x: np.ndarray, top: float = 2.0) -> np.ndarray:
    """Soft cap (linear for small x) so overlapping spots and filaments cannot pile up without limit."""
    return top * (1 - np.exp(-x / top))


def _cell_ids(rng: np.random.Generator, n: int, lo: int, hi: int) -> np.ndarray:
    """Each cell's index repeated lo..hi times: draws a varying number of features per cell in one go."""
    return np.repeat(np.arange(n), rng.integers(lo, hi + 1, n))


class _Shapes(NamedTuple):
    """Irregular ellipses: radius r(phi) = 1 + sum_k hc_k cos(k phi) + hs_k sin(k phi), k = 2, 3, ..."""

    cy: np.ndarray
    cx: np.ndarray
    a: np.ndarray       # semi-axis along theta (px)
    b: np.ndarray
    theta: np.ndarray
    hc: np.ndarray      # (N, K) harmonic amplitudes
    hs: np.ndarray

    @property
    def radius(self) -> np.ndarray:
        return np.sqrt(self.a * self.b)

    def extent(self, i: int) -> tuple[float, float]:
        """Half-height and half-width (px) of a box around centre i that contains the whole shape."""
        grow = 1 + np.hypot(self.hc[i], self.hs[i]).sum()
        c2, s2 = np.cos(self.theta[i]) ** 2, np.sin(self.theta[i]) ** 2
        a2, b2 = self.a[i] ** 2, self.b[i] ** 2
        return float(grow * np.sqrt(a2 * s2 + b2 * c2)), float(grow * np.sqrt(a2 * c2 + b2 * s2))

    def distance(self, i: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        """Normalised distance to shape i on the (yy, xx) grid: < 1 inside, 1 on the outline."""
        c, s = np.float32(np.cos(self.theta[i])), np.float32(np.sin(self.theta[i]))
        dy, dx = yy - np.float32(self.cy[i]), xx - np.float32(self.cx[i])
        p = (dx * c + dy * s) / np.float32(self.a[i])
        q = (dy * c - dx * s) / np.float32(self.b[i])
        rho = np.sqrt(p * p + q * q) + np.float32(1e-6)
        c1, s1 = p / rho, q / rho        # cos, sin of the angle; harmonics by angle addition
        ck, sk, r = c1, s1, np.ones_like(rho)
        for hc, hs in zip(self.hc[i].astype(np.float32), self.hs[i].astype(np.float32)):
            ck, sk = ck * c1 - sk * s1, sk * c1 + ck * s1
            r += hc * ck + hs * sk
        return rho / r

    def points(self, cid, s, psi) -> tuple[np.ndarray, np.ndarray]:
        """Pixel (y, x) at normalised radius s and angle psi in shape cid's frame (s=1: outline)."""
        kp = np.arange(2, self.hc.shape[1] + 2) * np.asarray(psi)[..., None]
        r = 1 + (self.hc[cid] * np.cos(kp) + self.hs[cid] * np.sin(kp)).sum(-1)
        u, v = self.a[cid] * s * r * np.cos(psi), self.b[cid] * s * r * np.sin(psi)
        c, sn = np.cos(self.theta[cid]), np.sin(self.theta[cid])
        return self.cy[cid] + u * sn + v * c, self.cx[cid] + u * c - v * sn


def _harmonics(rng, n: int, amps: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    amp = rng.uniform(0, 1, (n, len(amps))) * np.asarray(amps)
    ph = rng.uniform(0, _TAU, (n, len(amps)))
    return amp * np.cos(ph), amp * np.sin(ph)


# ----------------------------------------------------------------------------- one field

class _Field:
    """Cell geometry and reference structures of one field; the green patterns draw on it."""

    def __init__(self, size: int, rng: np.random.Generator):
        self.size = size
        self.px = np.sqrt(size / 128)   # length unit: one pixel at 128 px, magnified with sqrt(size)
        self.psf = 0.7 * self.px
        self._place_cells(rng)
        self._rasterise()
        self._make_nucleoli(rng)
        self.filaments = self._make_filaments(rng)
        self.reticulum = self._make_reticulum(rng)

    # geometry ------------------------------------------------------------------
    def _place_cells(self, rng):
        """Irregular cells that may touch each other and the field edge, each with a nucleus."""
        px, crowd = self.px, self.size / 128
        want = rng.integers(round(4 * crowd), round(9 * crowd) + 1)
        cy, cx, rad = np.zeros(0), np.zeros(0), np.zeros(0)
        for _ in range(40 * want):
            if rad.size == want:
                break
            r = rng.uniform(16, 25) * px
            y, x = rng.uniform(-0.05, 1.05, 2) * self.size
            if np.all(np.hypot(y - cy, x - cx) > 0.75 * (r + rad)):   # touching, not stacked
                cy, cx, rad = np.append(cy, y), np.append(cx, x), np.append(rad, r)
        n = self.n = rad.size
        aspect = np.sqrt(rng.uniform(1.0, 1.9, n))
        theta = rng.uniform(0, np.pi, n)
        a, b = rad * aspect, rad / aspect
        self.cell = _Shapes(cy, cx, a, b, theta, *_harmonics(rng, n, (0.12, 0.08, 0.05, 0.03)))
        # Nucleus: rounder than the cell, off-centre mostly along the long axis, inside the cell.
        k = rng.uniform(0.42, 0.55, n)
        na = k * a * rng.uniform(0.9, 1.05, n)
        nb = np.minimum(k * b * rng.uniform(1.0, 1.3, n), 0.7 * b)
        off_u, off_v = rng.uniform(-0.22, 0.22, n) * a, rng.uniform(-0.08, 0.08, n) * b
        ny = cy + off_u * np.sin(theta) + off_v * np.cos(theta)
        nx = cx + off_u * np.cos(theta) - off_v * np.sin(theta)
        self.nuc = _Shapes(ny, nx, na, nb, theta + rng.normal(0, 0.2, n), *_harmonics(rng, n, (0.04, 0.03, 0.02)))
        self.polarity = rng.uniform(0, _TAU, n)   # side of the nucleus where Golgi/centrosome sit

    def _rasterise(self):
        """Per-pixel owner cell, soft cell/nucleus masks and distance to the cell outline.

        Each cell is evaluated only in its bounding box; pixels keep the best and second-best
        ownership metric, so borders between touching cells fall where both are equal.
        """
        size, far = self.size, np.float32(1e3)
        self.yy = np.arange(size, dtype=np.float32)[:, None] + 0.5
        self.xx = np.arange(size, dtype=np.float32)[None, :] + 0.5
        m_own, m_2nd, d_nuc = (np.full((size, size), far) for _ in range(3))
        own = np.zeros((size, size), int)
        for i in range(self.n):
            ey, ex = (e + 3 * self.px for e in self.cell.extent(i))   # + room for the outline's blur
            y0, y1 = (int(np.clip(self.cell.cy[i] + d, 0, size)) for d in (-ey, ey + 1))
            x0, x1 = (int(np.clip(self.cell.cx[i] + d, 0, size)) for d in (-ex, ex + 1))
            if y0 == y1 or x0 == x1:
                continue
            box = np.s_[y0:y1, x0:x1]
            yy, xx = self.yy[y0:y1], self.xx[:, x0:x1]
            dn = self.nuc.distance(i, yy, xx)
            m = np.minimum(self.cell.distance(i, yy, xx), 0.6 * dn)   # a nucleus stays whole
            better = m < m_own[box]
            m_2nd[box] = np.where(better, m_own[box], np.minimum(m_2nd[box], m))
            m_own[box] = np.where(better, m, m_own[box])
            own[box] = np.where(better, i, own[box])
            d_nuc[box] = np.where(better, dn, d_nuc[box])
        self.owner, self.d_nuc = own, d_nuc
        self.nuc_radius = self.nuc.radius[own].astype(np.float32)
        # Signed distance (px, > 0 inside) to the cell's own outline or the border with a neighbour.
        radius = self.cell.radius[own].astype(np.float32)
        self.border = 0.5 * (m_2nd - m_own) * radius       # distance (px) to the border with a neighbour
        self.edge = np.minimum((1 - m_own) * radius, self.border)
        self.m_2nd = m_2nd                                  # < 1: the pixel also lies inside a second cell's shape
        ramp = 1.2 * self.px
        self.cell_mask = np.clip(self.edge / ramp + 0.5, 0, 1)
        self.nuc_mask = np.clip((1 - d_nuc) * self.nuc_radius / ramp + 0.5, 0, 1) * self.cell_mask
        self.cyto = self.cell_mask * (1 - self.nuc_mask)
        self.condensed = np.ones(self.n, np.float32)       # blue gain per cell (> 1: mitotic chromatin)
        self.spindles: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.mitotic: list[int] = []                       # cells make_mitotic turned mitotic
        self.bridged: list[int] = []                       # cells a cytokinetic bridge joins (class 16)

    def per_cell(self, values) -> np.ndarray:
        """Broadcast one value per cell to the pixels the cell owns."""
        return np.asarray(values, np.float32)[self.owner]

    # point features ------------------------------------------------------------
    def keep(self, y, x, cid, region: str = "cell", clear: float = 0.0) -> np.ndarray:
        """Points inside the field that land in their own cell ('cell') or its cytoplasm ('cyto');
        with clear > 0 (px at 128), cytoplasm points also keep that distance from the nucleus."""
        yi, xi = np.floor(y).astype(int), np.floor(x).astype(int)
        ok = (yi >= 0) & (yi < self.size) & (xi >= 0) & (xi < self.size)
        yi, xi = np.where(ok, yi, 0), np.where(ok, xi, 0)
        ok &= (self.owner[yi, xi] == cid) & (self.cell_mask[yi, xi] > 0.5)
        if region == "cyto":
            ok &= self.nuc_mask[yi, xi] < 0.5
            if np.any(clear):
                ok &= (self.d_nuc[yi, xi] - 1) * self.nuc_radius[yi, xi] > clear * self.px
        return ok

    def splat(self, y, x, w, sigma: float) -> np.ndarray:
        """Gaussian spots of size sigma seen through the PSF, peak ~w (bilinear impulses, one blur)."""
        w = np.broadcast_to(w, np.shape(y)).ravel()
        on = w != 0
        y, x, w = np.ravel(y)[on] - 0.5, np.ravel(x)[on] - 0.5, w[on]
        y0, x0 = np.floor(y), np.floor(x)
        fy, fx = y - y0, x - x0
        y0, x0 = y0.astype(int), x0.astype(int)
        yi = np.concatenate([y0, y0, y0 + 1, y0 + 1])
        xi = np.concatenate([x0, x0 + 1, x0, x0 + 1])
        wt = np.concatenate([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx]) * np.tile(w, 4)
        s = self.size
        ok = (yi >= 0) & (yi < s) & (xi >= 0) & (xi < s)
        img = np.bincount(yi[ok] * s + xi[ok], wt[ok], minlength=s * s).reshape(s, s).astype(np.float32)
        var = sigma ** 2 + self.psf ** 2
        return _blur(img, np.sqrt(var)) * np.float32(_TAU * var)

    def curves(self, y, x, w, sigma: float) -> np.ndarray:
        """Lines through (F, T) point paths, peak ~w through the PSF: points ink their share of arc length."""
        ds = np.hypot(np.diff(y, axis=-1), np.diff(x, axis=-1))
        ds = 0.5 * (np.pad(ds, [(0, 0), (1, 0)]) + np.pad(ds, [(0, 0), (0, 1)]))
        return self.splat(y, x, w * ds, sigma) / np.float32(np.sqrt(_TAU * (sigma ** 2 + self.psf ** 2)))

    # reference structures ------------------------------------------------------
    def _make_nucleoli(self, rng):
        """1-4 irregular blobs per nucleus: dark in blue, the green pattern of class 2."""
        px = self.px
        cid = np.repeat(np.arange(self.n), rng.choice([1, 2, 3, 4], self.n, p=[0.25, 0.35, 0.28, 0.12]))
        y, x = self.nuc.points(cid, 0.55 * np.sqrt(rng.random(cid.size)), rng.uniform(0, _TAU, cid.size))
        self.nucleoli_yx = (y, x)
        size = rng.uniform(0.6, 1.7, (cid.size, 1)) * px
        ang = rng.uniform(0, _TAU, (cid.size, 4))
        ys = np.concatenate([y[:, None], y[:, None] + size * np.sin(ang)], 1)
        xs = np.concatenate([x[:, None], x[:, None] + size * np.cos(ang)], 1)
        self.nucleoli = np.clip(1.6 * self.splat(ys, xs, 0.6, 1.1 * px) - 0.3, 0, 1) * self.nuc_mask

    def _make_filaments(self, rng) -> np.ndarray:
        """Microtubules: long curving filaments from around the nucleus out to the cell edge,
        tilted off the radial direction so they cross into a meshwork (peak ~1, dim over the nucleus)."""
        cid = _cell_ids(rng, self.n, 22, 34)
        f = cid.size
        y0, x0 = self.nuc.points(cid, rng.uniform(0.8, 1.2, f), rng.uniform(0, _TAU, f))
        out = np.arctan2(y0 - self.nuc.cy[cid], x0 - self.nuc.cx[cid]) + rng.normal(0, 1.0, f)
        length = np.maximum(self.cell.a, self.cell.b)[cid][:, None]     # long enough to leave the cell
        t = np.linspace(0, 1, int(np.ceil(length.max() / (_STEP * self.px))) + 1)[None]
        ang = out[:, None] + rng.normal(0, 1.3, (f, 1)) * t + 0.15 * np.sin(_TAU * rng.uniform(1, 2.5, (f, 1)) * t)
        ang, ds = ang.astype(np.float32), (length / (t.shape[1] - 1)).astype(np.float32)
        y = y0[:, None] + ds * np.cumsum(np.sin(ang), 1)
        x = x0[:, None] + ds * np.cumsum(np.cos(ang), 1)
        inside = self.keep(y, x, cid[:, None])
        w = rng.uniform(0.4, 0.9, (f, 1)) * inside
        # Plus ends: the last stretch of each filament still inside its cell (near the cell edge).
        last = t.shape[1] - 1 - np.argmax(inside[:, ::-1], axis=1)
        ok = inside.any(1) & (last >= 4)
        idx = last[ok, None] - np.arange(4, -1, -1)[None]
        rows = np.nonzero(ok)[0][:, None]
        self.tips = (y[rows, idx], x[rows, idx], cid[ok])
        return _saturate(self.curves(y, x, w, 0.5 * self.px), 1.2) * (1 - 0.6 * self.nuc_mask)

    def _make_reticulum(self, rng) -> np.ndarray:
        """ER: a mesh (zero crossings of band-passed noise), densest around the nucleus (peak ~1)."""
        px = self.px
        mesh = np.exp(-(_smooth_noise(rng, self.size, 0.8 * px, 2.2 * px) / 0.45) ** 2)
        mottle = np.clip(0.75 + 0.25 * _smooth_noise(rng, self.size, 3 * px), 0, 1)
        near = np.exp(-1.3 * np.clip(self.d_nuc - 1, 0, None))
        envelope = np.exp(-0.5 * ((self.d_nuc - 1) * self.nuc_radius / px) ** 2) * self.cell_mask
        body = self.cyto * (0.3 + 0.7 * near) * (0.35 + 0.65 * mesh) * mottle
        return np.clip(body + 0.5 * envelope * (1 - self.nuc_mask), 0, 1)

    def make_mitotic(self, rng):
        """Turns 1-2 cells into metaphase cells: the nucleus becomes a bright, condensed, ragged
        chromosome plate, the interphase microtubules and ER fade and a bipolar spindle (poles on
        either side of the plate, fibres fanning onto it) joins the red channel; the spindle's
        paths are kept for the green pattern of class 17. Call before reference_channels."""
        px = self.px
        margin = np.minimum(np.minimum(self.nuc.cy, self.size - self.nuc.cy), np.minimum(self.nuc.cx, self.size - self.nuc.cx))
        order = np.argsort(-(margin + rng.uniform(0, 8 * px, self.n)))   # prefer cells well inside the field
        cells = order[:1 if self.n < 6 else rng.integers(1, 3)]
        self.mitotic = [int(i) for i in cells]
        for i in cells:
            mine = self.owner == i
            r = float(self.nuc.radius[i])
            phi = rng.uniform(0, np.pi)                                  # spindle axis
            cy, cx = float(self.nuc.cy[i]), float(self.nuc.cx[i])
            plate = _Shapes(np.array([cy]), np.array([cx]), np.array([0.3 * r]), np.array([0.85 * r]),
                            np.array([phi]), *_harmonics(rng, 1, (0.15, 0.12, 0.1, 0.08, 0.06)))
            d = plate.distance(0, self.yy, self.xx)
            pm = np.clip((1 - d) * 0.5 * r / (1.0 * px) + 0.5, 0, 1) * self.cell_mask
            self.nuc_mask = np.where(mine, pm, self.nuc_mask)
            self.nucleoli = np.where(mine, 0, self.nucleoli)
            self.filaments = np.where(mine, 0.25 * self.filaments, self.filaments)
            self.reticulum = np.where(mine, 0.5 * self.reticulum + 0.1 * self.cell_mask * (1 - pm), self.reticulum)
            self.condensed[i] = 1.5
            # Spindle: fibres from each pole to points spread along the plate, bowing outwards.
            ua, va = np.array([np.sin(phi), np.cos(phi)]), np.array([np.cos(phi), -np.sin(phi)])   # (dy, dx)
            lp = rng.uniform(1.5, 1.9) * r
            k = rng.integers(12, 18)
            side = np.repeat([-1.0, 1.0], k)[:, None]
            v = rng.uniform(-0.9, 0.9, (2 * k, 1)) * 0.85 * r
            t = np.linspace(0, 1, int(np.ceil(lp * 1.3 / (_STEP * px))) + 1)[None]
            along = side * lp * (1 - t)
            across = v * t + 0.25 * v * np.sin(np.pi * t)
            y = cy + along * ua[0] + across * va[0]
            x = cx + along * ua[1] + across * va[1]
            w = rng.uniform(0.6, 1.0, (2 * k, 1)) * np.ones_like(t)
            self.spindles.append((y, x, w))
            self.filaments = self.filaments + 0.9 * _saturate(self.curves(y, x, w, 0.5 * px), 1.0)
        self.cyto = self.cell_mask * (1 - self.nuc_mask)

    def reference_channels(self, rng) -> dict[str, np.ndarray]:
        """Red, blue and yellow signal (about 0..1) with per-cell brightness."""
        tex = np.clip(0.78 + 0.14 * _smooth_noise(rng, self.size, self.px), 0, 1)
        gain = np.clip(rng.uniform(0.45, 0.95, self.n) * self.condensed, 0, 1.1)
        blue = self.nuc_mask * self.per_cell(gain) * tex * (1 - 0.55 * self.nucleoli)
        red = self.per_cell(rng.uniform(0.45, 0.9, self.n)) * (
            0.2 * self.cell_mask * (1 - 0.5 * self.nuc_mask) + 0.6 * self.filaments)
        yellow = self.per_cell(rng.uniform(0.6, 1.0, self.n)) * self.reticulum
        return {"red": red, "blue": blue, "yellow": yellow}


# ----------------------------------------------------------------------------- green patterns
# Each returns one class's green pattern with peak ~1; render_field scales it per cell and sums.

def _nucleoplasm(f: _Field, rng) -> np.ndarray:
    grain = np.clip(0.8 + 0.2 * _smooth_noise(rng, f.size, 0.8 * f.px), 0, 1)
    return 0.8 * f.nuc_mask * grain * (1 - 0.7 * f.nucleoli)


def _nuclear_membrane(f: _Field, rng) -> np.ndarray:
    return np.exp(-0.5 * ((f.d_nuc - 1) * f.nuc_radius / (0.8 * f.px)) ** 2) * f.cell_mask


def _nucleoli(f: _Field, rng) -> np.ndarray:
    return f.nucleoli


def _fibrillar_center(f: _Field, rng) -> np.ndarray:
    """1-3 tiny dots inside each nucleolus."""
    n = rng.integers(1, 4, f.nucleoli_yx[0].size)
    y, x = (np.repeat(v, n) + rng.normal(0, 0.9 * f.px, n.sum()) for v in f.nucleoli_yx)
    return _saturate(f.splat(y, x, rng.uniform(1.0, 1.4, y.size), 0.5 * f.px)) * f.nuc_mask


def _nuclear_speckles(f: _Field, rng) -> np.ndarray:
    """Many small irregular dots in the nucleus, sparing the nucleoli, over a faint nucleoplasm."""
    spots = np.clip((_smooth_noise(rng, f.size, 0.9 * f.px) - 0.4) / 1.5, 0, 1)
    return f.nuc_mask * (1 - f.nucleoli) * (0.15 + 0.85 * spots)


def _nuclear_bodies(f: _Field, rng) -> np.ndarray:
    """2-6 bright dots per nucleus over a trace of nucleoplasm."""
    cid = _cell_ids(rng, f.n, 2, 6)
    y, x = f.nuc.points(cid, 0.8 * np.sqrt(rng.random(cid.size)), rng.uniform(0, _TAU, cid.size))
    dots = f.splat(y, x, rng.uniform(1.0, 1.3, cid.size), 0.7 * f.px)
    return (_saturate(dots) + 0.06) * f.nuc_mask


def _endoplasmic_reticulum(f: _Field, rng) -> np.ndarray:
    return f.reticulum


def _golgi(f: _Field, rng) -> np.ndarray:
    """A compact crescent of blobs hugging one side of the nucleus."""
    cid = _cell_ids(rng, f.n, 8, 14)
    y, x = f.nuc.points(cid, rng.uniform(1.05, 1.5, cid.size), f.polarity[cid] + rng.normal(0, 0.35, cid.size))
    w = f.keep(y, x, cid) * rng.uniform(0.5, 1.0, cid.size)
    return _saturate(f.splat(y, x, w, 0.9 * f.px))


def _intermediate_filaments(f: _Field, rng) -> np.ndarray:
    """Wavy filaments wrapping around the nucleus (a perinuclear cage), unlike radial microtubules."""
    cid = _cell_ids(rng, f.n, 8, 14)[:, None]
    n = cid.shape[0]
    s0, span = rng.uniform(1.15, 2.4, (n, 1)), rng.uniform(1.0, 3.0, (n, 1))
    longest = 2.6 * 3.0 * f.nuc.radius.max()           # max radius s (2.4 + wave) x max span x nucleus radius
    t = np.linspace(0, 1, int(np.ceil(longest / (_STEP * f.px))) + 1)[None]
    psi = rng.uniform(0, _TAU, (n, 1)) + span * t
    s = s0 + 0.15 * np.sin(_TAU * rng.uniform(0.5, 2, (n, 1)) * t + rng.uniform(0, _TAU, (n, 1)))
    y, x = f.nuc.points(cid, s, psi)
    w = rng.uniform(0.5, 0.9, (n, 1)) * f.keep(y, x, cid, "cyto")
    return _saturate(f.curves(y, x, w, 0.5 * f.px), 1.2)


def _actin(f: _Field, rng) -> np.ndarray:
    """Parallel, slightly wavy and broken stress fibres across each cell plus a weak cortex."""
    beta = f.per_cell(rng.uniform(0, np.pi, f.n))
    phase = f.per_cell(rng.uniform(0, _TAU, f.n))
    proj = f.xx * np.cos(beta) + f.yy * np.sin(beta) + 1.5 * f.px * _smooth_noise(rng, f.size, 6 * f.px)
    fibres = (0.5 + 0.5 * np.cos(_TAU * proj / (3.2 * f.px) + phase)) ** 6
    breaks = np.clip(0.6 + 0.5 * _smooth_noise(rng, f.size, 2.5 * f.px), 0, 1)
    cortex = np.exp(-0.5 * (f.edge / f.px) ** 2) * (f.edge > -1.5 * f.px)
    return f.cell_mask * (1 - 0.85 * f.nuc_mask) * 0.75 * fibres * breaks + 0.35 * cortex


def _focal_adhesions(f: _Field, rng) -> np.ndarray:
    """Short dashes at the cell periphery, each pointing at the cell centre."""
    cid = _cell_ids(rng, f.n, 10, 22)[:, None]
    n = cid.shape[0]
    s = rng.uniform(0.75, 0.95, (n, 1)) - np.linspace(0, 2.5, 6)[None] * f.px / f.cell.radius[cid]
    y, x = f.cell.points(cid, s, rng.uniform(0, _TAU, (n, 1)))
    w = rng.uniform(0.6, 1.0, (n, 1)) * f.keep(y, x, cid, "cyto")
    return _saturate(f.curves(y, x, w, 0.5 * f.px))


def _microtubules(f: _Field, rng) -> np.ndarray:
    return f.filaments


def _centrosome(f: _Field, rng) -> np.ndarray:
    """One or two tiny bright dots right next to the nucleus."""
    cid = _cell_ids(rng, f.n, 1, 2)
    y, x = f.nuc.points(cid, rng.uniform(1.12, 1.35, cid.size), f.polarity[cid] + rng.normal(0, 0.3, cid.size))
    y, x = y + rng.normal(0, 0.6 * f.px, cid.size), x + rng.normal(0, 0.6 * f.px, cid.size)
    return _saturate(f.splat(y, x, 1.4 * f.keep(y, x, cid), 0.7 * f.px))


def _plasma_membrane(f: _Field, rng) -> np.ndarray:
    line = np.exp(-0.5 * (f.edge / (0.8 * f.px)) ** 2) * (f.edge > -1.5 * f.px)
    return line * np.clip(0.75 + 0.25 * _smooth_noise(rng, f.size, 1.5 * f.px), 0, 1)


def _mitochondria(f: _Field, rng) -> np.ndarray:
    """Short tubules scattered through the cytoplasm, denser towards the nucleus."""
    cid = _cell_ids(rng, f.n, 50, 80)
    n = cid.size
    cy, cx = f.cell.points(cid, 0.15 + 0.8 * rng.random(n) ** 0.8, rng.uniform(0, _TAU, n))
    length = rng.uniform(2, 6, (n, 1)) * f.px
    t = np.linspace(-0.5, 0.5, 10)[None]
    o = rng.uniform(0, _TAU, (n, 1)) + rng.normal(0, 0.8, (n, 1)) * t
    y, x = cy[:, None] + t * length * np.sin(o), cx[:, None] + t * length * np.cos(o)
    w = rng.uniform(0.6, 1.0, (n, 1)) * f.keep(y, x, cid[:, None], "cyto")
    return _saturate(f.curves(y, x, w, 0.5 * f.px))


def _aggresome(f: _Field, rng) -> np.ndarray:
    """One large bright inclusion beside the nucleus."""
    cid = np.arange(f.n)
    y, x = f.nuc.points(cid, rng.uniform(1.2, 1.4, f.n), f.polarity)
    return _saturate(f.splat(y, x, f.keep(y, x, cid), 1.7 * f.px)) * f.cell_mask


def _cytosol(f: _Field, rng) -> np.ndarray:
    return 0.6 * f.cyto * np.clip(0.8 + 0.2 * _smooth_noise(rng, f.size, f.px), 0, 1)


def _cytoplasmic_bodies(f: _Field, rng) -> np.ndarray:
    """A few (1-4) distinct round dots anywhere in the cytoplasm."""
    cid = _cell_ids(rng, f.n, 1, 4)
    y, x = f.cell.points(cid, rng.uniform(0.35, 0.9, cid.size), rng.uniform(0, _TAU, cid.size))
    return _saturate(f.splat(y, x, f.keep(y, x, cid, "cyto"), 1.1 * f.px))


def _loops(f: _Field, cy, cx, radius, w, sigma: float, points: int = 16) -> np.ndarray:
    """Closed rings of the given radii (px) around (cy, cx)."""
    a = np.linspace(0, _TAU, points + 1)[None]
    r = np.asarray(radius)[:, None]
    return f.curves(cy[:, None] + r * np.sin(a), cx[:, None] + r * np.cos(a), np.asarray(w)[:, None] * np.ones_like(a), sigma)


def _peroxisomes(f: _Field, rng) -> np.ndarray:
    """Many small, sparse, evenly spread dots through the whole cytoplasm."""
    cid = _cell_ids(rng, f.n, 30, 55)
    y, x = f.cell.points(cid, 0.97 * np.sqrt(rng.random(cid.size)), rng.uniform(0, _TAU, cid.size))
    w = rng.uniform(0.8, 1.2, cid.size) * f.keep(y, x, cid, "cyto", clear=1.5)
    return _saturate(f.splat(y, x, w, 0.35 * f.px))


def _endosomes(f: _Field, rng) -> np.ndarray:
    """Medium dots, denser around the nucleus, a third of them small hollow rings."""
    cid = _cell_ids(rng, f.n, 14, 26)
    y, x = f.nuc.points(cid, 1.1 + rng.exponential(0.45, cid.size), rng.uniform(0, _TAU, cid.size))
    w = rng.uniform(0.7, 1.1, cid.size) * f.keep(y, x, cid, "cyto")
    ring = rng.random(cid.size) < 0.35
    dots = f.splat(y[~ring], x[~ring], w[~ring], 0.65 * f.px)
    rings = _loops(f, y[ring], x[ring], rng.uniform(1.0, 1.5, ring.sum()) * f.px, 0.8 * w[ring], 0.4 * f.px, 10)
    return _saturate(dots + rings)


def _lysosomes(f: _Field, rng) -> np.ndarray:
    """Larger vesicles (filled or hollow) clustered on one side of the nucleus."""
    cid = _cell_ids(rng, f.n, 8, 16)
    psi = f.polarity[cid] + rng.normal(0, 0.9, cid.size)
    y, x = f.nuc.points(cid, 1.15 + rng.exponential(0.25, cid.size), psi)
    w = rng.uniform(0.7, 1.1, cid.size) * f.keep(y, x, cid, "cyto")
    ring = rng.random(cid.size) < 0.5
    blobs = f.splat(y[~ring], x[~ring], w[~ring], 1.1 * f.px)
    rings = _loops(f, y[ring], x[ring], rng.uniform(1.6, 2.4, ring.sum()) * f.px, w[ring], 0.55 * f.px)
    return _saturate(blobs + rings)


def _microtubule_ends(f: _Field, rng) -> np.ndarray:
    """Short comets on the last ~3 px of the red filaments, brightest at the plus end by the cell edge."""
    y, x, cid = f.tips
    pick = rng.random(cid.size) < 0.7
    w = np.linspace(0.15, 1.0, y.shape[1])[None] * rng.uniform(0.8, 1.2, (cid.size, 1)) * pick[:, None]
    return _saturate(1.4 * f.curves(y, x, w, 0.45 * f.px)) * f.cell_mask


def _touching_pairs(f: _Field) -> list[tuple[int, int, float, float]]:
    """(i, j, y, x) for neighbouring cells: the point where the line between their nuclei crosses
    from cell i into cell j (touching cells only), closest pairs first."""
    out = []
    d = np.hypot(f.nuc.cy[:, None] - f.nuc.cy[None], f.nuc.cx[:, None] - f.nuc.cx[None])
    for i, j in zip(*np.nonzero(np.triu(d < 1.3 * (f.cell.radius[:, None] + f.cell.radius[None]), 1))):
        t = np.linspace(0, 1, 64)
        y = f.nuc.cy[i] + t * (f.nuc.cy[j] - f.nuc.cy[i])
        x = f.nuc.cx[i] + t * (f.nuc.cx[j] - f.nuc.cx[i])
        yi, xi = np.clip(y.astype(int), 0, f.size - 1), np.clip(x.astype(int), 0, f.size - 1)
        own = f.owner[yi, xi] * (f.cell_mask[yi, xi] > 0.3) + (f.cell_mask[yi, xi] <= 0.3) * -1
        step = np.nonzero((own[:-1] == i) & (own[1:] == j))[0]
        inside = (y > 0) & (y < f.size) & (x > 0) & (x < f.size)
        if step.size and inside[step[0]]:
            out.append((d[i, j], int(i), int(j), float(y[step[0]]), float(x[step[0]])))
    return [o[1:] for o in sorted(out)]


def _cytokinetic_bridge(f: _Field, rng) -> np.ndarray:
    """A thin bright bar with a brighter midbody, across the border of 1-2 touching cell pairs,
    along the line joining the two daughter nuclei."""
    pairs = _touching_pairs(f)[:rng.integers(1, 3)]
    f.bridged = sorted({c for i, j, _, _ in pairs for c in (i, j)})
    out = np.zeros((f.size, f.size), np.float32)
    if not pairs:
        return out
    i, j, by, bx = (np.array(v) for v in zip(*pairs))
    ang = np.arctan2(f.nuc.cy[j] - f.nuc.cy[i], f.nuc.cx[j] - f.nuc.cx[i])[:, None]
    s = np.linspace(-1, 1, 16)[None] * rng.uniform(3, 6, (by.size, 1)) * f.px
    y, x = by[:, None] + s * np.sin(ang), bx[:, None] + s * np.cos(ang)
    bar = f.curves(y, x, np.full(y.shape, 1.6), 0.5 * f.px)
    return _saturate(bar + f.splat(by, bx, 1.6, 0.8 * f.px))


def _mitotic_spindle(f: _Field, rng) -> np.ndarray:
    """The bipolar spindle of the mitotic cells made by _Field.make_mitotic, bright poles."""
    out = np.zeros((f.size, f.size), np.float32)
    for y, x, w in f.spindles:
        out += f.curves(y, x, w, 0.5 * f.px) + f.splat(y[:, 0], x[:, 0], 0.5, 0.8 * f.px)
    return _saturate(out, 1.2)


def _mtoc(f: _Field, rng) -> np.ndarray:
    """One compact bright spot beside the nucleus with a halo, and faint signal along the red
    microtubules radiating from it (larger and haloed, unlike the 1-2 tiny centrosome dots)."""
    cid = np.arange(f.n)
    y, x = f.nuc.points(cid, rng.uniform(1.15, 1.3, f.n), f.polarity + rng.normal(0, 0.2, f.n))
    w = f.keep(y, x, cid).astype(float)
    core = f.splat(y, x, 1.3 * w, 1.0 * f.px) + f.splat(y, x, 0.35 * w, 3.0 * f.px)
    dist = np.hypot(f.yy - f.per_cell(y), f.xx - f.per_cell(x))
    radiate = 0.5 * f.filaments * np.exp(-dist / (7 * f.px)) * f.per_cell(w)
    return _saturate(core + radiate) * f.cell_mask


def _lipid_droplets(f: _Field, rng) -> np.ndarray:
    """Round droplets of varied size in the cytoplasm, larger ones seen as rings."""
    cid = _cell_ids(rng, f.n, 4, 12)
    y, x = f.cell.points(cid, rng.uniform(0.45, 0.9, cid.size), rng.uniform(0, _TAU, cid.size))
    r = rng.uniform(0.6, 2.6, cid.size)
    w = rng.uniform(0.8, 1.1, cid.size) * f.keep(y, x, cid, "cyto", clear=r + 1.0)
    r = r * f.px
    ring = r > 1.4 * f.px
    filled = f.splat(y[~ring], x[~ring], w[~ring], 0.8 * r[~ring].mean() if (~ring).any() else f.px)
    return _saturate(1.5 * (filled + _loops(f, y[ring], x[ring], r[ring], w[ring], 0.5 * f.px)))


def _junction_line(f: _Field) -> np.ndarray:
    """The line (peak ~1) along the borders between touching cells, where cell junctions sit."""
    shared = np.clip((1 - f.m_2nd) * f.cell.radius[f.owner] / (1.5 * f.px) + 0.5, 0, 1)
    return np.exp(-0.5 * (f.border / (0.8 * f.px)) ** 2) * shared


def _cell_junctions(f: _Field, rng) -> np.ndarray:
    """Bright, slightly beaded line on the borders between touching cells (not on free edges)."""
    line = _junction_line(f)
    beads = np.clip(0.7 + 0.35 * _smooth_noise(rng, f.size, 1.2 * f.px), 0, 1)
    return line * beads


def _rods_and_rings(f: _Field, rng) -> np.ndarray:
    """A few short straight rods and small rings per cell in the cytoplasm, now and then a
    rod in the nucleus."""
    cid = _cell_ids(rng, f.n, 2, 5)
    y, x = f.cell.points(cid, rng.uniform(0.4, 0.9, cid.size), rng.uniform(0, _TAU, cid.size))
    w = rng.uniform(0.8, 1.1, cid.size) * f.keep(y, x, cid, "cyto", clear=1.5)
    ny, nx = f.nuc.points(np.arange(f.n), 0.5 * np.sqrt(rng.random(f.n)), rng.uniform(0, _TAU, f.n))
    nuclear = rng.random(f.n) < 0.15
    cid = np.concatenate([cid, np.arange(f.n)[nuclear]])
    y, x = np.concatenate([y, ny[nuclear]]), np.concatenate([x, nx[nuclear]])
    w = np.concatenate([w, np.full(nuclear.sum(), 0.9)])
    ring = rng.random(cid.size) < 0.4
    o = rng.uniform(0, _TAU, (cid.size, 1))
    t = np.linspace(-0.5, 0.5, 12)[None] * rng.uniform(3, 7, (cid.size, 1)) * f.px
    rods = f.curves((y[:, None] + t * np.sin(o))[~ring], (x[:, None] + t * np.cos(o))[~ring],
                    np.repeat(w[~ring, None], 12, 1), 0.45 * f.px)
    rings = _loops(f, y[ring], x[ring], rng.uniform(1.3, 2.0, ring.sum()) * f.px, w[ring], 0.45 * f.px, 12)
    return _saturate(1.6 * (rods + rings))


_GREEN: dict[int, Callable[[_Field, np.random.Generator], np.ndarray]] = {
    0: _nucleoplasm, 1: _nuclear_membrane, 2: _nucleoli, 3: _fibrillar_center, 4: _nuclear_speckles,
    5: _nuclear_bodies, 6: _endoplasmic_reticulum, 7: _golgi, 11: _intermediate_filaments, 12: _actin,
    13: _focal_adhesions, 14: _microtubules, 19: _centrosome, 21: _plasma_membrane, 23: _mitochondria,
    24: _aggresome, 25: _cytosol, 26: _cytoplasmic_bodies,
    8: _peroxisomes, 9: _endosomes, 10: _lysosomes, 15: _microtubule_ends, 16: _cytokinetic_bridge,
    17: _mitotic_spindle, 18: _mtoc, 20: _lipid_droplets, 22: _cell_junctions, 27: _rods_and_rings,
}

SUPPORTED_CLASSES: tuple[int, ...] = tuple(sorted(_GREEN))


def render_field(labels: Sequence[int], image_size: int, rng: np.random.Generator) -> np.ndarray:
    """One field of view: uint8 array (image_size, image_size, 4) in R,G,B,Y channel order.

    Cells and reference channels come from a child stream of `rng` spawned before the green
    one, so the same rng state gives the same cells whatever the labels (paired comparisons).
    """
    return _render(labels, image_size, rng)[0]


def _render(labels: Sequence[int], image_size: int, rng: np.random.Generator,
            carriers: Callable[[_Field, list[int]], dict[int, np.ndarray]] | None = None):
    """(image, field, carried): `render_field`'s work. With `carriers(field, labels)` (a varied
    field, `render_cells`), each class's green pattern is kept to the cells it marks ((n,) bool a
    class, returned as `carried`); without it every cell shows every class (`carried` is None)."""
    labels = sorted({int(c) for c in labels})
    unknown = [c for c in labels if c not in _GREEN]
    if unknown:
        raise ValueError(f"classes {unknown} are not in SUPPORTED_CLASSES {SUPPORTED_CLASSES}")
    geo_rng, green_rng, noise_rng = rng.spawn(3)
    field = _Field(image_size, geo_rng)
    if 17 in labels:                                # mitosis changes the reference channels too
        field.make_mitotic(green_rng)
    chan = field.reference_channels(geo_rng)
    carried = None if carriers is None else carriers(field, labels)
    green = 0.03 * field.cell_mask                  # faint nonspecific staining
    for c in labels:
        gain = field.per_cell(green_rng.lognormal(0, 0.3, field.n)) * green_rng.uniform(0.6, 1.0)
        if carried is not None:
            gain = gain * field.per_cell(carried[c])
        green = green + gain * _GREEN[c](field, green_rng)
    chan["green"] = green * np.exp(green_rng.uniform(np.log(0.35), np.log(0.85)))
    return _expose(np.stack([chan[c] for c in CHANNELS]), noise_rng), field, carried


# ----------------------------------------------------------------------------- fields whose cells differ

class CellField(NamedTuple):
    """A varied field and its truth: `image` (S, S, 4) uint8 as `render_field`'s; `cells` (S, S)
    int32, 0 background and 1..K a cell; `nuclei` (S, S) int32, cell k's nucleus numbered k (a
    cell whose nucleus lies outside the field has none); `cell_labels[k - 1]` cell k's classes
    (sorted; empty for a cell that shows none of the field's classes, HPA's "Negative")."""

    image: np.ndarray
    cells: np.ndarray
    nuclei: np.ndarray
    cell_labels: tuple[tuple[int, ...], ...]

    @property
    def labels(self) -> list[int]:
        """The field's labels: the union of its cells', as HPA labels an image."""
        return sorted(set().union(*self.cell_labels))


def _in_truth(f: _Field) -> tuple[np.ndarray, np.ndarray]:
    """(pixels, cells) of the true cell masks: a pixel belongs to the cell that owns it where that
    cell's soft mask is at least 0.5; the cells with any such pixel are the field's true cells."""
    inside = f.cell_mask >= 0.5
    return inside, np.bincount(f.owner[inside], minlength=f.n) > 0


_EVERY_CELL = 1 / 3      # chance that a class of a varied field is in all its cells
_SHARE = (0.25, 0.75)    # otherwise each cell carries it with a probability drawn in this range


def _cell_classes(f: _Field, labels: list[int], rng: np.random.Generator) -> dict[int, np.ndarray]:
    """Which cells (inside the field) carry each class of a varied field, (n,) bool a class.

    A class is in every cell that can show it with probability _EVERY_CELL, else in each such
    cell with probability p ~ U(_SHARE), at least one. Cell junctions (22) can only be in cells
    that touch another, the mitotic spindle (17) is in the mitotic cells, and a cytokinetic bridge
    (16) in the cells of touching pairs here (`render_cells` narrows it to the pairs it joins)."""
    inside, present = _in_truth(f)
    cells = np.arange(f.n)
    can_show = {16: np.isin(cells, [c for pair in _touching_pairs(f) for c in pair[:2]]),
                17: np.isin(cells, f.mitotic),
                22: np.bincount(f.owner[inside & (_junction_line(f) > 0.5)], minlength=f.n) > 0}
    out = {}
    for c in labels:
        can = present & can_show.get(c, True)
        if c in (16, 17) or rng.random() < _EVERY_CELL:
            out[c] = can
            continue
        pick = can & (rng.random(f.n) < rng.uniform(*_SHARE))
        if can.any() and not pick.any():
            pick[rng.choice(np.flatnonzero(can))] = True
        out[c] = pick
    return out


def render_cells(labels: Sequence[int], image_size: int, rng: np.random.Generator) -> CellField:
    """A field whose cells differ: each cell shows its own share of `labels` (`_cell_classes`),
    and the field's labels are the union of its cells' (`CellField.labels`: a class no cell can
    show, a cytokinetic bridge where no cells touch, is dropped). The cells, reference channels and
    each class's pattern are `render_field`'s for the same rng state; which cells carry a class
    comes from a fourth child stream. A cell is a pixel of cell k where k owns it and its soft
    mask is at least 0.5 (the nucleus likewise), cells numbered 1..K in the generator's order."""
    # _render spawns rng's first three children before it calls this: the carriers' stream is the fourth.
    image, f, carried = _render(labels, image_size, rng, lambda f, c: _cell_classes(f, c, rng.spawn(1)[0]))
    if 16 in carried:
        carried[16] = carried[16] & np.isin(np.arange(f.n), f.bridged)
    inside, present = _in_truth(f)
    number = (np.cumsum(present) * present).astype(np.int32)        # generator's cell i -> 1..K, 0 if outside
    cells = np.where(inside, number[f.owner], 0).astype(np.int32)
    nuclei = np.where(f.nuc_mask >= 0.5, number[f.owner], 0).astype(np.int32)
    cell_labels = tuple(tuple(c for c in sorted(carried) if carried[c][i]) for i in np.flatnonzero(present))
    return CellField(image, cells, nuclei, cell_labels)


def _expose(signal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Camera: dark offset, shot + read noise, 8-bit quantisation (the optics' blur is already
    part of every pattern: soft mask edges, smooth noise, spots and lines splatted through the PSF)."""
    img = signal.astype(np.float32) * 255 + rng.uniform(1, 6, (4, 1, 1)).astype(np.float32)
    img += rng.standard_normal(img.shape, dtype=np.float32) * (1 + 0.35 * np.sqrt(img))
    return np.clip(img + 0.5, 0, 255).astype(np.uint8).transpose(1, 2, 0)


# ----------------------------------------------------------------------------- labels

_LABELS_PER_IMAGE = np.array([15126, 12485, 3160, 299 + 2], float)   # Kaggle train.csv; 5 folded into 4
_MIN_COUNT = 150.0     # tail classes weigh as if they had 150 Kaggle images (pure sqrt: 27 in 0.6%)
_CLASS_WEIGHTS = np.sqrt(np.maximum(np.asarray(KAGGLE_TRAIN_COUNTS, float)[list(SUPPORTED_CLASSES)], _MIN_COUNT))


def sample_labels(rng: np.random.Generator) -> list[int]:
    """A label set: sorted unique class indices from SUPPORTED_CLASSES.

    Rule: the number of labels k is drawn with the Kaggle train.csv proportions
    (1: 15126, 2: 12485, 3: 3160, 4: 299 + the 2 five-label images, capped at 4; mean 1.63
    labels per image); then k classes are drawn one after another without replacement with
    probability proportional to sqrt(max(KAGGLE_TRAIN_COUNTS, 150)) over SUPPORTED_CLASSES
    (all 28). The square root keeps Nucleoplasm the most common class while flattening the
    tail; the floor at 150 lifts the five rarest classes (8, 9, 10, 15, 27: 11-53 Kaggle
    images), which a pure square root would leave in only 0.6-1.4% of images, to 2.1%.

    Expected share of images per class (exact, k = 1..4 mixed), and images at num_train=2000:

        0 Nucleoplasm 18.0% (361)     10 Lysosomes 2.1% (41)          20 Lipid droplets 2.2% (44)
        1 Nuclear membrane 5.9% (118) 11 Intermediate fil. 5.5% (110) 21 Plasma membrane 10.1% (201)
        2 Nucleoli 9.9% (197)         12 Actin filaments 4.4% (87)    22 Cell junctions 4.7% (94)
        3 Fibrillar center 6.5% (131) 13 Focal adhesions 3.9% (77)    23 Mitochondria 9.0% (179)
        4 Nuclear speckles 7.1% (143) 14 Microtubules 5.4% (109)      24 Aggresome 3.0% (60)
        5 Nuclear bodies 8.3% (165)   15 Microtubule ends 2.1% (41)   25 Cytosol 14.6% (292)
        6 ER 5.3% (106)               16 Cytokinetic bridge 3.8% (77) 26 Cytoplasmic bodies 3.0% (61)
        7 Golgi 8.7% (175)            17 Mitotic spindle 2.4% (49)    27 Rods & rings 2.1% (41)
        8 Peroxisomes 2.1% (41)       18 MTOC 5.0% (100)
        9 Endosomes 2.1% (41)         19 Centrosome 6.4% (128)
    """
    k = 1 + rng.choice(len(_LABELS_PER_IMAGE), p=_LABELS_PER_IMAGE / _LABELS_PER_IMAGE.sum())
    picked = rng.choice(SUPPORTED_CLASSES, size=k, replace=False, p=_CLASS_WEIGHTS / _CLASS_WEIGHTS.sum())
    return sorted(int(c) for c in picked)


# ----------------------------------------------------------------------------- files

def _image_id(seed: int, split: str, index: int) -> str:
    """Kaggle-shaped id (uuid text), a pure function of (seed, split, index); its own stream,
    so ids never consume draws of the image's stream."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_CODES[split], index, 0x1D]))
    return str(uuid.UUID(bytes=rng.bytes(16)))


def _write_split(out: pathlib.Path, split: str, count: int, image_size: int, seed: int,
                 varied_cells: bool = False) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """Writes one split's PNGs (and with `varied_cells` each field's true masks into out/cells/);
    returns (Id, Target) rows sorted by Id like the Kaggle files, and (Id, cell, Target) rows."""
    folder = out / split
    folder.mkdir(parents=True, exist_ok=True)
    rows, cell_rows = [], []
    for index in range(count):
        # One stream per image: an image never depends on which others were generated.
        rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_CODES[split], index]))
        image_id = _image_id(seed, split, index)
        if varied_cells:
            field = _varied_field(image_size, rng)
            img, labels = field.image, field.labels
            _write_truth(out / CELLS_FOLDER, image_id, field)
            cell_rows += [(image_id, str(k), " ".join(map(str, c))) for k, c in enumerate(field.cell_labels, 1)]
        else:
            labels = sample_labels(rng)
            img = render_field(labels, image_size, rng)
        for c, color in enumerate(CHANNELS):
            Image.fromarray(np.ascontiguousarray(img[..., c])).save(folder / f"{image_id}_{color}.png")
        rows.append((image_id, " ".join(str(c) for c in rng.permutation(labels))))  # unsorted, as Kaggle
    return sorted(rows), cell_rows


def _varied_field(image_size: int, rng: np.random.Generator) -> CellField:
    """A varied field (`render_cells`) of a drawn label set; drawn again (labels and cells) in the
    rare case that it can show none of them (a cytokinetic bridge alone, where no cells touch)."""
    while True:
        field = render_cells(sample_labels(rng), image_size, rng)
        if field.labels:
            return field


def _write_truth(folder: pathlib.Path, image_id: str, field: CellField) -> None:
    """A varied field's true masks, named as a user's masks are (`hpa_jax.data.masks`)."""
    folder.mkdir(exist_ok=True)
    for kind in masks.KINDS:
        masks.write_labels(folder / masks.mask_name(image_id, kind), getattr(field, kind))


def _write_csv(path: pathlib.Path, header: str, rows: Sequence[tuple[str, ...]]):
    path.write_text("\n".join([header] + [",".join(row) for row in rows]) + "\n")


def generate(out_dir, *, num_train: int, num_test: int, image_size: int = 128, seed: int = 0,
             varied_cells: bool = False) -> pathlib.Path:
    """Writes a Kaggle-layout dataset into out_dir: train.csv, train/{Id}_{color}.png,
    test/{Id}_{color}.png, sample_submission.csv (Predicted '0') and test_labels.csv (the test
    images' true labels, for scoring a submission). Same arguments -> byte-identical files.

    `varied_cells`: fields whose cells differ (`render_cells`; other fields than without it, each
    Target the union of its cells'), with their truth: cells/{Id}_cells.png and
    cells/{Id}_nuclei.png (16-bit label images, `hpa_jax.data.masks`) and cells.csv (Id, cell,
    Target: each cell's classes, empty for a cell showing none), train and test fields alike."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train, train_cells = _write_split(out, "train", num_train, image_size, seed, varied_cells)
    test, test_cells = _write_split(out, "test", num_test, image_size, seed, varied_cells)
    _write_csv(out / "train.csv", "Id,Target", train)
    _write_csv(out / "sample_submission.csv", "Id,Predicted", [(i, "0") for i, _ in test])
    _write_csv(out / "test_labels.csv", "Id,Target", test)
    if varied_cells:
        by_field = sorted(train_cells + test_cells, key=lambda row: (row[0], int(row[1])))
        _write_csv(out / CELLS_CSV, "Id,cell,Target", by_field)
    return out


def _is_complete(folder: pathlib.Path, params: dict) -> bool:
    try:
        return json.loads((folder / "COMPLETE").read_text()) == params
    except (OSError, ValueError):
        return False


def ensure_synthetic(cache_dir, *, num_train: int, num_test: int, image_size: int = 128,
                     seed: int = 0, varied_cells: bool = False) -> pathlib.Path:
    """The dataset folder cache_dir/synthetic-v2-n{num_train}-t{num_test}-px{image_size}-seed{seed}
    (synthetic-v2-cells-... with `varied_cells`).

    Reused when its COMPLETE marker (the parameters as JSON) matches; otherwise generated into a
    temporary sibling that gets the marker last and is renamed into place, so an interrupted
    run never leaves a folder that looks complete. If another process renames its copy first,
    that copy is used.
    """
    params = {"version": _VERSION, "num_train": num_train, "num_test": num_test,
              "image_size": image_size, "seed": seed}
    if varied_cells:          # only then: the folders of plain fields keep their names and markers
        params["varied_cells"] = True
    cache = pathlib.Path(cache_dir).expanduser()
    final = cache / f"{_VERSION}{'-cells' * varied_cells}-n{num_train}-t{num_test}-px{image_size}-seed{seed}"
    if _is_complete(final, params):
        print(f"synthetic dataset: reusing {final}")
        return final
    cache.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=cache))
    try:
        generate(tmp, num_train=num_train, num_test=num_test, image_size=image_size, seed=seed,
                 varied_cells=varied_cells)
        (tmp / "COMPLETE").write_text(json.dumps(params))
        if final.exists() and not _is_complete(final, params):
            shutil.rmtree(final)                    # a folder without a valid marker is never trusted
        try:
            os.rename(tmp, final)
        except OSError:
            if not _is_complete(final, params):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"synthetic dataset: generated {num_train} train + {num_test} test images ({image_size} px"
          f"{', varied cells' * varied_cells}) in {time.perf_counter() - start:.1f} s at {final}")
    return final
