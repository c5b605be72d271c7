"""Training labels: what each pointed head reads, the objects a question names, each visual token's place and identity."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from illava.lab import scenes


@dataclass(frozen=True)
class Pointer:
    """What one pointed head reads: the objects named, in every visual group or in the first or last showing them."""

    names: frozenset[str]
    moment: str = "all"


def pointed_names(
    family: str, question: str, answer: str, pictures: Sequence[Sequence[scenes.Shape]]
) -> tuple[Pointer, Pointer]:
    """What each of the two pointed heads should look at when answering a question.

    The first looks at what the question is about and the second is left free, except where the
    answer compares two places. In a position question ("is the red star left of the blue
    circle?") the first looks at the object named first and the second at the other; in a motion
    question the first looks at the moving object in the first temporal patch and the second in
    the last. With each visual token's place written into its hidden state (``PlaceProbe``), the
    answer is then a comparison of what the two heads read.
    """
    names = scenes.referred_names(family, question, answer, pictures)
    if family == "position":
        named_first, named_second = sorted(names, key=question.index)
        return Pointer(frozenset({named_first})), Pointer(frozenset({named_second}))
    if family == "motion":
        return Pointer(frozenset(names), "first"), Pointer(frozenset(names), "last")
    return Pointer(frozenset(names)), Pointer(frozenset())


def cell_centres(width: int, height: int, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Pixel centres (x, y), each (rows, cols), of the image cells that merged visual tokens cover, and the cell size."""
    cell_w, cell_h = width / cols, height / rows
    ys, xs = np.mgrid[0:rows, 0:cols]
    return (xs + 0.5) * cell_w, (ys + 0.5) * cell_h, cell_w, cell_h


def centre_cell(shape: scenes.Shape, cell_w: float, cell_h: float, rows: int, cols: int) -> tuple[int, int]:
    """(row, col) of the cell that holds ``shape``'s centre."""
    return min(int(shape.y / cell_h), rows - 1), min(int(shape.x / cell_w), cols - 1)


def answer_starts(labels: torch.Tensor) -> torch.Tensor:
    """Where each answer begins: True at the positions whose next label is an answer's first token."""
    return (labels[:, 1:] != -100) & (labels[:, :-1] == -100)


def pointed_answers(labels: torch.Tensor, targets: list[list]):
    """(row, position, pointed) for every answer: the position that predicts it and its entry in ``targets``.

    ``targets`` holds one entry per answer of each row: the tokens each head should read, or any other per-answer label.
    """
    first = answer_starts(labels)
    for row, answers in enumerate(targets):
        for position, pointed in zip(first[row].nonzero().flatten().tolist(), answers):
            yield row, position, pointed


def referred_tokens(groups, pointer: Pointer) -> np.ndarray | None:
    """Indices of the visual tokens whose cell centre lies inside a pointed object (and of each one's centre cell).

    ``pointer.moment`` "first" or "last" keeps only the first or last group (a video's temporal
    patch) in which a pointed object is drawn.
    """
    showing = [index for index, group in enumerate(groups) if any(shape.name in pointer.names for shape in group[4])]
    if pointer.moment != "all":
        showing = showing[:1] if pointer.moment == "first" else showing[-1:]
    found, offset = [], 0
    for index, (width, height, rows, cols, shapes) in enumerate(groups):
        centre_x, centre_y, cell_w, cell_h = cell_centres(width, height, rows, cols)
        inside = np.zeros((rows, cols), dtype=bool)
        for shape in shapes if index in showing else ():
            if shape.name in pointer.names:
                inside |= np.hypot(centre_x - shape.x, centre_y - shape.y) < shape.radius
                inside[centre_cell(shape, cell_w, cell_h, rows, cols)] = True
        found.append(offset + np.flatnonzero(inside))
        offset += rows * cols
    tokens = np.concatenate(found) if found else np.zeros(0, dtype=np.int64)
    return tokens if len(tokens) else None


def place_contrast(places: torch.Tensor, pointed: tuple[np.ndarray | None, ...]) -> torch.Tensor | None:
    """Where the first head's objects lie relative to the second's: (x, y) of one mean place minus the other's.

    None unless both heads are pointed (position and motion questions).
    """
    if any(tokens is None for tokens in pointed):
        return None
    first, second = (places[torch.from_numpy(tokens), :2].mean(0) for tokens in pointed)
    return first - second


def question_objects(question: str) -> tuple[int, int, int, int]:
    """(colour, shape) classes of the first two objects ``question`` names, in order.

    A noun phrase is a colour, a shape or both ("the red star", "the star", "red objects");
    ``len(scenes.COLOURS)`` or ``len(scenes.SHAPES)`` stands for a part (or an object) it does not name.
    """
    colours, shapes = list(scenes.COLOURS), list(scenes.SHAPES)
    singular = {plural: kind for kind, plural in scenes.PLURALS.items()}
    objects: list[list[int]] = []
    open_phrase: list[int] | None = None
    for word in re.findall(r"[a-z]+", question.lower()):
        if word in colours:
            open_phrase = [colours.index(word), len(shapes)]
            objects.append(open_phrase)
        elif word in shapes or word in singular:
            kind = shapes.index(singular.get(word, word))
            if open_phrase is None:
                objects.append([len(colours), kind])
            else:
                open_phrase[1] = kind
            open_phrase = None
        else:
            open_phrase = None
    objects += [[len(colours), len(shapes)]] * 2
    (first_colour, first_shape), (second_colour, second_shape) = objects[:2]
    return first_colour, first_shape, second_colour, second_shape


def token_identities(groups) -> torch.Tensor:
    """Per visual token, the (shape, colour) class of the object centred in its cell, -100 where none is."""
    colours, found = list(scenes.COLOURS), []
    for width, height, rows, cols, shapes in groups:
        _, _, cell_w, cell_h = cell_centres(width, height, rows, cols)
        labels = np.full((rows, cols, 2), -100)
        for shape in shapes:
            labels[centre_cell(shape, cell_w, cell_h, rows, cols)] = (scenes.SHAPES.index(shape.kind), colours.index(shape.colour))
        found.append(labels.reshape(-1, 2))
    return torch.from_numpy(np.concatenate(found))


def token_places(groups, times: Sequence[float | None]) -> torch.Tensor:
    """Each visual token's place, from -1 to 1: (x, y, time), time NaN in a still image.

    ``times`` holds each group's time as a fraction of the clip (None for an image).
    """
    places = []
    for (_, _, rows, cols, _), fraction in zip(groups, times):
        ys, xs = np.mgrid[0:rows, 0:cols]
        when = np.full((rows, cols), np.nan if fraction is None else 2 * fraction - 1)
        places.append(np.stack([2 * (xs + 0.5) / cols - 1, 2 * (ys + 0.5) / rows - 1, when], -1).reshape(-1, 3))
    return torch.from_numpy(np.concatenate(places)).float()
