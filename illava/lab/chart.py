"""A dependency-free PNG chart of benchmark rows: prefill speedup and memory against the work share."""

from __future__ import annotations

from PIL import Image, ImageDraw

WIDTH, HEIGHT, MARGIN = 520, 360, 56
INPUT_COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189)]


def speed_chart(rows: list[dict]) -> Image.Image:
    """Two panels: measured (filled) and predicted (hollow) prefill speedup, and peak-memory ratio,
    each against the work share (the budget's measure); one colour per input."""
    inputs = list(dict.fromkeys(row["input"] for row in rows))
    image = Image.new("RGB", (2 * WIDTH, HEIGHT + 40), "white")
    draw = ImageDraw.Draw(image)
    speed = [max(row["speedup_prefill"], row["predicted_speedup"]) for row in rows]
    _panel(draw, 0, rows, inputs, "prefill speedup (x)", max(speed) * 1.1, lambda r: r["speedup_prefill"], lambda r: r["predicted_speedup"])
    memory = max(row["memory_ratio"] for row in rows) * 1.1
    _panel(draw, WIDTH, rows, inputs, "peak memory / vanilla", max(memory, 1.1), lambda r: r["memory_ratio"], None)
    for i, name in enumerate(inputs):
        x = MARGIN + i * 170
        draw.ellipse((x, HEIGHT + 14, x + 10, HEIGHT + 24), fill=INPUT_COLOURS[i % len(INPUT_COLOURS)])
        draw.text((x + 16, HEIGHT + 12), name, fill="black")
    draw.text((WIDTH + MARGIN + 200, HEIGHT + 12), "filled: measured  hollow: predicted", fill="black")
    return image


def _panel(draw, left, rows, inputs, title, y_max, measured, ideal) -> None:
    x0, y0, x1, y1 = left + MARGIN, 20, left + WIDTH - 16, HEIGHT - 30
    draw.rectangle((x0, y0, x1, y1), outline="black")
    draw.text((x0, 4), title, fill="black")
    draw.text(((x0 + x1) // 2 - 90, y1 + 8), "work share (budget)", fill="black")
    for k in range(5):
        value = y_max * k / 4
        y = y1 - (y1 - y0) * k / 4
        draw.line((x0 - 4, y, x0, y), fill="black")
        draw.text((left + 8, y - 6), f"{value:.2f}", fill="black")
    for k in range(5):
        x = x0 + (x1 - x0) * k / 4
        draw.line((x, y1, x, y1 + 4), fill="black")
        draw.text((x - 8, y1 + 8 + 12), f"{k / 4:.2f}", fill="gray")

    def point(row, value):
        return x0 + (x1 - x0) * row["work"], y1 - (y1 - y0) * min(value, y_max) / y_max

    for row in rows:
        colour = INPUT_COLOURS[inputs.index(row["input"]) % len(INPUT_COLOURS)]
        x, y = point(row, measured(row))
        draw.ellipse((x - 5, y - 5, x + 5, y + 5), fill=colour)
        if ideal is not None:
            x, y = point(row, ideal(row))
            draw.ellipse((x - 5, y - 5, x + 5, y + 5), outline=colour, width=2)
