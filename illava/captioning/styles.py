"""Caption styles: named prompts for the usual captioning jobs, shared by the CLI and the nodes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CaptionStyle:
    """A named instruction; ``{kind}`` is replaced by "image" or "video", ``{prompt}`` by the user's text."""

    template: str
    uses_prompt: bool = False
    video_only: bool = False


CAPTION_STYLES: dict[str, CaptionStyle] = {
    "short caption": CaptionStyle("Describe this {kind} in one sentence."),
    "detailed caption": CaptionStyle(
        "Describe this {kind} in detail: the main subjects and their attributes, where they are, the setting, "
        "and any visible text."
    ),
    "tags": CaptionStyle(
        "List tags for this {kind}, comma-separated and lowercase: subjects, objects, colours, setting and style. "
        "Write only the tags."
    ),
    "training caption": CaptionStyle(
        "Write one paragraph describing this {kind} as a caption for training an image generator: subject, "
        "composition, setting, lighting and style, in plain words, without a preamble."
    ),
    "question": CaptionStyle("{prompt}", uses_prompt=True),
    "video summary": CaptionStyle("Summarize what happens in this video, in order.", video_only=True),
    "custom": CaptionStyle("{prompt}", uses_prompt=True),
}
DEFAULT_STYLE = "detailed caption"


def caption_prompt(style: str, prompt: str = "", kind: str = "image") -> str:
    """The prompt a style asks for ``kind`` ("image" or "video").

    ``question`` asks ``prompt`` as written; ``custom`` is an instruction of the user's own where ``{kind}``
    stands for "image" or "video", so one template serves both. Raises ValueError naming what to change.
    """
    if style not in CAPTION_STYLES:
        raise ValueError(f"style must be one of {', '.join(CAPTION_STYLES)}; got {style!r}")
    if kind not in ("image", "video"):
        raise ValueError(f"kind must be 'image' or 'video', got {kind!r}")
    chosen = CAPTION_STYLES[style]
    if chosen.video_only and kind != "video":
        raise ValueError(f"style {style!r} needs a video input: choose another style for images")
    text = prompt.strip()
    if chosen.uses_prompt and not text:
        raise ValueError(f"style {style!r} takes its text from prompt, which is empty: type the {'question' if style == 'question' else 'instruction'}")
    if style == "custom":
        return text.replace("{kind}", kind)
    return chosen.template.format(kind=kind, prompt=text)
