"""GPT-2, as small as it can be written: learned positions, pre-LayerNorm blocks, GELU MLP, tied LM head.

The same module runs unchanged on a laptop, under FSDP2 on many GPUs and on Cerebras (which traces it).
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from gigagpt.errors import GigaGPTError


@dataclass
class GPTConfig:
    width: int = 768  # hidden size (d_model)
    depth: int = 12  # number of transformer blocks
    heads: int = 12  # attention heads; must divide width
    vocab_size: int = 50257
    max_position_embeddings: int = 2048
    dropout: float = 0.0
    bias: bool = True
    init_std: float = 0.02
    attention: str = "sdpa"  # "sdpa" (fused kernel) or "explicit" (plain ops, for compilers that need them)
    pad_vocab_multiple: int = 1  # embedding rows rounded up to a multiple of this (64: faster GPU matmuls)

    @property
    def padded_vocab_size(self):
        """Rows of the token embedding and LM head (nanoGPT pads GPT-2's 50257 to 50304). The extra rows only
        make the LM-head matmul better shaped: their logits are cut off, so they are never predicted."""
        return -(-self.vocab_size // self.pad_vocab_multiple) * self.pad_vocab_multiple

    def __post_init__(self):
        for name in ("width", "depth", "heads", "vocab_size", "max_position_embeddings", "pad_vocab_multiple"):
            if int(getattr(self, name)) < 1:
                raise GigaGPTError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.width % self.heads:
            raise GigaGPTError(
                f"heads ({self.heads}) must divide width ({self.width}): "
                f"try heads={_nearest_divisor(self.width, self.heads)}"
            )
        if self.attention not in ("sdpa", "explicit"):
            raise GigaGPTError(f"attention must be 'sdpa' or 'explicit', got {self.attention!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise GigaGPTError(f"dropout must be in [0, 1), got {self.dropout}")


def _nearest_divisor(n, k):
    return min((d for d in range(1, n + 1) if n % d == 0), key=lambda d: abs(d - k))


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.heads = config.heads
        self.attention = config.attention
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.width, 3 * config.width, bias=config.bias)
        self.proj = nn.Linear(config.width, config.width, bias=config.bias)
        self.proj_dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        B, T, C = x.shape
        # (B, T, 3C) -> three (B, heads, T, head_dim) tensors
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        if self.attention == "sdpa":
            dropout = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        else:
            y = explicit_attention(q, k, v, self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.proj_dropout(self.proj(y))


def explicit_attention(q, k, v, dropout=0.0):
    """softmax(QK^T / sqrt(d) + causal mask) V in plain ops, as gigaGPT writes it."""
    T = q.size(-2)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    mask = torch.triu(torch.full((T, T), float("-inf"), device=q.device), diagonal=1)
    weights = torch.softmax(scores + mask.to(scores.dtype), dim=-1)
    return F.dropout(weights, dropout) @ v


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.fc = nn.Linear(config.width, 4 * config.width, bias=config.bias)
        self.proj = nn.Linear(4 * config.width, config.width, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.width, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.width, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.padded_vocab_size, config.width)
        self.wpe = nn.Embedding(config.max_position_embeddings, config.width)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.ln_f = nn.LayerNorm(config.width, bias=config.bias)
        self.lm_head = nn.Linear(config.width, config.padded_vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied: one matrix embeds tokens and scores them
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        """gigaGPT's init: N(0, init_std), residual projections scaled by 1/sqrt(2*depth), biases 0."""
        if self.wte.weight.is_meta:
            return  # shapes only: a backend initialises after materialising the weights
        std = self.config.init_std
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)) and module is not self.lm_head:  # lm_head is wte
                nn.init.normal_(module.weight, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                module.reset_parameters()  # weight 1, bias 0
        for block in self.blocks:  # each block adds two residual branches to the stream
            for proj in (block.attn.proj, block.mlp.proj):
                nn.init.normal_(proj.weight, std=std / math.sqrt(2 * self.config.depth))

    def forward(self, input_ids, labels=None):
        T = input_ids.size(1)
        if T > self.config.max_position_embeddings:
            raise GigaGPTError(
                f"sequence of {T} tokens exceeds max_position_embeddings={self.config.max_position_embeddings}"
            )
        positions = torch.arange(T, device=input_ids.device)
        x = self.drop(self.wte(input_ids) + self.wpe(positions))
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        if self.config.padded_vocab_size > self.config.vocab_size:
            logits = logits[..., : self.config.vocab_size]  # padding rows: never predicted, never in the loss
        if labels is None:
            return logits
        return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())
