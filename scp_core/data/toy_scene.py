"""The toy-city scene renderer: one perspective street scene per call.

:func:`render_scene` first draws every random parameter of the scene (:func:`_draw_params`),
unconditionally and in a fixed order, so the layout does not depend on ``global_variation``;
then it paints far to near on a :class:`_Canvas`: facades and parks, road and sidewalks,
objects (trees, poles with signs, cars, people), and finally the lighting (time of day,
overcast, fog, exposure, sensor noise). The data set built on it is :mod:`.toy_city`.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from .palettes import TOY_CLASSES

__all__ = ["render_scene"]

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


def _draw_params(rng: np.random.Generator, H: int, W: int) -> SimpleNamespace:
    """Every random number of one scene, drawn unconditionally and in a fixed order.

    Reordering, adding or removing a draw changes every later number, hence the generated
    data set (bump ``toy_city.GENERATOR_VERSION``).
    """
    p = SimpleNamespace(H=H, W=W)
    # ---- global factors (raw draws; scaled by gv in _global_factors)
    p.mode = rng.integers(3)
    p.t_jit, p.exp_n, p.fog_raw, p.weather = rng.standard_normal(), rng.standard_normal(), rng.random(), rng.random()
    p.sky_jit = rng.normal(0, 6, 3)
    # ---- layout
    p.hz = H * rng.uniform(0.36, 0.5)
    p.vx = W * rng.uniform(0.38, 0.62)
    p.D = H - p.hz
    p.a = W * rng.uniform(0.28, 0.5) / p.D  # road half-width grows a px per row below the horizon
    p.s = W * rng.uniform(-0.1, 0.1) / p.D  # lateral drift of the road centre per row
    p.sw = rng.uniform(0.25, 0.65, 2) * (rng.random(2) < 0.92)  # sidewalk widths (0: none), L / R
    p.lit_side = rng.random() < 0.5
    # facade segments per side, in u = W / |x - vx| (proportional to depth along the facade)
    p.seg_len = rng.uniform(1.2, 4.5, (2, MAX_SEG))
    p.seg_type = rng.random((2, MAX_SEG)) < 0.78  # True: building, False: park / open lot
    p.seg_r = rng.uniform(0.4, 3.2, (2, MAX_SEG)) * np.where(rng.random((2, MAX_SEG)) < 0.2, 2.0, 1.0)
    p.seg_col = FACADES[rng.integers(len(FACADES), size=(2, MAX_SEG))] + rng.normal(0, 12, (2, MAX_SEG, 3))
    p.seg_wu = rng.uniform(1.0, 2.6, (2, MAX_SEG))  # windows per u unit
    p.seg_fh = rng.uniform(0.3, 0.6, (2, MAX_SEG))  # floor height in v units
    p.seg_glass = rng.uniform(35, 85, (2, MAX_SEG))
    p.seg_q = rng.uniform(0.15, 0.7, (2, MAX_SEG))  # park: depth of the lawn
    p.seg_rv = rng.uniform(0.1, 1.1, (2, MAX_SEG))  # park: height of the hedge / treeline
    p.u_start = rng.uniform(0.0, 2.0, 2)
    p.road_grey = rng.uniform(70, 115) + rng.normal(0, 3, 3)
    p.walk_col = np.array([172, 165, 158]) + rng.normal(0, 14) + rng.normal(0, 6, 3)
    p.veg_col = np.array([62, 98, 38]) + rng.normal(0, 10, 3)
    p.ter_col = np.array([118, 135, 72]) + rng.normal(0, 10, 3)
    p.centre_line, p.edge_lines = rng.random() < 0.7, rng.random() < 0.4
    p.lit_windows = rng.random((2, MAX_SEG, 64))
    p.noise = rng.standard_normal((H, W), dtype=np.float32)
    p.lowf = _smooth_noise(rng, H, W, max(H / 8, 2))
    # ---- objects: counts, then per kind depth fraction, lateral place and appearance
    p.n_car, p.n_person = rng.integers(0, 6), rng.integers(0, 5)
    p.n_pole, p.n_tree = rng.integers(0, 4), rng.integers(0, 5)
    p.car_f = rng.uniform(0.06, 1.12, 6)
    p.car_lane = rng.choice([-0.5, 0.5, -0.5, 0.5, -0.86, 0.86], 6) + rng.normal(0, 0.05, 6)
    p.car_col = CARS[rng.integers(len(CARS), size=6)] + rng.normal(0, 8, (6, 3))
    p.car_w = rng.uniform(0.9, 1.1, 6)
    p.per_f = rng.uniform(0.08, 1.0, 4)
    p.per_side, p.per_pos = rng.random(4) < 0.5, rng.uniform(0.15, 0.85, 4)
    p.per_cols = (CLOTHES[rng.integers(len(CLOTHES), size=4)], TROUSERS[rng.integers(len(TROUSERS), size=4)],
                  SKIN[rng.integers(len(SKIN), size=4)])
    p.per_h = rng.uniform(0.9, 1.1, 4)
    p.pole_f, p.pole_side = rng.uniform(0.1, 1.0, 3), rng.random(3) < 0.5
    p.pole_sign, p.sign_col = rng.random(3) < 0.6, SIGNS[rng.integers(len(SIGNS), size=3)]
    p.sign_round = rng.random(3) < 0.4
    p.tree_f, p.tree_side, p.tree_r = rng.uniform(0.05, 0.8, 4), rng.random(4) < 0.5, rng.uniform(0.8, 1.3, 4)
    p.sensor = rng.standard_normal((H, W, 3), dtype=np.float32)
    return p


def _global_factors(p: SimpleNamespace, gv: float):
    """``(t, fog, overcast, exposure)``: the raw global draws scaled by ``gv`` (all 0 / 1 at ``gv=0``)."""
    t = gv * float(np.clip([0.0, 0.5, 0.96][p.mode] + [0.04, 0.07, 0.03][p.mode] * p.t_jit, 0.0, 1.0))
    fog = gv * (p.fog_raw * 0.75 if p.weather < 0.25 else 0.0)
    overcast = gv * (1.0 if 0.25 <= p.weather < 0.55 else 0.0)
    exposure = np.exp((0.03 + 0.12 * gv) * p.exp_n)
    return t, fog, overcast, exposure


def _tex(p: SimpleNamespace, rr, cc, base, amp_n, amp_l):
    """``base`` colour at pixels ``(rr, cc)`` modulated by fine and low-frequency noise."""
    return base * (1 + amp_n * p.noise[rr, cc] + amp_l * p.lowf[rr, cc])[:, None]


def _paint_facades(cv: _Canvas, p: SimpleNamespace, t: float) -> None:
    """Facades (with windows) and parks, per column; left of the vanishing point is side 0."""
    hz, vx, a, s, sw = p.hz, p.vx, p.a, p.s, p.sw
    Y = (np.arange(p.H) + 0.5)[:, None]
    X = (np.arange(p.W) + 0.5)[None, :]
    side = (X[0] >= vx).astype(int)
    d = np.maximum(np.abs(X[0] - vx), 0.3)
    k = np.where(side == 0, a * (1 + sw[0]) - s, a * (1 + sw[1]) + s)  # outer edge slope
    yg = hz + d / k  # row where the facade meets the sidewalk's outer edge
    u = p.W / d
    bounds = p.u_start[:, None] + np.cumsum(p.seg_len, axis=1)
    seg = np.where(side == 0, np.searchsorted(bounds[0], u), np.searchsorted(bounds[1], u))
    seg = np.minimum(seg, MAX_SEG - 1)
    g = (side, seg)
    is_bld, r = p.seg_type[g], p.seg_r[g]
    span = yg - hz
    bld = is_bld[None] & (Y >= (hz - r * span)[None]) & (Y < yg[None])
    yback = hz + p.seg_q[g] * span
    park_veg = ~is_bld[None] & (Y >= (hz - p.seg_rv[g] * span)[None]) & (Y < yback[None])
    park_ter = ~is_bld[None] & (Y >= yback[None]) & (Y < yg[None])
    # facade: windows on a grid in (u, v), v = height over the ground distance (-1 at the ground)
    rr, cc = np.nonzero(bld)
    sd, sg = side[cc], seg[cc]
    v1 = (hz - rr - 0.5) / span[cc] + 1.0
    fh = p.seg_fh[sd, sg]
    wu = u[cc] * p.seg_wu[sd, sg]
    floor_i, wfrac = np.floor(v1 / fh), wu - np.floor(wu)
    vfrac = v1 / fh - floor_i
    win = (wfrac > 0.3) & (wfrac < 0.72) & (vfrac > 0.3) & (vfrac < 0.78) & (floor_i >= 1) & (v1 < 1 + r[cc] - 0.1 * fh)
    shop = (floor_i == 0) & (vfrac > 0.2) & (vfrac < 0.85) & (wfrac > 0.12) & (wfrac < 0.88) & (sg % 2 == 0)
    fade = np.clip((d[cc] - 3.0) / 10.0, 0, 1)  # no window grid where it would alias
    shade = np.where(sd == (1 if p.lit_side else 0), 1.0, 0.78)[:, None]
    facade = _tex(p, rr, cc, p.seg_col[sd, sg] * shade, 0.05, 0.04)
    gl = p.seg_glass[sd, sg][:, None] * np.array([0.9, 1.0, 1.15]) * (1 + 0.1 * p.lowf[rr, cc])[:, None]
    wm = ((win | shop) * fade)[:, None]
    cv.img[rr, cc] = facade * (1 - wm) + gl * wm
    cv.lab[rr, cc] = BUILDING
    if t > 0.3:  # lit windows at dusk and night
        cell = (np.floor(wu).astype(int) * 7 + floor_i.astype(int) * 3) % 64
        lit = (win & (p.lit_windows[sd, sg, cell] < 0.55)) * fade * min((t - 0.3) / 0.5, 1.0)
        cv.emit[rr, cc] = lit[:, None] * np.array([255.0, 200, 120])
    for m, cls, base, an, al in ((park_veg, VEG, p.veg_col, 0.25, 0.1), (park_ter, TERRAIN, p.ter_col, 0.08, 0.08)):
        rr, cc = np.nonzero(m)
        cv.img[rr, cc] = _tex(p, rr, cc, base, an, al)
        cv.lab[rr, cc] = cls


def _paint_road(cv: _Canvas, p: SimpleNamespace) -> None:
    """Road (asphalt, centre dashes, edge lines) and sidewalks (tiles, kerb) below the horizon."""
    H, hz, a, sw = p.H, p.hz, p.a, p.sw
    X = (np.arange(p.W) + 0.5)[None, :]
    rows = np.arange(int(np.floor(hz + 0.5)), H)
    rows = rows[rows + 0.5 > hz]
    Yg = rows[:, None] + 0.5
    below = Yg - hz
    rel = (X - (p.vx + p.s * below)) / (a * below)  # lateral position, road edges at -1 and +1
    road = np.abs(rel) < 1
    walk = ~road & (rel > -1 - sw[0]) & (rel < 1 + sw[1])
    rr, cc = np.nonzero(road)
    rel_r, bl = rel[rr, cc], below[rr, 0]
    rr = rr + rows[0]
    asphalt = _tex(p, rr, cc, p.road_grey, 0.06, 0.05)
    px = 0.25 / (a * bl)  # half a pixel in rel units
    dash = p.centre_line & (np.abs(rel_r) < 0.035 + px) & ((H * 1.5 / bl) % 1 < 0.5)
    edge = p.edge_lines & (np.abs(np.abs(rel_r) - 0.93) < 0.02 + px)
    asphalt[(dash | edge) & (bl > 1.5)] = [205.0, 205, 200]
    cv.img[rr, cc], cv.lab[rr, cc], cv.emit[rr, cc] = asphalt, ROAD, 0
    rr, cc = np.nonzero(walk)
    rel_w, bl = rel[rr, cc], below[rr, 0]
    rr = rr + rows[0]
    tiles = ((H * 4 / bl) % 1 < 0.12) & (bl > 4)
    kerb = (np.abs(np.abs(rel_w) - 1) < 0.06) & (bl > 3)
    walk_img = _tex(p, rr, cc, p.walk_col, 0.05, 0.04) * np.where(tiles, 0.88, 1.0)[:, None]
    cv.img[rr, cc] = walk_img * np.where(kerb, 1.12, 1.0)[:, None]
    cv.lab[rr, cc], cv.emit[rr, cc] = SIDEWALK, 0


def _scene_objects(p: SimpleNamespace) -> list:
    """``(depth fraction, kind, index, lateral)`` of the objects in the scene, far to near."""
    sw = p.sw
    objs = []
    for i in range(p.n_tree):
        lat = (-1 if p.tree_side[i] else 1) * (1 + 0.8 * sw[int(not p.tree_side[i])])
        objs.append((p.tree_f[i], "tree", i, lat))
    for i in range(p.n_pole):
        lat = (-1 if p.pole_side[i] else 1) * (1 + 0.12 * sw[int(not p.pole_side[i])])
        objs.append((p.pole_f[i], "pole", i, lat))
    for i in range(p.n_car):
        objs.append((p.car_f[i], "car", i, p.car_lane[i]))
    for i in range(p.n_person):
        sd = int(not p.per_side[i])
        if sw[sd] > 0:
            objs.append((p.per_f[i], "person", i, (-1 if p.per_side[i] else 1) * (1 + p.per_pos[i] * sw[sd])))
    objs.sort(key=lambda o: o[0])
    return objs


def _paint_tree(cv: _Canvas, p: SimpleNamespace, i: int, yb, xc, m) -> None:
    rr = 2.2 * p.tree_r[i] * m
    cv.rect(yb - 3.0 * m, yb, xc - 0.2 * m, xc + 0.2 * m, VEG, [75, 58, 40], 0.05)
    cv.ellipse(yb - 3.0 * m - 0.7 * rr, xc, 1.1 * rr, rr, VEG, p.veg_col * 0.95, 0.3)


def _paint_pole(cv: _Canvas, p: SimpleNamespace, i: int, yb, xc, m, lat) -> None:
    cv.rect(yb - 7.0 * m, yb, xc - 0.12 * m, xc + 0.12 * m, POLE, [120, 120, 126], 0.04)
    if p.pole_sign[i]:
        sy, sx, sr = yb - 2.8 * m, xc + np.sign(lat) * -0.1 * m, 0.4 * m
        if p.sign_round[i]:
            cv.ellipse(sy, sx, sr, sr, SIGN, p.sign_col[i])
        else:
            cv.rect(sy - sr, sy + sr, sx - 1.4 * sr, sx + 1.4 * sr, SIGN, p.sign_col[i])


def _paint_car(cv: _Canvas, p: SimpleNamespace, i: int, yb, xc, m, tail) -> None:
    """A car seen from behind: wheels, body, tail lights (emitting ``tail``), cabin with rear window."""
    w, h = 1.8 * m * p.car_w[i], 1.45 * m
    if h < 1.5:
        return
    x0, x1 = xc - w / 2, xc + w / 2
    cv.rect(yb - 0.22 * h, yb, x0 + 0.06 * w, x0 + 0.26 * w, CAR, [22, 22, 24])
    cv.rect(yb - 0.22 * h, yb, x1 - 0.26 * w, x1 - 0.06 * w, CAR, [22, 22, 24])
    cv.rect(yb - 0.62 * h, yb - 0.14 * h, x0, x1, CAR, p.car_col[i], 0.03)
    cv.rect(yb - 0.5 * h, yb - 0.4 * h, x0 + 0.03 * w, x0 + 0.15 * w, CAR, [170, 30, 25], emit=tail)
    cv.rect(yb - 0.5 * h, yb - 0.4 * h, x1 - 0.15 * w, x1 - 0.03 * w, CAR, [170, 30, 25], emit=tail)
    b = cv.box(yb - h, yb - 0.62 * h, x0 + 0.06 * w, x1 - 0.06 * w)
    if b is not None:  # cabin: a trapezoid with a dark rear window
        r0, r1, c0, c1 = b
        fy = ((np.arange(r0, r1) + 0.5) - (yb - h)) / (0.38 * h)
        half = (0.34 + 0.1 * fy)[:, None] * w
        dx = np.abs((np.arange(c0, c1) + 0.5)[None, :] - xc)
        cv.paint(b, dx < half, CAR, p.car_col[i] * 0.9, 0.03)
        win_m = (dx < half - 0.07 * w) & (fy[:, None] > 0.15) & (fy[:, None] < 0.85)
        cv.paint(b, win_m, CAR, [38, 45, 55], 0.05)


def _paint_person(cv: _Canvas, p: SimpleNamespace, i: int, yb, xc, m) -> None:
    h, w = 1.75 * m * p.per_h[i], 0.5 * m * p.per_h[i]
    if h < 2.0:
        return
    cv.rect(yb - 0.48 * h, yb, xc - 0.3 * w, xc + 0.3 * w, PERSON, p.per_cols[1][i], 0.05)
    cv.rect(yb - 0.83 * h, yb - 0.46 * h, xc - 0.5 * w, xc + 0.5 * w, PERSON, p.per_cols[0][i], 0.05)
    cv.ellipse(yb - 0.91 * h, xc, 0.09 * h, 0.3 * w, PERSON, p.per_cols[2][i])


def _paint_objects(cv: _Canvas, p: SimpleNamespace, t: float) -> None:
    """Objects far to near; scale: px per metre at row y is a * (y - hz) / 5 (road ~10 m)."""
    tail = np.array([255.0, 40, 25]) * np.clip((t - 0.25) / 0.4, 0, 1)
    for fd, kind, i, lat in _scene_objects(p):
        yb = p.hz + fd * p.D
        xc, m = p.vx + p.s * (yb - p.hz) + lat * p.a * (yb - p.hz), p.a * (yb - p.hz) / 5.0
        if kind == "tree":
            _paint_tree(cv, p, i, yb, xc, m)
        elif kind == "pole":
            _paint_pole(cv, p, i, yb, xc, m, lat)
        elif kind == "car":
            _paint_car(cv, p, i, yb, xc, m, tail)
        else:
            _paint_person(cv, p, i, yb, xc, m)


def _light(cv: _Canvas, p: SimpleNamespace, t: float, fog: float, overcast: float, exposure) -> np.ndarray:
    """Final uint8 image: ambient x albedo + emission (sky keeps its own colour), overcast, fog,
    exposure, sensor noise."""
    H, hz, lowf = p.H, p.hz, p.lowf
    Y = (np.arange(H) + 0.5)[:, None]
    amb = _lerp_t(_AMBIENT, t) * (1 - 0.25 * overcast)
    img = cv.img * amb + cv.emit
    top, hzc = _lerp_t(_SKY_TOP, t) + p.sky_jit, _lerp_t(_SKY_HZ, t) + p.sky_jit
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
    img = img * exposure + 2.0 * p.sensor
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def render_scene(rng: np.random.Generator, H: int, W: int, gv: float):
    """One scene as ``(uint8 [H, W, 3] image, uint8 [H, W] labels)``.

    All random numbers are drawn first (:func:`_draw_params`), unconditionally and in a fixed
    order; ``gv`` only scales the global lighting / weather factors.
    """
    p = _draw_params(rng, H, W)
    t, fog, overcast, exposure = _global_factors(p, gv)
    cv = _Canvas(H, W, p.noise)
    cv.lab[:] = SKY  # sky is the background; _light colours the pixels left sky
    _paint_facades(cv, p, t)
    _paint_road(cv, p)
    _paint_objects(cv, p, t)
    return _light(cv, p, t, fog, overcast, exposure), cv.lab
