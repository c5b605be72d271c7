"""Seeded CLEVR-like visual questions: 2D shapes on textured backgrounds, with one-word answers.

Every sample is a pure function of (split, kind, index): numpy and PIL only, no files, no state.
Three kinds of sample exist: ``image`` (one image), ``video`` (8 to 16 frames) and ``multi`` (two
images). Splits are fixed seed ranges that never meet: ``train`` uses seeds
``0 .. TEST_SEED_OFFSET - 1`` and ``test`` (held out) uses ``TEST_SEED_OFFSET + index``; the kind is
mixed into the random stream too, so the kinds never share a scene either.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 230),
    "yellow": (245, 215, 20),
    "purple": (150, 40, 200),
    "orange": (250, 130, 10),
}
SHAPES = ("circle", "square", "triangle", "star")
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars"}
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six")
DIRECTIONS = ("left", "right", "up", "down")
MOTION_STEPS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
ORDINALS = ("first", "second")

# (height, width) of rendered images; non-square ones included on purpose.
IMAGE_SIZES = ((224, 224), (224, 336), (336, 224), (280, 280), (448, 448), (336, 448), (252, 392))
VIDEO_SIZES = ((224, 224), (224, 280), (280, 224))

KINDS = ("image", "video", "multi")
FAMILIES = {
    "image": ("colour", "shape", "count", "exist", "position"),
    "video": ("motion", "appear", "disappear"),
    "multi": ("more",),
}
SPLITS = ("train", "test", "calibration")
# Objects per image scene and their radius as a fraction of the image's short side.
MAX_OBJECTS = 4
OBJECT_RADIUS = (0.12, 0.18)
PLACEMENT_TRIES = 200
TEST_SEED_OFFSET = 1_000_000_000
KIND_STREAMS = {"image": 11, "video": 23, "multi": 37}
CONVERSATION_STREAM = 53


@dataclass(frozen=True)
class Shape:
    """One object: kind, colour name, centre (x, y) in pixels and radius in pixels."""

    kind: str
    colour: str
    x: float
    y: float
    radius: float

    @property
    def name(self) -> str:
        return f"{self.colour} {self.kind}"


@dataclass(frozen=True)
class Sample:
    """One question about one image, two images or one video, and its one-word answer.

    ``shapes`` holds the objects drawn in each image, or in each frame of a video.
    """

    kind: str
    family: str
    question: str
    answer: str
    images: tuple[np.ndarray, ...] = ()
    frames: tuple[np.ndarray, ...] = ()
    seed: int = 0
    shapes: tuple[tuple[Shape, ...], ...] = ()


@dataclass(frozen=True)
class Conversation:
    """Several questions about one image: its pixels, the (family, question, answer) turns and the objects drawn."""

    image: np.ndarray
    turns: list[tuple[str, str, str]]
    shapes: tuple[Shape, ...]


def seed_for(split: str, index: int) -> int:
    """The scene seed of sample ``index`` of ``split``; the train, test and calibration seed ranges are disjoint."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0 <= index < TEST_SEED_OFFSET:
        raise ValueError(f"index must be in [0, {TEST_SEED_OFFSET}), got {index}")
    return SPLITS.index(split) * TEST_SEED_OFFSET + index


def sample(split: str, kind: str, index: int) -> Sample:
    """Sample ``index`` of ``kind`` (image, video or multi) in ``split``; the same arguments give the same sample."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    seed = seed_for(split, index)
    rng = np.random.default_rng((KIND_STREAMS[kind], seed))
    family = FAMILIES[kind][int(rng.integers(len(FAMILIES[kind])))]
    question, answer, images, frames, shapes = QUESTION_BUILDERS[family](rng)
    return Sample(kind, family, question, answer, tuple(images), tuple(frames), seed, tuple(map(tuple, shapes)))


def referred_names(family: str, question: str, answer: str, pictures: Sequence[Sequence[Shape]]) -> set[str]:
    """Names ("red star") of the objects a question is about, among those drawn in ``pictures``.

    ``pictures`` holds the objects of each image or frame. An existence question answered "no" is
    about no object. Training uses this to show the model where to look.
    """
    drawn = {shape.name: shape for picture in pictures for shape in picture}
    words = question.rstrip("?").split()
    if family == "colour":
        return {name for name, shape in drawn.items() if shape.kind in words}
    if family == "shape":
        return {name for name, shape in drawn.items() if shape.colour in words}
    if family == "exist":
        return {name for name in drawn if answer == "yes" and name in question}
    if family in ("count", "more"):
        if family == "count" and question == "how many objects are there?":
            return set(drawn)
        return {name for name, shape in drawn.items() if shape.colour in words or PLURALS[shape.kind] in words}
    if family in ("position", "motion"):
        return {name for name in drawn if name in question}
    if family in ("appear", "disappear"):
        return {name for name in drawn if any(name not in {s.name for s in picture} for picture in pictures)}
    if family == "describe":
        return {min(drawn.values(), key=lambda shape: shape.x).name}
    raise ValueError(f"unknown question family {family!r}")


def vocabulary() -> list[str]:
    """Every word a question, an answer or the chat template's fixed text can contain, lower case."""
    words: set[str] = set()
    for template in TEMPLATE_WORDS:
        words.update(template.split())
    words.update(COLOURS, SHAPES, PLURALS.values(), NUMBERS, DIRECTIONS, ORDINALS, ("yes", "no"))
    return sorted(words)


TEMPLATE_WORDS = (
    "what colour is the",
    "what shape is the object",
    "how many objects are there",
    "is there a an",
    "is the left of above",
    "which way is the moving",
    "which shape appears disappears",
    "what colour is the object that appears disappears",
    "which image has more",
    "what objects are there",
    "you are a helpful assistant system user",
    "? . ,",
)


def background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A low-saturation textured background: stripes or blobs over a gradient, plus pixel noise."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(110, 190, 3) + rng.uniform(-12, 12)
    gradient = (xx / width * rng.uniform(-30, 30) + yy / height * rng.uniform(-30, 30))[..., None]
    if rng.random() < 0.5:
        angle = rng.uniform(0, math.pi)
        period = rng.uniform(8, 40)
        texture = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period)
    else:
        texture = np.sin(xx / rng.uniform(10, 40)) * np.cos(yy / rng.uniform(10, 40))
    amplitude = rng.uniform(4, 12)
    noise = rng.normal(0, rng.uniform(2, 6), (height, width, 3))
    pixels = base + gradient + amplitude * texture[..., None] + noise
    return np.clip(pixels, 0, 255).astype(np.uint8)


def render(back: np.ndarray, shapes: list[Shape]) -> np.ndarray:
    """The background with the shapes drawn on it, as a new HxWx3 uint8 array."""
    image = Image.fromarray(back)
    draw = ImageDraw.Draw(image)
    for shape in shapes:
        _draw(draw, shape)
    return np.asarray(image)


def _draw(draw: ImageDraw.ImageDraw, shape: Shape) -> None:
    x, y, r = shape.x, shape.y, shape.radius
    fill = COLOURS[shape.colour]
    outline = tuple(int(c * 0.5) for c in fill)
    if shape.kind == "circle":
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill, outline=outline, width=2)
    elif shape.kind == "square":
        side = r * 0.85
        draw.rectangle((x - side, y - side, x + side, y + side), fill=fill, outline=outline, width=2)
    elif shape.kind == "triangle":
        points = [(x + r * math.cos(a), y + r * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
        draw.polygon(points, fill=fill, outline=outline)
    else:
        points = []
        for i in range(10):
            radius = r if i % 2 == 0 else r * 0.45
            angle = -math.pi / 2 + i * math.pi / 5
            points.append((x + radius * math.cos(angle), y + radius * math.sin(angle)))
        draw.polygon(points, fill=fill, outline=outline)


def random_shapes(
    rng: np.random.Generator,
    height: int,
    width: int,
    count: int,
    radius_range: tuple[float, float] = (0.08, 0.13),
    avoid: tuple[Shape, ...] = (),
) -> list[Shape]:
    """``count`` shapes with distinct (colour, kind) pairs, fully inside the image and not touching.

    Placement starts over after ``PLACEMENT_TRIES`` misses in a row: large shapes placed early can
    leave no room for the rest.
    """
    side = min(height, width)
    shapes = list(avoid)
    used = {(s.colour, s.kind) for s in shapes}
    colours = list(COLOURS)
    misses = 0
    while len(shapes) < len(avoid) + count:
        if misses == PLACEMENT_TRIES:
            shapes, misses = list(avoid), 0
            used = {(s.colour, s.kind) for s in shapes}
        colour, kind = colours[int(rng.integers(len(colours)))], SHAPES[int(rng.integers(len(SHAPES)))]
        if (colour, kind) in used:
            continue
        radius = rng.uniform(*radius_range) * side
        x, y = rng.uniform(radius + 2, width - radius - 2), rng.uniform(radius + 2, height - radius - 2)
        candidate = Shape(kind, colour, float(x), float(y), float(radius))
        if all(_apart(candidate, other) for other in shapes):
            shapes.append(candidate)
            used.add((colour, kind))
        else:
            misses += 1
    return shapes[len(avoid) :]


def _apart(a: Shape, b: Shape, gap: float = 6.0) -> bool:
    return math.hypot(a.x - b.x, a.y - b.y) > a.radius + b.radius + gap


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def _scene(rng: np.random.Generator, high: int | None = None, radius_range: tuple[float, float] | None = None):
    """A random image size and 1 to ``high`` (default ``MAX_OBJECTS``) shapes for it."""
    height, width = _pick(rng, IMAGE_SIZES)
    count = int(rng.integers(1, (high or MAX_OBJECTS) + 1))
    shapes = random_shapes(rng, height, width, count, radius_range or OBJECT_RADIUS)
    return height, width, shapes


def _image(rng: np.random.Generator, height: int, width: int, shapes: list[Shape]) -> list[np.ndarray]:
    return [render(background(rng, height, width), shapes)]


def ask_colour(rng: np.random.Generator, shapes: list[Shape]) -> tuple[str, str] | None:
    """What colour is the <shape>? Only about a shape kind that occurs once."""
    return _ask_unique(rng, shapes, "kind", lambda s: (f"what colour is the {s.kind}?", s.colour))


def ask_shape(rng: np.random.Generator, shapes: list[Shape]) -> tuple[str, str] | None:
    """What shape is the <colour> object? Only about a colour that occurs once."""
    return _ask_unique(rng, shapes, "colour", lambda s: (f"what shape is the {s.colour} object?", s.kind))


def _ask_unique(rng: np.random.Generator, shapes: list[Shape], attribute: str, question):
    """A question about a shape whose ``attribute`` no other shape in the scene shares, if there is one."""
    values = [getattr(s, attribute) for s in shapes]
    unique = [s for s in shapes if values.count(getattr(s, attribute)) == 1]
    return question(_pick(rng, unique)) if unique else None


def ask_count(rng: np.random.Generator, shapes: list[Shape]) -> tuple[str, str]:
    """How many objects / <colour> objects / <plural shape> are there?"""
    mode = int(rng.integers(3))
    if mode == 0:
        question, count = "how many objects are there?", len(shapes)
    elif mode == 1:
        colour = _pick(rng, [s.colour for s in shapes] + list(COLOURS))
        question, count = f"how many {colour} objects are there?", sum(s.colour == colour for s in shapes)
    else:
        kind = _pick(rng, [s.kind for s in shapes] + list(SHAPES))
        question, count = f"how many {PLURALS[kind]} are there?", sum(s.kind == kind for s in shapes)
    return question, NUMBERS[count]


def ask_exist(rng: np.random.Generator, shapes: list[Shape]) -> tuple[str, str]:
    """Is there a <colour> <shape>? Yes and no equally often."""
    if rng.random() < 0.5:
        target = _pick(rng, shapes)
        return f"is there {_article(target.colour)} {target.colour} {target.kind}?", "yes"
    present = {(s.colour, s.kind) for s in shapes}
    # Absent pairs that share a colour or a kind with a present object make "no" non-trivial.
    near = [(c, k) for c in COLOURS for k in SHAPES if (c, k) not in present and any(c == s.colour or k == s.kind for s in shapes)]
    colour, kind = _pick(rng, near)
    return f"is there {_article(colour)} {colour} {kind}?", "no"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def ask_position(rng: np.random.Generator, shapes: list[Shape]) -> tuple[str, str] | None:
    """Is the <a> left of / above the <b>? Only where the two are clearly apart on that axis."""
    if len(shapes) < 2:
        return None
    a, b = (shapes[int(i)] for i in rng.permutation(len(shapes))[:2])
    horizontal = rng.random() < 0.5
    delta = (b.x - a.x) if horizontal else (b.y - a.y)
    if abs(delta) <= max(a.radius, b.radius):
        return None
    relation = "left of" if horizontal else "above"
    return f"is the {a.name} {relation} the {b.name}?", "yes" if delta > 0 else "no"


def describe(shapes: list[Shape]) -> str:
    """Every object, left to right: the answer to ``DESCRIBE_QUESTION``."""
    return ", ".join(shape.name for shape in sorted(shapes, key=lambda s: s.x))


DESCRIBE_QUESTION = "what objects are there?"
ASK_IMAGE = {"colour": ask_colour, "shape": ask_shape, "count": ask_count, "exist": ask_exist, "position": ask_position}


def _image_question(family: str):
    """A builder that draws scenes until ``family``'s question applies to one, then asks it."""

    def build(rng: np.random.Generator):
        while True:
            height, width, shapes = _scene(rng)
            asked = ASK_IMAGE[family](rng, shapes)
            if asked is not None:
                return asked[0], asked[1], _image(rng, height, width, shapes), [], [shapes]

    return build


def conversation(index: int, turns: int = 4, split: str = "train", difficulty: float = 1.0) -> Conversation:
    """Conversation ``index``: distinct questions about one image.

    Half of them open with a description of the whole scene; the rest of the turns are distinct
    image questions of random families. Conversations have a random stream of their own, so they
    never share a scene with the single-question samples. ``difficulty`` below 1 (a training
    curriculum) draws fewer, larger objects: at 0 one object about four times the usual area.
    """
    if not 0.0 <= difficulty <= 1.0:
        raise ValueError(f"difficulty must be in [0, 1], got {difficulty}")
    rng = np.random.default_rng((CONVERSATION_STREAM, seed_for(split, index)))
    # The sizes and counts are chosen so that the objects always fit apart in the smallest image.
    grow = 0.1 * (1.0 - difficulty)
    low, high = OBJECT_RADIUS
    height, width, shapes = _scene(rng, 1 + int((MAX_OBJECTS - 1) * difficulty), (low + grow, high + grow))
    asked: list[tuple[str, str, str]] = []
    if rng.random() < 0.5:
        asked.append(("describe", DESCRIBE_QUESTION, describe(shapes)))
    for _ in range(100 * turns):
        if len(asked) >= turns:
            break
        family = _pick(rng, FAMILIES["image"])
        question = ASK_IMAGE[family](rng, shapes)
        # A repeated question could be answered by copying the earlier answer instead of looking.
        if question is not None and all(question[0] != earlier for _, earlier, _ in asked):
            asked.append((family, *question))
    return Conversation(_image(rng, height, width, shapes)[0], asked, tuple(shapes))


def _video_frame_count(rng: np.random.Generator) -> int:
    return int(_pick(rng, (8, 10, 12, 14, 16)))


def motion_question(rng: np.random.Generator):
    """Which way is the <colour> <shape> moving? It crosses a third of the frame; others stay still."""
    while True:
        height, width = _pick(rng, VIDEO_SIZES)
        frame_count = _video_frame_count(rng)
        direction = _pick(rng, DIRECTIONS)
        dx, dy = MOTION_STEPS[direction]
        span = rng.uniform(0.3, 0.45) * (width if dx else height)
        kind, colour = _pick(rng, SHAPES), _pick(rng, list(COLOURS))
        radius = rng.uniform(*OBJECT_RADIUS) * min(height, width)
        start_x = rng.uniform(radius + 2 + max(-dx, 0) * span, width - radius - 2 - max(dx, 0) * span)
        start_y = rng.uniform(radius + 2 + max(-dy, 0) * span, height - radius - 2 - max(dy, 0) * span)
        path = [
            Shape(kind, colour, float(start_x + dx * span * t / (frame_count - 1)),
                  float(start_y + dy * span * t / (frame_count - 1)), float(radius))
            for t in range(frame_count)
        ]
        others = _still_shapes(rng, height, width, int(rng.integers(1, 3)), path)
        if others is None:
            continue
        back = background(rng, height, width)
        pictures = [others + [p] for p in path]
        frames = [render(back, shapes) for shapes in pictures]
        return f"which way is the {path[0].name} moving?", direction, [], frames, pictures


def _still_shapes(rng: np.random.Generator, height: int, width: int, count: int, path: list[Shape]) -> list[Shape] | None:
    """``count`` still shapes clear of every position of ``path``, or None when they do not fit."""
    for _ in range(50):
        others = random_shapes(rng, height, width, count, OBJECT_RADIUS, avoid=(path[0],))
        if all(_apart(o, p) for o in others for p in path):
            return others
    return None


def change_question(rng: np.random.Generator, appears: bool):
    """Which shape (or what colour is the object that) appears or disappears halfway through the clip."""
    height, width = _pick(rng, VIDEO_SIZES)
    frame_count = _video_frame_count(rng)
    shapes = random_shapes(rng, height, width, int(rng.integers(2, MAX_OBJECTS + 1)), OBJECT_RADIUS)
    changing, still = shapes[0], shapes[1:]
    # The switch happens at an even frame so that no temporal patch pair mixes before and after.
    switch = 2 * int(rng.integers(2, frame_count // 2 - 1))
    back = background(rng, height, width)
    before, after = still, still + [changing]
    if not appears:
        before, after = after, before
    pictures = [before if t < switch else after for t in range(frame_count)]
    before_frame, after_frame = render(back, before), render(back, after)
    frames = [before_frame if t < switch else after_frame for t in range(frame_count)]
    verb = "appears" if appears else "disappears"
    if rng.random() < 0.5:
        return f"which shape {verb}?", changing.kind, [], frames, pictures
    return f"what colour is the object that {verb}?", changing.colour, [], frames, pictures


def more_question(rng: np.random.Generator):
    """Which image has more <colour> objects / <plural shape>? The two counts always differ."""
    while True:
        scenes = [_scene(rng) for _ in range(2)]
        if rng.random() < 0.5:
            colour = _pick(rng, list(COLOURS))
            counts = [sum(s.colour == colour for s in shapes) for _, _, shapes in scenes]
            question = f"which image has more {colour} objects?"
        else:
            kind = _pick(rng, SHAPES)
            counts = [sum(s.kind == kind for s in shapes) for _, _, shapes in scenes]
            question = f"which image has more {PLURALS[kind]}?"
        if counts[0] != counts[1]:
            images = [_image(rng, h, w, shapes)[0] for h, w, shapes in scenes]
            return question, ORDINALS[int(counts[1] > counts[0])], images, [], [shapes for _, _, shapes in scenes]


QUESTION_BUILDERS = {
    **{family: _image_question(family) for family in ASK_IMAGE},
    "motion": motion_question,
    "appear": lambda rng: change_question(rng, appears=True),
    "disappear": lambda rng: change_question(rng, appears=False),
    "more": more_question,
}
