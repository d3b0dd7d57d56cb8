"""LLaVA-style multimodal wrapper: frozen encoder -> projector -> tokens before the prompt."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from cl_bench.models.encoder_base import Encoder


class Projector(nn.Sequential):
    """LLaVA's "mlp2x_gelu": Linear(d_enc, d) -> GELU -> Linear(d, d)."""

    def __init__(self, in_dim: int, hidden: int) -> None:
        super().__init__(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))


@dataclass
class Batch:
    """A padded batch of one modality, or of mixed-modality items. L = longest prompt + answer in tokens.

    A mixed-modality batch (items with several inputs, each of its own modality: an image and a spoken number in
    one prompt) has `modality` "image+audio" (the inputs' modalities joined by "+", in prompt order), `features`
    None, `slots` the union of its inputs' slots, and `parts`: per input (modality, features (B, ...), slots (B, L)).
    """

    modality: str
    ids: torch.Tensor  # (B, L) prompt then answer tokens, right-padded
    attention: torch.Tensor  # (B, L) 1 for real tokens
    answer: torch.Tensor  # (B, L) bool, True at answer tokens
    features: torch.Tensor | None = None  # (B, ...) encoder features, None for text
    slots: torch.Tensor | None = None  # (B, L) bool, True at the P placeholder tokens of each row's input
    parts: tuple = ()  # mixed-modality items only: (modality, features, slots) per input

    def to(self, device) -> "Batch":
        def move(t):
            return t.to(device) if t is not None else None

        return Batch(self.modality, move(self.ids), move(self.attention), move(self.answer), move(self.features),
                     move(self.slots), tuple((m, move(f), move(s)) for m, f, s in self.parts))

    def inputs(self) -> tuple:
        """(modality, features, slots) of each input of the batch's items: none for text, one, or a mixed item's."""
        if self.parts:
            return self.parts
        return () if self.features is None else ((self.modality, self.features, self.slots),)


class MultimodalLM(nn.Module):
    """A causal LM with one frozen encoder and one trainable projector per modality.

    Text batches go straight to the LM; in other modalities the projected tokens take
    the place of the prompt's input marker (LLaVA-style). Answers are read from the LM head.
    """

    def __init__(self, lm: nn.Module, tokenizer, encoders: dict[str, Encoder]) -> None:
        super().__init__()
        self.lm = lm
        self.tokenizer = tokenizer
        self.encoders = nn.ModuleDict(encoders)
        self.encoders.requires_grad_(False)
        d = lm.config.hidden_size
        self.projectors = nn.ModuleDict({m: Projector(e.out_dim, d) for m, e in encoders.items()})
        # Called with each batch before the LM runs on it (e.g. MoExtend's scope reads which positions hold
        # the modality's input); plain callables, not state.
        self.batch_hooks: list = []
        # --dtype bfloat16/float16: frozen weights are stored in it and every forward runs under torch.autocast;
        # trainable parameters are float32 master weights (cl_bench.api.training.master_weights). None: float32.
        self.compute_dtype: torch.dtype | None = None
        # "chat": prompts are the user's turn of the tokenizer's chat template, answers the assistant's
        self.prompt_format = "plain"

    def autocast(self):
        """The mixed-precision context of every forward (a no-op in float32)."""
        if self.compute_dtype is None:
            return contextlib.nullcontext()
        device = next(self.lm.parameters()).device.type
        return torch.autocast(device, dtype=self.compute_dtype)

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoders.eval()  # frozen: never in training mode
        return self

    def inputs(self, batch: Batch):
        """inputs_embeds (B, L, d) with the projected input in the slots, and labels (B, L), -100 off the answer."""
        for hook in self.batch_hooks:
            hook(batch)
        tok = self.lm.get_input_embeddings()(batch.ids)  # (B, L, d)
        labels = batch.ids.masked_fill(~batch.answer, -100)
        for modality, features, slots in batch.inputs():  # none for text; each input of a mixed item in turn
            with torch.no_grad():
                enc = self.encoders[modality](features)  # (B, P, d_enc)
            prefix = self.projectors[modality](enc.to(tok.dtype)).to(tok.dtype)  # (B, P, d); autocast may change it
            # As LLaVA does: placeholder embeddings are replaced, row by row, by the P projected tokens.
            tok = tok.masked_scatter(slots.unsqueeze(-1), prefix)
        return tok, labels

    def forward(self, batch: Batch, router_aux_loss: bool = False):
        """The LM's output with answer-only loss (plus the MoE load-balancing loss if asked)."""
        kwargs = {"output_router_logits": True} if router_aux_loss else {}
        with self.autocast():
            embeds, labels = self.inputs(batch)
            return self.lm(inputs_embeds=embeds, attention_mask=batch.attention, labels=labels, **kwargs)

    @torch.no_grad()
    def correct(self, batch: Batch) -> torch.Tensor:
        """Exact match per example (B,): every answer token is the argmax given the gold prefix.

        With teacher forcing this is the same as greedy decoding reproducing the answer.
        """
        with self.autocast():
            embeds, labels = self.inputs(batch)
            logits = self.lm(inputs_embeds=embeds, attention_mask=batch.attention).logits  # (B, L, V)
        pred = logits[:, :-1].argmax(-1)  # predicts position t+1
        gold = labels[:, 1:]
        ok = (pred == gold) | (gold == -100)
        return ok.all(-1)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
