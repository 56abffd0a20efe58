"""toy-city: a procedural street-scene data set, the embedded default of the study.

Each image is a little perspective street seen from a car (the Cityscapes viewpoint): a
horizon, a road converging to a vanishing point, sidewalks beside it, facades of buildings
or parks (terrain, hedges) on both sides, sky above, and objects drawn far to near: trees,
poles with traffic signs, cars on the lanes or parked, people on the sidewalks.

Per image the layout varies (horizon, vanishing point, road width and drift, sidewalk widths,
building heights, segment lengths, object counts and places) and so do the appearances
(facade colours, window grids, asphalt, car and clothing colours, textures). With
``global_variation=0`` all images share one lighting regime (daylight, as in Cityscapes);
``global_variation`` in ``(0, 1]`` scales per-image *global* factors: time of day (day,
dusk, night with lit windows and tail lights), overcast, fog and exposure. docs/method.md
section 4 explains why the study needs both settings.

Determinism: image ``i`` is drawn from its own generator seeded with ``(seed, i)``, so it
does not depend on ``n``; all random numbers are drawn in the same order whatever
``global_variation`` is, so the same seed gives the same layouts in both settings.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import torch

from ..io import atomic_path, write_json
from .base import SegDataset, resolve_root
from .palettes import TOY_CLASSES, TOY_PALETTE

__all__ = ["GENERATOR_VERSION", "generate_toy_city", "ensure_toy_city", "ToyCity", "TOY_PROMPT"]

# Bump on any change that alters the generated pixels or labels: ensure_toy_city then regenerates.
GENERATOR_VERSION = "2"
TOY_PROMPT = "City road scenes"
C = {name: i for i, name in enumerate(TOY_CLASSES)}
ROAD, SIDEWALK, BUILDING, POLE, SIGN = C["road"], C["sidewalk"], C["building"], C["pole"], C["traffic sign"]
VEG, TERRAIN, SKY, PERSON, CAR = C["vegetation"], C["terrain"], C["sky"], C["person"], C["car"]

# daylight albedos (RGB 0..255)
FACADES = np.array([[200, 185, 160], [150, 150, 150], [150, 82, 62], [215, 210, 200], [95, 95, 100],
                    [205, 170, 105], [195, 150, 140], [125, 98, 78], [170, 180, 170], [180, 120, 80]], float)
CARS = np.array([[225, 225, 225], [28, 28, 32], [170, 172, 176], [105, 107, 112], [30, 48, 110],
                 [165, 30, 30], [55, 95, 165], [40, 85, 60], [190, 170, 130], [220, 200, 40]], float)
CLOTHES = np.array([[30, 30, 40], [200, 40, 40], [40, 70, 150], [230, 230, 230], [90, 120, 60],
                    [220, 170, 40], [120, 60, 110], [110, 110, 110], [180, 110, 60], [40, 150, 160]], float)
TROUSERS = np.array([[30, 35, 60], [25, 25, 25], [90, 90, 95], [170, 150, 110], [60, 70, 110]], float)
SKIN = np.array([[235, 195, 165], [200, 150, 110], [140, 95, 65], [90, 60, 40]], float)
SIGNS = np.array([[30, 70, 170], [200, 30, 30], [230, 190, 30], [235, 235, 235]], float)
# sky (zenith, horizon) and ambient light at time of day t = 0 (day), 0.5 (dusk), 1 (night)
_T = np.array([0.0, 0.5, 1.0])
_SKY_TOP = np.array([[105, 145, 200], [60, 70, 135], [8, 10, 26]], float)
_SKY_HZ = np.array([[190, 204, 220], [240, 145, 80], [28, 32, 52]], float)
_AMBIENT = np.array([[1.0, 1.0, 1.0], [0.78, 0.62, 0.52], [0.16, 0.18, 0.28]])
MAX_SEG = 24  # facade segments per side


def _lerp_t(table: np.ndarray, t: float) -> np.ndarray:
    return np.array([np.interp(t, _T, table[:, c]) for c in range(table.shape[1])])


def _smooth_noise(rng, h: int, w: int, cell: float) -> np.ndarray:
    """Bilinearly interpolated white noise on a grid of ``cell`` pixels (unit variance-ish)."""
    gh, gw = int(h / cell) + 2, int(w / cell) + 2
    g = rng.standard_normal((gh, gw))
    y = (np.arange(h) + 0.5) / cell
    x = (np.arange(w) + 0.5) / cell
    y0, x0 = y.astype(int), x.astype(int)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    a, b = g[y0][:, x0], g[y0][:, x0 + 1]
    c, d = g[y0 + 1][:, x0], g[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


class _Canvas:
    """Albedo image, emission image and label map painted far to near."""

    def __init__(self, h, w, noise):
        self.h, self.w, self.noise = h, w, noise
        self.img = np.zeros((h, w, 3), np.float32)
        self.emit = np.zeros((h, w, 3), np.float32)
        self.lab = np.zeros((h, w), np.uint8)

    def box(self, y0, y1, x0, x1):
        """Integer pixel box covering pixel centres in [y0, y1) x [x0, x1), clipped; or None."""
        r0, r1 = max(int(np.ceil(y0 - 0.5)), 0), min(int(np.ceil(y1 - 0.5)), self.h)
        c0, c1 = max(int(np.ceil(x0 - 0.5)), 0), min(int(np.ceil(x1 - 0.5)), self.w)
        return (r0, r1, c0, c1) if r0 < r1 and c0 < c1 else None

    def paint(self, box, mask, cls, color, tex=0.0, emit=None):
        if box is None:
            return
        r0, r1, c0, c1 = box
        sl = (slice(r0, r1), slice(c0, c1))
        m = np.ones((r1 - r0, c1 - c0), bool) if mask is None else mask
        col = np.asarray(color, float)
        if tex:
            col = col * (1.0 + tex * self.noise[sl][..., None])
        self.img[sl][m] = np.broadcast_to(col, (r1 - r0, c1 - c0, 3))[m] if col.ndim == 3 else col
        self.emit[sl][m] = 0.0 if emit is None else emit
        self.lab[sl][m] = cls

    def rect(self, y0, y1, x0, x1, cls, color, tex=0.0, emit=None):
        # at least one pixel wide: thin far poles stay visible
        if x1 - x0 < 1.0:
            xc = 0.5 * (x0 + x1)
            x0, x1 = xc - 0.5, xc + 0.5
        self.paint(self.box(y0, y1, x0, x1), None, cls, color, tex, emit)

    def ellipse(self, cy, cx, ry, rx, cls, color, tex=0.0):
        b = self.box(cy - ry, cy + ry, cx - rx, cx + rx)
        if b is None:
            return
        r0, r1, c0, c1 = b
        yy = (np.arange(r0, r1) + 0.5 - cy)[:, None] / max(ry, 0.5)
        xx = (np.arange(c0, c1) + 0.5 - cx)[None, :] / max(rx, 0.5)
        self.paint(b, yy * yy + xx * xx <= 1.0, cls, color, tex)


def _render(rng: np.random.Generator, H: int, W: int, gv: float):
    """One scene. Every draw happens unconditionally and in a fixed order (see module doc)."""
    # ---- global factors (raw draws; scaled by gv below)
    mode = rng.integers(3)
    t_jit, exp_n, fog_raw, weather = rng.standard_normal(), rng.standard_normal(), rng.random(), rng.random()
    sky_jit = rng.normal(0, 6, 3)
    # ---- layout
    hz = H * rng.uniform(0.36, 0.5)
    vx = W * rng.uniform(0.38, 0.62)
    D = H - hz
    a = W * rng.uniform(0.28, 0.5) / D  # road half-width grows a px per row below the horizon
    s = W * rng.uniform(-0.1, 0.1) / D  # lateral drift of the road centre per row
    sw = rng.uniform(0.25, 0.65, 2) * (rng.random(2) < 0.92)  # sidewalk widths (0: none), L / R
    lit_side = rng.random() < 0.5
    # facade segments per side, in u = W / |x - vx| (proportional to depth along the facade)
    seg_len = rng.uniform(1.2, 4.5, (2, MAX_SEG))
    seg_type = rng.random((2, MAX_SEG)) < 0.78  # True: building, False: park / open lot
    seg_r = rng.uniform(0.4, 3.2, (2, MAX_SEG)) * np.where(rng.random((2, MAX_SEG)) < 0.2, 2.0, 1.0)
    seg_col = FACADES[rng.integers(len(FACADES), size=(2, MAX_SEG))] + rng.normal(0, 12, (2, MAX_SEG, 3))
    seg_wu = rng.uniform(1.0, 2.6, (2, MAX_SEG))  # windows per u unit
    seg_fh = rng.uniform(0.3, 0.6, (2, MAX_SEG))  # floor height in v units
    seg_glass = rng.uniform(35, 85, (2, MAX_SEG))
    seg_q = rng.uniform(0.15, 0.7, (2, MAX_SEG))  # park: depth of the lawn
    seg_rv = rng.uniform(0.1, 1.1, (2, MAX_SEG))  # park: height of the hedge / treeline
    u_start = rng.uniform(0.0, 2.0, 2)
    road_grey = rng.uniform(70, 115) + rng.normal(0, 3, 3)
    walk_col = np.array([172, 165, 158]) + rng.normal(0, 14) + rng.normal(0, 6, 3)
    veg_col = np.array([62, 98, 38]) + rng.normal(0, 10, 3)
    ter_col = np.array([118, 135, 72]) + rng.normal(0, 10, 3)
    centre_line, edge_lines = rng.random() < 0.7, rng.random() < 0.4
    lit_windows = rng.random((2, MAX_SEG, 64))
    noise = rng.standard_normal((H, W), dtype=np.float32)
    lowf = _smooth_noise(rng, H, W, max(H / 8, 2))
    # objects: (kind, depth fraction, lateral, random params...)
    n_car, n_person, n_pole, n_tree = rng.integers(0, 6), rng.integers(0, 5), rng.integers(0, 4), rng.integers(0, 5)
    car_f = rng.uniform(0.06, 1.12, 6)
    car_lane = rng.choice([-0.5, 0.5, -0.5, 0.5, -0.86, 0.86], 6) + rng.normal(0, 0.05, 6)
    car_col = CARS[rng.integers(len(CARS), size=6)] + rng.normal(0, 8, (6, 3))
    car_w = rng.uniform(0.9, 1.1, 6)
    per_f = rng.uniform(0.08, 1.0, 4)
    per_side, per_pos = rng.random(4) < 0.5, rng.uniform(0.15, 0.85, 4)
    per_cols = (CLOTHES[rng.integers(len(CLOTHES), size=4)], TROUSERS[rng.integers(len(TROUSERS), size=4)],
                SKIN[rng.integers(len(SKIN), size=4)])
    per_h = rng.uniform(0.9, 1.1, 4)
    pole_f, pole_side = rng.uniform(0.1, 1.0, 3), rng.random(3) < 0.5
    pole_sign, sign_col, sign_round = rng.random(3) < 0.6, SIGNS[rng.integers(len(SIGNS), size=3)], rng.random(3) < 0.4
    tree_f, tree_side, tree_r = rng.uniform(0.05, 0.8, 4), rng.random(4) < 0.5, rng.uniform(0.8, 1.3, 4)
    sensor = rng.standard_normal((H, W, 3), dtype=np.float32)

    # ---- global factors, scaled by gv
    t = gv * float(np.clip([0.0, 0.5, 0.96][mode] + [0.04, 0.07, 0.03][mode] * t_jit, 0.0, 1.0))
    fog = gv * (fog_raw * 0.75 if weather < 0.25 else 0.0)
    overcast = gv * (1.0 if 0.25 <= weather < 0.55 else 0.0)
    exposure = np.exp((0.03 + 0.12 * gv) * exp_n)

    Y = (np.arange(H) + 0.5)[:, None]
    X = (np.arange(W) + 0.5)[None, :]
    cv = _Canvas(H, W, noise)

    # ---- sky is the background; its colour is computed at the end for the pixels left sky
    cv.lab[:] = SKY

    def tex(rr, cc, base, amp_n, amp_l):
        return base * (1 + amp_n * noise[rr, cc] + amp_l * lowf[rr, cc])[:, None]

    # ---- facades and parks, per column (left of the vanishing point: side 0)
    side = (X[0] >= vx).astype(int)
    d = np.maximum(np.abs(X[0] - vx), 0.3)
    k = np.where(side == 0, a * (1 + sw[0]) - s, a * (1 + sw[1]) + s)  # outer edge slope
    yg = hz + d / k  # row where the facade meets the sidewalk's outer edge
    u = W / d
    bounds = u_start[:, None] + np.cumsum(seg_len, axis=1)
    seg = np.where(side == 0, np.searchsorted(bounds[0], u), np.searchsorted(bounds[1], u))
    seg = np.minimum(seg, MAX_SEG - 1)
    g = (side, seg)
    is_bld, r = seg_type[g], seg_r[g]
    span = yg - hz
    bld = is_bld[None] & (Y >= (hz - r * span)[None]) & (Y < yg[None])
    yback = hz + seg_q[g] * span
    park_veg = ~is_bld[None] & (Y >= (hz - seg_rv[g] * span)[None]) & (Y < yback[None])
    park_ter = ~is_bld[None] & (Y >= yback[None]) & (Y < yg[None])
    # facade: windows on a grid in (u, v), v = height over the ground distance (-1 at the ground)
    rr, cc = np.nonzero(bld)
    sd, sg = side[cc], seg[cc]
    v1 = (hz - rr - 0.5) / span[cc] + 1.0
    fh = seg_fh[sd, sg]
    wu = u[cc] * seg_wu[sd, sg]
    floor_i, wfrac = np.floor(v1 / fh), wu - np.floor(wu)
    vfrac = v1 / fh - floor_i
    win = (wfrac > 0.3) & (wfrac < 0.72) & (vfrac > 0.3) & (vfrac < 0.78) & (floor_i >= 1) & (v1 < 1 + r[cc] - 0.1 * fh)
    shop = (floor_i == 0) & (vfrac > 0.2) & (vfrac < 0.85) & (wfrac > 0.12) & (wfrac < 0.88) & (sg % 2 == 0)
    fade = np.clip((d[cc] - 3.0) / 10.0, 0, 1)  # no window grid where it would alias
    shade = np.where(sd == (1 if lit_side else 0), 1.0, 0.78)[:, None]
    facade = tex(rr, cc, seg_col[sd, sg] * shade, 0.05, 0.04)
    gl = seg_glass[sd, sg][:, None] * np.array([0.9, 1.0, 1.15]) * (1 + 0.1 * lowf[rr, cc])[:, None]
    wm = ((win | shop) * fade)[:, None]
    cv.img[rr, cc] = facade * (1 - wm) + gl * wm
    cv.lab[rr, cc] = BUILDING
    if t > 0.3:  # lit windows at dusk and night
        cell = (np.floor(wu).astype(int) * 7 + floor_i.astype(int) * 3) % 64
        lit = (win & (lit_windows[sd, sg, cell] < 0.55)) * fade * min((t - 0.3) / 0.5, 1.0)
        cv.emit[rr, cc] = lit[:, None] * np.array([255.0, 200, 120])
    for m, cls, base, an, al in ((park_veg, VEG, veg_col, 0.25, 0.1), (park_ter, TERRAIN, ter_col, 0.08, 0.08)):
        rr, cc = np.nonzero(m)
        cv.img[rr, cc] = tex(rr, cc, base, an, al)
        cv.lab[rr, cc] = cls

    # ---- road and sidewalks
    rows = np.arange(int(np.floor(hz + 0.5)), H)
    rows = rows[rows + 0.5 > hz]
    Yg = rows[:, None] + 0.5
    below = Yg - hz
    rel = (X - (vx + s * below)) / (a * below)  # lateral position, road edges at -1 and +1
    road = np.abs(rel) < 1
    walk = ~road & (rel > -1 - sw[0]) & (rel < 1 + sw[1])
    rr, cc = np.nonzero(road)
    rel_r, bl = rel[rr, cc], below[rr, 0]
    rr = rr + rows[0]
    asphalt = tex(rr, cc, road_grey, 0.06, 0.05)
    px = 0.25 / (a * bl)  # half a pixel in rel units
    dash = centre_line & (np.abs(rel_r) < 0.035 + px) & ((H * 1.5 / bl) % 1 < 0.5)
    edge = edge_lines & (np.abs(np.abs(rel_r) - 0.93) < 0.02 + px)
    asphalt[(dash | edge) & (bl > 1.5)] = [205.0, 205, 200]
    cv.img[rr, cc], cv.lab[rr, cc], cv.emit[rr, cc] = asphalt, ROAD, 0
    rr, cc = np.nonzero(walk)
    rel_w, bl = rel[rr, cc], below[rr, 0]
    rr = rr + rows[0]
    tiles = ((H * 4 / bl) % 1 < 0.12) & (bl > 4)
    kerb = (np.abs(np.abs(rel_w) - 1) < 0.06) & (bl > 3)
    walk_img = tex(rr, cc, walk_col, 0.05, 0.04) * np.where(tiles, 0.88, 1.0)[:, None]
    cv.img[rr, cc] = walk_img * np.where(kerb, 1.12, 1.0)[:, None]
    cv.lab[rr, cc], cv.emit[rr, cc] = SIDEWALK, 0

    # ---- objects, far to near; scale: px per metre at row y is a * (y - hz) / 5 (road ~10 m)
    def ground_xy(fd, lat):
        yb = hz + fd * D
        return yb, vx + s * (yb - hz) + lat * a * (yb - hz), a * (yb - hz) / 5.0

    objs = []
    for i in range(n_tree):
        lat = (-1 if tree_side[i] else 1) * (1 + 0.8 * sw[int(not tree_side[i])])
        objs.append((tree_f[i], "tree", i, lat))
    for i in range(n_pole):
        lat = (-1 if pole_side[i] else 1) * (1 + 0.12 * sw[int(not pole_side[i])])
        objs.append((pole_f[i], "pole", i, lat))
    for i in range(n_car):
        objs.append((car_f[i], "car", i, car_lane[i]))
    for i in range(n_person):
        sd = int(not per_side[i])
        if sw[sd] > 0:
            objs.append((per_f[i], "person", i, (-1 if per_side[i] else 1) * (1 + per_pos[i] * sw[sd])))
    objs.sort(key=lambda o: o[0])
    tail = np.array([255.0, 40, 25]) * np.clip((t - 0.25) / 0.4, 0, 1)
    for fd, kind, i, lat in objs:
        yb, xc, m = ground_xy(fd, lat)
        if kind == "tree":
            rr = 2.2 * tree_r[i] * m
            cv.rect(yb - 3.0 * m, yb, xc - 0.2 * m, xc + 0.2 * m, VEG, [75, 58, 40], 0.05)
            cv.ellipse(yb - 3.0 * m - 0.7 * rr, xc, 1.1 * rr, rr, VEG, veg_col * 0.95, 0.3)
        elif kind == "pole":
            cv.rect(yb - 7.0 * m, yb, xc - 0.12 * m, xc + 0.12 * m, POLE, [120, 120, 126], 0.04)
            if pole_sign[i]:
                sy, sx, sr = yb - 2.8 * m, xc + np.sign(lat) * -0.1 * m, 0.4 * m
                if sign_round[i]:
                    cv.ellipse(sy, sx, sr, sr, SIGN, sign_col[i])
                else:
                    cv.rect(sy - sr, sy + sr, sx - 1.4 * sr, sx + 1.4 * sr, SIGN, sign_col[i])
        elif kind == "car":
            w, h = 1.8 * m * car_w[i], 1.45 * m
            if h < 1.5:
                continue
            x0, x1 = xc - w / 2, xc + w / 2
            cv.rect(yb - 0.22 * h, yb, x0 + 0.06 * w, x0 + 0.26 * w, CAR, [22, 22, 24])
            cv.rect(yb - 0.22 * h, yb, x1 - 0.26 * w, x1 - 0.06 * w, CAR, [22, 22, 24])
            cv.rect(yb - 0.62 * h, yb - 0.14 * h, x0, x1, CAR, car_col[i], 0.03)
            cv.rect(yb - 0.5 * h, yb - 0.4 * h, x0 + 0.03 * w, x0 + 0.15 * w, CAR, [170, 30, 25], emit=tail)
            cv.rect(yb - 0.5 * h, yb - 0.4 * h, x1 - 0.15 * w, x1 - 0.03 * w, CAR, [170, 30, 25], emit=tail)
            b = cv.box(yb - h, yb - 0.62 * h, x0 + 0.06 * w, x1 - 0.06 * w)
            if b is not None:  # cabin: a trapezoid with a dark rear window
                r0, r1, c0, c1 = b
                fy = ((np.arange(r0, r1) + 0.5) - (yb - h)) / (0.38 * h)
                half = (0.34 + 0.1 * fy)[:, None] * w
                dx = np.abs((np.arange(c0, c1) + 0.5)[None, :] - xc)
                cv.paint(b, dx < half, CAR, car_col[i] * 0.9, 0.03)
                win_m = (dx < half - 0.07 * w) & (fy[:, None] > 0.15) & (fy[:, None] < 0.85)
                cv.paint(b, win_m, CAR, [38, 45, 55], 0.05)
        else:  # person
            h, w = 1.75 * m * per_h[i], 0.5 * m * per_h[i]
            if h < 2.0:
                continue
            cv.rect(yb - 0.48 * h, yb, xc - 0.3 * w, xc + 0.3 * w, PERSON, per_cols[1][i], 0.05)
            cv.rect(yb - 0.83 * h, yb - 0.46 * h, xc - 0.5 * w, xc + 0.5 * w, PERSON, per_cols[0][i], 0.05)
            cv.ellipse(yb - 0.91 * h, xc, 0.09 * h, 0.3 * w, PERSON, per_cols[2][i])

    # ---- lighting: ambient x albedo + emission (sky keeps its own colour), overcast, fog,
    # exposure, sensor noise
    amb = _lerp_t(_AMBIENT, t) * (1 - 0.25 * overcast)
    img = cv.img * amb + cv.emit
    top, hzc = _lerp_t(_SKY_TOP, t) + sky_jit, _lerp_t(_SKY_HZ, t) + sky_jit
    grey = np.array([172.0, 176, 182]) * _lerp_t(_AMBIENT, t)
    top, hzc = top + 0.6 * overcast * (grey - top), hzc + 0.6 * overcast * (grey - hzc)
    rr, cc = np.nonzero(cv.lab == SKY)
    f = np.clip((rr + 0.5) / hz, 0, 1)[:, None] ** 1.5
    clouds = (10 + 12 * overcast) * (1 - 0.8 * t) * np.clip(lowf[rr, cc], 0, None)[:, None]
    img[rr, cc] = top * (1 - f) + hzc * f + clouds
    if overcast:
        img += 0.4 * overcast * (img.mean(-1, keepdims=True) - img)
    if fog:
        fog_col = hzc * 0.5 + 0.5 * np.array([175.0, 178, 182]) * amb
        near = np.clip(np.abs(Y - hz) / (0.6 * H), 0, 1)[..., None]
        f = np.clip(fog * (1.0 - 0.8 * near), 0, 1)
        img = img * (1 - f) + fog_col * f
    img = img * exposure + 2.0 * sensor
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), cv.lab


def generate_toy_city(n: int, seed: int = 0, size=(64, 128), global_variation: float = 0.0):
    """Generate ``n`` toy street scenes.

    Args:
        n: number of images.
        seed: base seed; image ``i`` uses a generator seeded with ``(seed, i)``.
        size: ``(H, W)``; the default 64 x 128 has the Cityscapes aspect.
        global_variation: in ``[0, 1]``; scales per-image lighting / weather factors
            (0: one daylight regime, 1: day / dusk / night, overcast, fog).

    Returns:
        ``(images, labels)``: uint8 ``[n, H, W, 3]`` and uint8 ``[n, H, W]`` with ids into
        :data:`TOY_CLASSES`.
    """
    H, W = int(size[0]), int(size[1])
    if n < 0 or H < 8 or W < 8:
        raise ValueError(f"need n >= 0 and size >= (8, 8), got n={n}, size={size}")
    if not 0.0 <= float(global_variation) <= 1.0:
        raise ValueError(f"global_variation must be in [0, 1], got {global_variation}")
    if int(seed) < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    images = np.empty((n, H, W, 3), np.uint8)
    labels = np.empty((n, H, W), np.uint8)
    for i in range(n):
        images[i], labels[i] = _render(np.random.default_rng([int(seed), i]), H, W, float(global_variation))
    return images, labels


# ------------------------------------------------------------------------- on-disk cache
def _params(n_train, n_val, size, global_variation, seed) -> dict:
    return {"generator_version": GENERATOR_VERSION, "n_train": int(n_train), "n_val": int(n_val),
            "size": [int(size[0]), int(size[1])], "global_variation": float(global_variation),
            "seed": int(seed), "classes": list(TOY_CLASSES)}


def ensure_toy_city(root="data/toy-city", n_train: int = 4000, n_val: int = 500, size=(64, 128),
                    global_variation: float = 0.0, seed: int = 0) -> Path:
    """Generate toy-city into ``root`` once (``train.npz``, ``val.npz``, ``meta.json``).

    Later calls with the same parameters and :data:`GENERATOR_VERSION` reuse the files;
    anything else regenerates them. Validation images use seed ``seed + 1`` so they never
    repeat a training scene. A relative ``root`` is taken relative to the repository root.
    Files are written atomically, ``meta.json`` last.
    """
    root = resolve_root(root)
    want = _params(n_train, n_val, size, global_variation, seed)
    meta = root / "meta.json"
    try:
        have = json.loads(meta.read_text())
    except (OSError, ValueError):
        have = None
    if have is not None and {k: have.get(k) for k in want} == want and all(
            (root / f"{sp}.npz").is_file() for sp in ("train", "val")):
        return root
    root.mkdir(parents=True, exist_ok=True)
    if meta.exists():
        meta.unlink()  # stale: the npz files below are about to change
    for split, n, sd in (("train", n_train, seed), ("val", n_val, seed + 1)):
        images, labels = generate_toy_city(n, seed=sd, size=size, global_variation=global_variation)
        with atomic_path(root / f"{split}.npz") as tmp:
            np.savez(tmp, images=images, labels=labels)
    write_json(meta, {**want, "palette": TOY_PALETTE.tolist(),
                      "note": "generated by scp_core.data.ensure_toy_city; delete to regenerate"})
    return root


@functools.lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int):
    with np.load(path) as z:
        images, labels = z["images"], z["labels"]
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


class ToyCity(SegDataset):
    """toy-city as a torch Dataset (generated on first use, see :func:`ensure_toy_city`).

    Items are ``{"image": float32 [3, H, W] in [-1, 1], "labels": int64 [H, W], "name": str}``;
    ``.images`` (uint8 ``[N, H, W, 3]``) and ``.labels`` (uint8 ``[N, H, W]``) give bulk access.
    ``root=None`` means ``data/toy-city`` (``data/toy-city-gv`` for ``global_variation=1``).
    """

    name = "toy-city"
    class_names = list(TOY_CLASSES)
    palette = TOY_PALETTE
    num_classes = len(TOY_CLASSES)
    ignore_index = None
    prompt = TOY_PROMPT
    default_size = size = (64, 128)

    def __init__(self, root=None, split: str = "train", global_variation: float = 0.0,
                 n_train: int = 4000, n_val: int = 500, size=(64, 128), seed: int = 0):
        if split not in ("train", "val"):
            raise ValueError(f"toy-city has splits 'train' and 'val', got {split!r}")
        if root is None:
            gv = float(global_variation)
            root = "data/toy-city" if gv == 0 else ("data/toy-city-gv" if gv == 1 else f"data/toy-city-gv{gv:g}")
        self.size = (int(size[0]), int(size[1]))
        self.split = split
        self.global_variation = float(global_variation)
        self.root = ensure_toy_city(root, n_train, n_val, self.size, global_variation, seed)
        path = self.root / f"{split}.npz"
        self.images, self.labels = _load(str(path), path.stat().st_mtime_ns)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} items")
        i = i % len(self)
        image = torch.from_numpy(self.images[i].astype(np.float32)).permute(2, 0, 1) / 127.5 - 1.0
        return {"image": image, "labels": torch.from_numpy(self.labels[i].astype(np.int64)),
                "name": f"{self.split}_{i:05d}"}
