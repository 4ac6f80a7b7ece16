"""Aerial-style object chips drawn from attributes: a top-down object (shape, colour, size/count) on a
terrain.

Every class is one combination of attributes from four groups, so classes share attributes the way DSVA's
classes do, and an unseen class can be described by attributes learned on seen ones.
"""
import numpy as np

ATTRIBUTE_GROUPS = {
    "shape": ["round", "ring-shaped", "rectangular", "elongated", "cross-shaped", "triangular"],
    "colour": ["white", "grey", "red", "green", "blue", "yellow"],
    "surface": ["water", "grass", "sand", "asphalt", "forest"],
    "size": ["small", "large", "several"],
}

# name: (shape, colour, surface, size); the first `--classes` entries are used.
CATALOG = [
    ("airplane", ("cross-shaped", "white", "asphalt", "large")),
    ("bridge", ("elongated", "grey", "water", "large")),
    ("chimney", ("round", "red", "sand", "small")),
    ("ground track field", ("ring-shaped", "red", "grass", "large")),
    ("harbor", ("rectangular", "white", "water", "several")),
    ("roundabout", ("ring-shaped", "grey", "asphalt", "large")),
    ("ship", ("elongated", "white", "water", "small")),
    ("storage tank", ("round", "white", "sand", "several")),
    ("swimming pool", ("rectangular", "blue", "grass", "small")),
    ("tennis court", ("rectangular", "green", "asphalt", "several")),
    ("vehicle", ("elongated", "red", "asphalt", "several")),
    ("windmill", ("cross-shaped", "white", "grass", "small")),
    ("baseball field", ("triangular", "yellow", "grass", "large")),
    ("dam", ("rectangular", "grey", "forest", "large")),
    ("basketball court", ("rectangular", "yellow", "asphalt", "small")),
    ("golf field", ("round", "green", "forest", "large")),
]

COLOURS = {"white": (235, 235, 230), "grey": (140, 140, 150), "red": (190, 50, 40), "green": (60, 170, 70),
           "blue": (40, 110, 220), "yellow": (225, 200, 40)}
SURFACES = {"water": (40, 70, 120), "grass": (90, 140, 60), "sand": (200, 180, 130), "asphalt": (75, 75, 80),
            "forest": (35, 80, 40)}


def attribute_names() -> list:
    return [a for group in ATTRIBUTE_GROUPS.values() for a in group]


def class_attribute_matrix(classes: list) -> np.ndarray:
    """Binary class x attribute matrix for [(name, (shape, colour, surface, size))]."""
    names = attribute_names()
    m = np.zeros((len(classes), len(names)), dtype=np.float32)
    for i, (_, attrs) in enumerate(classes):
        for a in attrs:
            m[i, names.index(a)] = 1.0
    return m


def _smooth_noise(rng, size: int, cells: int) -> np.ndarray:
    """Value noise in [0, 1]: a random cells x cells grid bilinearly upsampled to size x size."""
    grid = rng.random((cells + 1, cells + 1))
    t = np.linspace(0, cells, size, endpoint=False)
    i = t.astype(int)
    f = t - i
    rows = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]
    return rows[:, i] * (1 - f) + rows[:, i + 1] * f


def _terrain(rng, surface: str, size: int) -> np.ndarray:
    base = np.array(SURFACES[surface], dtype=np.float32) * rng.uniform(0.85, 1.15)
    cells = {"water": 3, "grass": 6, "sand": 4, "asphalt": 10, "forest": 8}[surface]
    low = _smooth_noise(rng, size, cells)[..., None]
    img = base * (0.75 + 0.5 * low)
    if surface == "forest":  # tree crowns: dark blobs
        img *= (0.6 + 0.6 * (_smooth_noise(rng, size, size // 4) > 0.5))[..., None]
    if surface == "water":  # ripples
        yy = np.arange(size)[:, None] + 3 * low[..., 0]
        img += 8 * np.sin(yy * rng.uniform(0.6, 1.2))[..., None]
    return img + rng.normal(0, 6, img.shape)


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """Mask of a shape of radius r centred at the origin of rotated coordinates (u, v)."""
    if shape == "round":
        return u ** 2 + v ** 2 <= r ** 2
    if shape == "ring-shaped":
        d = np.sqrt(u ** 2 + (v * 1.5) ** 2)
        return (d <= r) & (d >= 0.6 * r)
    if shape == "rectangular":
        return (np.abs(u) <= r) & (np.abs(v) <= 0.65 * r)
    if shape == "elongated":
        return (u / r) ** 2 + (v / (0.25 * r)) ** 2 <= 1
    if shape == "cross-shaped":  # fuselage, wings, tail plane
        body = (np.abs(u) <= r) & (np.abs(v) <= 0.15 * r)
        wings = (np.abs(u - 0.1 * r) <= 0.18 * r) & (np.abs(v) <= 0.9 * r)
        tail = (np.abs(u + 0.85 * r) <= 0.1 * r) & (np.abs(v) <= 0.35 * r)
        return body | wings | tail
    if shape == "triangular":
        return (u >= -0.8 * r) & (u <= r) & (np.abs(v) <= 0.55 * (r - u))
    raise ValueError(shape)


def render(attrs: tuple, size: int, rng: np.random.Generator) -> np.ndarray:
    """One size x size x 3 uint8 chip of an object with attributes (shape, colour, surface, size)."""
    shape, colour, surface, amount = attrs
    img = _terrain(rng, surface, size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if amount == "several":
        n, radius = int(rng.integers(3, 6)), size * rng.uniform(0.09, 0.13)
    else:
        n = 1
        radius = size * (rng.uniform(0.32, 0.42) if amount == "large" else rng.uniform(0.16, 0.22))
    margin = radius + 1
    for _ in range(int(rng.integers(0, 4))):  # clutter: small buildings that belong to no class
        x0, y0 = rng.integers(0, size - 4, 2)
        w, h = rng.integers(2, max(3, size // 10), 2)
        img[y0:y0 + h, x0:x0 + w] = rng.uniform(90, 200) * np.array([1.0, 0.9, 0.8]) + rng.normal(0, 10, 3)
    base = np.array(COLOURS[colour], dtype=np.float32)
    angle0 = rng.uniform(0, 2 * np.pi)
    for _ in range(n):
        cx, cy = rng.uniform(margin, size - margin, 2)
        a = angle0 + (rng.normal(0, 0.2) if n > 1 else 0.0)
        r = radius * rng.uniform(0.85, 1.15)
        u = (xx - cx) * np.cos(a) + (yy - cy) * np.sin(a)
        v = -(xx - cx) * np.sin(a) + (yy - cy) * np.cos(a)
        shadow = _shape_mask(shape, u - 0.08 * r, v - 0.08 * r, r)  # sun from the top left
        img[shadow] *= 0.55
        mask = _shape_mask(shape, u, v, r)
        tint = base * rng.uniform(0.85, 1.1) + rng.normal(0, 8, 3)
        shade = 0.9 + 0.2 * _smooth_noise(rng, size, 4)[mask][:, None]
        img[mask] = tint * shade
    img = img * rng.uniform(0.7, 1.25) * rng.uniform(0.85, 1.15, 3)  # sun and sensor: brightness, colour cast
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


PHRASES = {
    "several": ["several {c} {s} objects", "a group of {c} {s} objects", "multiple {c} {s} objects"],
    "small": ["a small {c} {s} object", "one small {s} {c} object"],
    "large": ["a large {c} {s} object", "one big {c} {s} structure"],
}
SURFACE_PHRASES = ["on {g}", "surrounded by {g}", "over {g}"]


def caption(name: str, attrs: tuple, rng: np.random.Generator) -> str:
    """One caption built from the attributes, e.g. 'an aerial image of several white round objects on sand,
    a storage tank'."""
    shape, colour, surface, amount = attrs
    obj = rng.choice(PHRASES[amount]).format(c=colour, s=shape)
    where = rng.choice(SURFACE_PHRASES).format(g=surface)
    return f"an aerial image of {obj} {where}, a {name}"


def attribute_prompt(attribute: str, group: str) -> str:
    """The prompt that scores one attribute, e.g. 'a photo of something round', 'a photo of something on
    sand', 'a photo of several objects'; the same words occur in training captions."""
    if group == "surface":
        return f"a photo of something on {attribute}"
    if group == "size" and attribute == "several":
        return "a photo of several objects"
    return f"a photo of something {attribute}"
