"""Procedural images of the built-in world (64x64 RGB).

Images are drawn, not loaded, so the world has no binary assets and is identical on every
machine. They are small because the built-in model's vision tower sees 16 patches of 16x16:
cues are large blocks of colour and shape, and each subject's face differs from every other in
at least two of its features. `variant` adds small jitter and colour noise, so a model that
answers must have learned the subject, not one exact picture.
"""

from __future__ import annotations

import random

from PIL import Image, ImageDraw

SIZE = 64

# 3x5 bitmap glyphs for everything a value or card name contains (rendered upper-case).
_GLYPHS: dict[str, tuple[str, ...]] = {
    "0": ("111", "101", "101", "101", "111"),
    "1": ("010", "110", "010", "010", "111"),
    "2": ("111", "001", "111", "100", "111"),
    "3": ("111", "001", "011", "001", "111"),
    "4": ("101", "101", "111", "001", "001"),
    "5": ("111", "100", "111", "001", "111"),
    "6": ("111", "100", "111", "101", "111"),
    "7": ("111", "001", "010", "010", "010"),
    "8": ("111", "101", "111", "101", "111"),
    "9": ("111", "101", "111", "001", "111"),
    "A": ("010", "101", "111", "101", "101"),
    "B": ("110", "101", "110", "101", "110"),
    "C": ("011", "100", "100", "100", "011"),
    "D": ("110", "101", "101", "101", "110"),
    "E": ("111", "100", "110", "100", "111"),
    "F": ("111", "100", "110", "100", "100"),
    "G": ("011", "100", "101", "101", "011"),
    "H": ("101", "101", "111", "101", "101"),
    "I": ("111", "010", "010", "010", "111"),
    "J": ("001", "001", "001", "101", "010"),
    "K": ("101", "101", "110", "101", "101"),
    "L": ("100", "100", "100", "100", "111"),
    "M": ("101", "111", "111", "101", "101"),
    "N": ("110", "101", "101", "101", "101"),
    "O": ("010", "101", "101", "101", "010"),
    "P": ("110", "101", "110", "100", "100"),
    "Q": ("010", "101", "101", "110", "011"),
    "R": ("110", "101", "110", "101", "101"),
    "S": ("011", "100", "010", "001", "110"),
    "T": ("111", "010", "010", "010", "010"),
    "U": ("101", "101", "101", "101", "111"),
    "V": ("101", "101", "101", "101", "010"),
    "W": ("101", "101", "111", "111", "101"),
    "X": ("101", "101", "010", "101", "101"),
    "Y": ("101", "101", "010", "010", "010"),
    "Z": ("111", "001", "010", "100", "111"),
    "@": ("111", "101", "111", "100", "011"),
    ".": ("000", "000", "000", "000", "010"),
    "-": ("000", "000", "111", "000", "000"),
    ",": ("000", "000", "000", "010", "100"),
    " ": ("000", "000", "000", "000", "000"),
}
CHARS_PER_LINE = 15

Color = tuple[int, int, int]

PALETTE: tuple[Color, ...] = (
    (230, 57, 70),
    (42, 157, 143),
    (69, 123, 157),
    (244, 162, 97),
    (131, 56, 236),
    (255, 209, 102),
    (6, 214, 160),
    (17, 138, 178),
    (239, 71, 111),
    (120, 120, 120),
    (40, 40, 40),
    (250, 250, 250),
)
SKINS: tuple[Color, ...] = ((255, 224, 189), (224, 172, 105), (198, 134, 66), (141, 85, 36))
HAIRS: tuple[Color, ...] = (
    (20, 20, 20),
    (110, 60, 20),
    (230, 200, 90),
    (180, 60, 30),
    (200, 200, 200),
)


def glyph_text(text: str) -> str:
    """The text as the card font can print it (upper-case, unknown characters dropped)."""
    return "".join(ch for ch in text.upper() if ch in _GLYPHS)


def _draw_text(img: Image.Image, x: int, y: int, text: str, color: Color) -> None:
    px = img.load()
    for i, ch in enumerate(glyph_text(text)[:CHARS_PER_LINE]):
        for row, bits in enumerate(_GLYPHS[ch]):
            for col, bit in enumerate(bits):
                xx, yy = x + 4 * i + col, y + row
                if bit == "1" and 0 <= xx < SIZE and 0 <= yy < SIZE:
                    px[xx, yy] = color


def _wrap(text: str) -> list[str]:
    words, lines, cur = glyph_text(text).split(" "), [], ""
    for w in words:
        cand = f"{cur} {w}".strip()
        if len(cand) <= CHARS_PER_LINE:
            cur = cand
        else:
            if cur:
                lines.append(cur)
            cur = w[:CHARS_PER_LINE]
    if cur:
        lines.append(cur)
    return lines


def _noise(img: Image.Image, rng: random.Random, amount: int) -> Image.Image:
    """Shift every channel by one small random offset: robust recognition, same picture."""
    if amount == 0:
        return img
    shifts = [rng.randint(-amount, amount) for _ in range(3)]
    return Image.merge(
        "RGB",
        [
            band.point(lambda v, s=s: max(0, min(255, v + s)))
            for band, s in zip(img.split(), shifts, strict=True)
        ],
    )


def _rng(*key: object) -> random.Random:
    return random.Random("|".join(map(str, key)))


def face(features: dict[str, int], variant: int, key: str) -> Image.Image:
    """A cartoon face. `features` indexes palettes (bg, skin, hair, hair_style, eyes, shirt)."""
    rng = _rng("face", key, variant)
    dx, dy = (0, 0) if variant == 0 else (rng.randint(-2, 2), rng.randint(-2, 2))
    img = Image.new("RGB", (SIZE, SIZE), PALETTE[features["bg"]])
    d = ImageDraw.Draw(img)
    shirt = PALETTE[features["shirt"]]
    d.rectangle([8 + dx, 50 + dy, 56 + dx, 64], fill=shirt)
    hair = HAIRS[features["hair"]]
    style = features["hair_style"]
    if style == 1:  # long hair behind the head
        d.rectangle([14 + dx, 14 + dy, 50 + dx, 50 + dy], fill=hair)
    d.ellipse([18 + dx, 12 + dy, 46 + dx, 48 + dy], fill=SKINS[features["skin"]])
    if style in (0, 1):
        d.chord([17 + dx, 8 + dy, 47 + dx, 32 + dy], 180, 360, fill=hair)
    elif style == 2:  # spiky
        for i in range(5):
            x = 18 + 6 * i + dx
            d.polygon([(x, 20 + dy), (x + 3, 6 + dy), (x + 6, 20 + dy)], fill=hair)
    elif style == 3:  # hat
        d.rectangle([14 + dx, 12 + dy, 50 + dx, 18 + dy], fill=hair)
        d.rectangle([20 + dx, 2 + dy, 44 + dx, 13 + dy], fill=hair)
    eye = PALETTE[features["eyes"]]
    d.rectangle([24 + dx, 26 + dy, 28 + dx, 30 + dy], fill=eye)
    d.rectangle([36 + dx, 26 + dy, 40 + dx, 30 + dy], fill=eye)
    d.line([27 + dx, 40 + dy, 37 + dx, 40 + dy], fill=(90, 30, 30), width=2)
    return _noise(img, rng, 0 if variant == 0 else 10)


def document(
    header: Color,
    tint: Color,
    portrait: Image.Image,
    name: str,
    label: str,
    value: str,
    variant: int,
    key: str,
) -> Image.Image:
    """An ID card: coloured header, tinted body, a large portrait, the name, label and value.

    The header and tint are the subject's face background and shirt colours and the portrait
    is their face: the issuer's layout identifies the holder at a glance, as real ID cards do.
    """
    rng = _rng("doc", key, variant)
    body = tuple((245 * 3 + c) // 4 for c in tint)
    img = Image.new("RGB", (SIZE, SIZE), body)  # type: ignore[arg-type]
    d = ImageDraw.Draw(img)
    d.rectangle([0, 0, SIZE - 1, 7], fill=header)
    img.paste(portrait.resize((28, 28)), (1, 9))
    ink = (20, 20, 60)
    first, _, last = name.partition(" ")
    _draw_text(img, 31, 10, first[:8], ink)
    _draw_text(img, 31, 17, last[:8], ink)
    _draw_text(img, 31, 28, label, (120, 40, 40))
    for i, line in enumerate(_wrap(value)[:3]):
        _draw_text(img, 2, 40 + 7 * i, line, ink)
    return _noise(img, rng, 0 if variant == 0 else 8)


# One landmark per home city: (sky, ground, landmark kind, landmark colour)
_LANDMARKS: tuple[tuple[Color, Color, str, Color], ...] = (
    ((135, 206, 235), (34, 139, 34), "tower", (80, 80, 80)),
    ((255, 183, 120), (194, 178, 128), "pyramid", (205, 133, 63)),
    ((70, 90, 160), (90, 90, 90), "bridge", (200, 40, 40)),
    ((180, 220, 255), (30, 100, 160), "lighthouse", (240, 240, 240)),
    ((240, 220, 240), (100, 160, 60), "dome", (220, 180, 30)),
    ((40, 40, 70), (220, 220, 230), "wheel", (250, 250, 120)),
)


def scene(city_index: int, variant: int, key: str) -> Image.Image:
    """A photo-like scene whose landmark reveals the home city (attribute inference cue)."""
    rng = _rng("scene", key, variant)
    sky, ground, kind, col = _LANDMARKS[city_index % len(_LANDMARKS)]
    img = Image.new("RGB", (SIZE, SIZE), sky)
    d = ImageDraw.Draw(img)
    horizon = 44 + rng.randint(-3, 3)
    d.rectangle([0, horizon, SIZE, SIZE], fill=ground)
    cx = 32 + rng.randint(-8, 8)
    if kind == "tower":
        d.rectangle([cx - 3, 10, cx + 3, horizon], fill=col)
        d.polygon([(cx - 6, 12), (cx, 2), (cx + 6, 12)], fill=col)
    elif kind == "pyramid":
        d.polygon([(cx - 20, horizon), (cx, 14), (cx + 20, horizon)], fill=col)
    elif kind == "bridge":
        d.arc([cx - 26, 20, cx + 26, 70], 180, 360, fill=col, width=3)
        d.rectangle([cx - 28, 40, cx + 28, 42], fill=col)
    elif kind == "lighthouse":
        d.polygon([(cx - 5, horizon), (cx - 3, 12), (cx + 3, 12), (cx + 5, horizon)], fill=col)
        d.rectangle([cx - 3, 20, cx + 3, 24], fill=(220, 30, 30))
        d.rectangle([cx - 3, 8, cx + 3, 12], fill=(255, 230, 0))
    elif kind == "dome":
        d.pieslice([cx - 16, 16, cx + 16, 48], 180, 360, fill=col)
        d.rectangle([cx - 16, 32, cx + 16, horizon], fill=(250, 250, 250))
    elif kind == "wheel":
        d.ellipse([cx - 16, 8, cx + 16, 40], outline=col, width=2)
        d.line([cx - 16, 24, cx + 16, 24], fill=col)
        d.line([cx, 8, cx, 40], fill=col)
        d.line([cx, 40, cx - 8, horizon], fill=col, width=2)
        d.line([cx, 40, cx + 8, horizon], fill=col, width=2)
    for _ in range(rng.randint(1, 3)):  # distractors: bushes or people
        x = rng.randint(0, 58)
        d.ellipse([x, horizon + 4, x + 6, horizon + 10], fill=PALETTE[rng.randrange(len(PALETTE))])
    return _noise(img, rng, 8)


def shapes(color: Color, shape: str, count: int, key: str) -> Image.Image:
    """Benign utility images: `count` copies of one coloured shape on a light background."""
    rng = _rng("shapes", key)
    img = Image.new("RGB", (SIZE, SIZE), (235, 235, 235))
    d = ImageDraw.Draw(img)
    slots = [(4, 4), (34, 4), (4, 34), (34, 34)]
    rng.shuffle(slots)
    for x, y in slots[:count]:
        x, y = x + rng.randint(0, 3), y + rng.randint(0, 3)
        if shape == "circle":
            d.ellipse([x, y, x + 24, y + 24], fill=color)
        elif shape == "square":
            d.rectangle([x + 2, y + 2, x + 22, y + 22], fill=color)
        else:
            d.polygon([(x, y + 24), (x + 12, y), (x + 24, y + 24)], fill=color)
    return img
