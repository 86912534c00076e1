"""Class embeddings from CLIP's text tower: templates averaged per class, optional learnable context (CoOp).

Follows open_clip's ``build_zero_shot_classifier`` (per class: encode every template, normalise, mean, normalise)
and CoOp (Zhou et al. 2022) for the learnable context vectors, which here go right after the start token and in
front of the template's own words, so the templates still say what the text is about.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from omniclip.clip.model import CLIP

TEXT_BATCH = 512  # texts per text-tower call when building a classifier without gradients


class TextPrompt(nn.Module):
    """``n_ctx`` learnable context vectors ``context`` (n_ctx, W), inserted after the start token of every text."""

    def __init__(self, n_ctx: int, width: int) -> None:
        super().__init__()
        if n_ctx < 1:
            raise ValueError(f"text_context must be >= 1 to build a TextPrompt, got {n_ctx}")
        self.context = nn.Parameter(torch.randn(n_ctx, width) * 0.02)

    def forward(self, clip: CLIP, tokens: torch.Tensor) -> torch.Tensor:
        """Text features ``(K, E)`` of ``(K, L)`` token ids with the context inserted (the text's tail shifts right)."""
        n = self.context.shape[0]
        K, L = tokens.shape
        eot = tokens.argmax(dim=-1)  # the end token has the highest id
        if int(eot.max()) + n >= L:
            raise ValueError(
                f"a text has {int(eot.max()) + 1} tokens, which with {n} learnable context tokens exceeds the "
                f"context length {L}; shorten the template or class name, or lower model.text_context"
            )
        x = clip.token_embedding(tokens)  # (K, L, W)
        ctx = self.context.to(x.dtype).expand(K, -1, -1)  # (K, n, W)
        x = torch.cat([x[:, :1], ctx, x[:, 1 : L - n]], dim=1)  # (K, L, W): start, context, text, padding
        x = x + clip.positional_embedding[:L].to(x.dtype)
        return clip.text_features(x, eot + n)


def class_embeddings(
    clip: CLIP, names: list[str], templates: tuple[str, ...] | list[str], prompt: TextPrompt | None = None
) -> torch.Tensor:
    """``(C, E)`` L2-normalised class embeddings: per class, templates encoded, normalised, averaged, normalised.

    Without ``prompt`` and without gradients the texts are encoded in chunks of ``TEXT_BATCH``.
    """
    from omniclip.clip import tokenize  # the tokenizer loads its vocabulary lazily

    if isinstance(names, str) or not names:
        raise ValueError("class names must be a non-empty list of strings, e.g. ['archery', 'juggling']")
    for i, n in enumerate(names):
        if not isinstance(n, str) or not n.strip():
            raise ValueError(f"class name {i} is {n!r}; every class needs a non-empty name")
    texts = [t.format(n.strip()) for n in names for t in templates]  # class-major
    pos = clip.positional_embedding
    tokens = tokenize(texts, context_length=pos.shape[0]).to(pos.device)  # (C*K, L)
    if prompt is not None:
        feats = prompt(clip, tokens)
    elif torch.is_grad_enabled():
        feats = clip.encode_text(tokens)
    else:
        feats = torch.cat([clip.encode_text(t) for t in tokens.split(TEXT_BATCH)])  # (C*K, E)
    feats = F.normalize(feats.view(len(names), len(templates), -1), dim=-1)  # (C, K, E)
    return F.normalize(feats.mean(dim=1), dim=-1)  # (C, E)
