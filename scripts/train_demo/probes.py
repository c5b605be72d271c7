"""Linear probe losses that make the LLM's states hold token places, the objects asked about, object names and their offsets."""

from __future__ import annotations

import torch

from illava.lab import scenes

from attention import KeptAttentionInputs, llm_layer, visual_positions
from labels import pointed_answers, place_contrast


class PlaceProbe(KeptAttentionInputs):
    """A loss that makes the first LLM layers write each visual token's place into its hidden state.

    Nothing in Qwen2.5-VL gives a visual token its absolute place: the ViT's rotary positions are
    relative, and the LLM's only bias attention. The layers before ``layer`` can work it out (how
    strongly a token attends to the fixed prompt before the image depends on their rotary offset,
    and causal attention on how many tokens precede it), but did not learn to from the answers
    alone. This linear probe reads (x, y, time) from the hidden states ``layer``'s attention sees,
    and its squared error trains them to hold it, so that a head that finds an object also reads
    where it is. The probe is discarded; the model is unchanged.
    """

    def __init__(self, model, layer: int) -> None:
        super().__init__(model, layer)
        self.head = torch.nn.Linear(model.config.text_config.hidden_size, 3)

    def loss(self, batch: dict, places: list[torch.Tensor]) -> torch.Tensor:
        """Mean squared error of the probe's places over every known coordinate of every visual token, last forward."""
        hidden = self.take_inputs()["hidden_states"]
        errors = []
        for row, (visual, place) in enumerate(zip(visual_positions(batch), places)):
            known = ~place.isnan()
            errors.append((self.head(hidden[row, visual]).float() - place)[known])
        return torch.cat(errors).square().mean()


class ClassProbe(KeptAttentionInputs):
    """A linear probe of ``layer``'s attention input that reads several class labels, one block of logits each."""

    def __init__(self, model, layer: int, sizes: list[int]) -> None:
        super().__init__(model, layer)
        self.sizes = sizes
        self.head = torch.nn.Linear(model.config.text_config.hidden_size, sum(sizes))

    def cross_entropy(self, states: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean over the label blocks of the probe's cross-entropy on ``states`` (N, hidden) against ``labels`` (N, blocks)."""
        logits = self.head(states).float().split(self.sizes, dim=-1)
        return sum(torch.nn.functional.cross_entropy(part, labels[:, i]) for i, part in enumerate(logits)) / len(logits)


class QueryProbe(ClassProbe):
    """A loss that makes the first LLM layers carry the objects a question names to the position that answers it.

    The pointed heads of ``layer`` find an object by matching their query, at the answer
    position, to what the visual tokens show. In runs that never learned to find objects, that
    position's state held the question's colour word only about as well as chance allowed (a
    linear probe read it 58% right, 98% in the shipped model). This linear probe reads the colour
    and shape of the first two objects the question names (``question_objects``) from the state
    ``layer``'s attention sees there, and its cross-entropy trains the layers before to deliver
    them. The probe is discarded.
    """

    def __init__(self, model, layer: int) -> None:
        super().__init__(model, layer, [len(scenes.COLOURS) + 1, len(scenes.SHAPES) + 1] * 2)

    def loss(self, batch: dict, named: list[list[tuple[int, int, int, int]]]) -> torch.Tensor:
        """Mean cross-entropy of the probe over the four named parts of every answer's question, last forward."""
        hidden = self.take_inputs()["hidden_states"]
        answers = list(pointed_answers(batch["labels"], named))
        states = torch.stack([hidden[row, position] for row, position, _ in answers])
        return self.cross_entropy(states, torch.tensor([parts for _, _, parts in answers]))


class NameProbe(ClassProbe):
    """A loss that keeps each object's shape and colour in the state of its centre token up to ``layer``.

    The vision warm-up teaches the tower to name the object at each centre token, but with the
    whole model training on answers that knowledge faded: in runs that never learned to find
    objects, a linear probe of ``layer``'s input read the shape at the centre token 77-88% right
    (97% in the shipped model), and a head cannot find a star whose tokens no longer say star.
    This linear probe keeps reading it there, and its cross-entropy trains the tower and the
    layers before ``layer`` to keep it. The probe is discarded.
    """

    def __init__(self, model, layer: int) -> None:
        super().__init__(model, layer, [len(scenes.SHAPES), len(scenes.COLOURS)])

    def loss(self, batch: dict, identities: list[torch.Tensor]) -> torch.Tensor:
        """Mean cross-entropy of the probe's shape and colour over every object centre token, last forward."""
        hidden = self.take_inputs()["hidden_states"]
        states = torch.cat([hidden[row, visual] for row, visual in enumerate(visual_positions(batch))])
        labels = torch.cat(identities)
        centred = labels[:, 0] >= 0
        return self.cross_entropy(states[centred], labels[centred])


class ContrastProbe:
    """A loss that makes the answer's state, after the pointed layer, hold where one pointed object lies from the other.

    The two pointed heads find the two objects a position or motion question compares, and the
    states they read hold each object's place (``PlaceProbe``), yet without this the state at the
    answer position after that layer held almost none of the difference. This linear probe reads
    the (x, y) difference of the places the two heads should read (``place_contrast``) from the
    output of ``layer`` at the position that predicts the answer, and its squared error trains the
    heads, their values and the output projection to deliver it. The probe is discarded.
    """

    def __init__(self, model, layer: int) -> None:
        self.head = torch.nn.Linear(model.config.text_config.hidden_size, 2)
        self.output: torch.Tensor | None = None
        llm_layer(model, layer).register_forward_hook(self._keep_output)

    def _keep_output(self, module, args, output) -> None:
        self.output = output[0] if isinstance(output, tuple) else output

    def loss(self, batch: dict, targets: list[list[tuple]], places: list[torch.Tensor]) -> torch.Tensor | None:
        """Mean squared error of the probe over every answer that compares two places, from the last forward."""
        # Dropped at once, as KeptAttentionInputs' inputs are.
        output, self.output = self.output, None
        errors = []
        for row, position, pointed in pointed_answers(batch["labels"], targets):
            contrast = place_contrast(places[row], pointed)
            if contrast is not None:
                errors.append(self.head(output[row, position]).float() - contrast)
        return torch.stack(errors).square().mean() if errors else None
