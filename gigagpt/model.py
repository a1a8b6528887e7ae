"""GPT-2, as small as it can be written: learned positions, pre-LayerNorm blocks, GELU MLP, tied LM head.

The same module runs unchanged on a laptop, under FSDP2 on many GPUs and on Cerebras (which traces it).
"""
import hashlib
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from gigagpt.errors import GigaGPTError
from gigagpt.lm_loss import lm_head_loss

ACTIVATIONS = {"gelu": "none", "gelu_tanh": "tanh"}  # exact GELU (gigaGPT) | tanh approximation (GPT-2)


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
    activation: str = "gelu"  # "gelu" (exact, as gigaGPT) or "gelu_tanh" (OpenAI's GPT-2, HF's "gelu_new")
    attention: str = "auto"  # "sdpa" (PyTorch's fused kernel), "explicit" (plain ops, as gigaGPT), "auto"
    loss: str = "auto"  # "plain", "chunked" (LM head + cross-entropy a slice of rows at a time), "auto"
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
        for key, choices in (("activation", ACTIVATIONS), ("attention", ("auto", "sdpa", "explicit")),
                             ("loss", ("auto", "plain", "chunked"))):
            if getattr(self, key) not in choices:
                raise GigaGPTError(f"{key} must be one of {', '.join(choices)}; got {getattr(self, key)!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise GigaGPTError(f"dropout must be in [0, 1), got {self.dropout}")


def _nearest_divisor(n, k):
    return min((d for d in range(1, n + 1) if n % d == 0), key=lambda d: abs(d - k))


class KVCache(dict):
    """Each attention layer's keys and values of the positions seen so far: with it, generating a token costs
    one position's work instead of the whole prefix's. Fill it with the prompt, then feed one token at a time."""

    length = 0  # positions cached

    def extend(self, layer, k, v):
        if layer in self:
            k, v = torch.cat([self[layer][0], k], dim=-2), torch.cat([self[layer][1], v], dim=-2)
        self[layer] = (k, v)
        return k, v


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.heads = config.heads
        self.attention = config.attention
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.width, 3 * config.width, bias=config.bias)
        self.proj = nn.Linear(config.width, config.width, bias=config.bias)
        self.proj_dropout = nn.Dropout(config.dropout)

    def forward(self, x, cache=None):
        B, T, C = x.shape
        # (B, T, 3C) -> three (B, heads, T, head_dim) tensors
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        if cache is not None:
            k, v = cache.extend(self, k, v)
        causal = q.size(-2) == k.size(-2)  # else one new token, which may see every cached position
        dropout = self.dropout if self.training else 0.0
        if attention_kernel(self.attention, q.device.type, q.dtype, T) == "explicit":
            y = explicit_attention(q, k, v, dropout, causal)
        else:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=causal)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.proj_dropout(self.proj(y))


def attention_kernel(choice, device_type, dtype, length):
    """What `attention: auto` runs: PyTorch's fused kernel, except in bf16 on a CPU up to 512 positions, where
    the plain ops are faster (a step 1.2-1.6x, measured on AMX and AVX512-BF16 CPUs); in fp32 and on GPUs
    the fused kernel wins, and it never stores the (T, T) scores."""
    if choice != "auto":
        return choice
    return "explicit" if device_type == "cpu" and dtype == torch.bfloat16 and length <= 512 else "sdpa"


def explicit_attention(q, k, v, dropout=0.0, causal=True):
    """softmax(QK^T / sqrt(d) + causal mask) V in plain ops, as gigaGPT writes it."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if causal:
        T = q.size(-2)
        scores = scores + torch.triu(torch.full((T, T), float("-inf"), device=q.device), 1).to(scores.dtype)
    return F.dropout(torch.softmax(scores, dim=-1), dropout) @ v


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.fc = nn.Linear(config.width, 4 * config.width, bias=config.bias)
        self.proj = nn.Linear(4 * config.width, config.width, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)
        self.approximate = ACTIVATIONS[config.activation]

    def forward(self, x):
        return self.dropout(self.proj(F.gelu(self.fc(x), approximate=self.approximate)))


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.width, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.width, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, cache=None):
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig, seed: int = 0):
        """Built under `torch.device("meta")` it holds shapes only, and a backend calls init_weights later."""
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.padded_vocab_size, config.width)
        self.wpe = nn.Embedding(config.max_position_embeddings, config.width)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.ln_f = nn.LayerNorm(config.width, bias=config.bias)
        self.lm_head = nn.Linear(config.width, config.padded_vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied: one matrix embeds tokens and scores them
        if not self.wte.weight.is_meta:
            self.init_weights(seed)

    def to_empty(self, *, device, recurse=True):
        """Allocate (uninitialised) storage for a model built on meta, keeping the LM head tied."""
        super().to_empty(device=device, recurse=recurse)
        self.lm_head.weight = self.wte.weight
        return self

    @torch.no_grad()
    def init_weights(self, seed):
        for name, param in self.named_parameters():
            self.init_parameter(name, param, seed)

    def init_parameter(self, name, tensor, seed):
        """gigaGPT's init: N(0, init_std), residual projections scaled by 1/sqrt(2*depth), biases 0, LayerNorm
        gains 1. Each tensor draws from its own generator, seeded by (seed, its name): the weights do not depend
        on construction order, and every process of a sharded run can draw any tensor alone (FSDP does). The
        generator is the tensor's device's: CPU and CUDA draw different (equally distributed) numbers."""
        module = self.get_submodule(name.rpartition(".")[0])
        with torch.no_grad():
            if isinstance(module, nn.LayerNorm):
                return tensor.fill_(1.0 if name.endswith("weight") else 0.0)
            if name.endswith("bias"):
                return tensor.zero_()
            std = self.config.init_std
            if name.endswith(("attn.proj.weight", "mlp.proj.weight")):  # each block adds two residual branches
                std /= math.sqrt(2 * self.config.depth)
            digest = hashlib.blake2b(f"{seed}/{name}".encode(), digest_size=8).digest()
            tensor_seed = int.from_bytes(digest, "little") >> 1
            if tensor.device.type in ("cpu", "cuda", "mps"):
                return tensor.normal_(0.0, std, generator=torch.Generator(tensor.device).manual_seed(tensor_seed))
            with torch.random.fork_rng(devices=[]):  # devices without generator objects (cstorch's lazy device)
                torch.manual_seed(tensor_seed)
                return tensor.normal_(0.0, std)

    def forward(self, input_ids, labels=None, cache=None):
        start, T = (cache.length if cache is not None else 0), input_ids.size(1)
        if start + T > self.config.max_position_embeddings:
            raise GigaGPTError(f"sequence of {start + T} tokens exceeds "
                               f"max_position_embeddings={self.config.max_position_embeddings}")
        positions = torch.arange(start, start + T, device=input_ids.device)
        x = self.drop(self.wte(input_ids) + self.wpe(positions))
        for block in self.blocks:
            x = block(x, cache)
        if cache is not None:
            cache.length += T
        x = self.ln_f(x)
        if labels is not None:
            return lm_head_loss(x, self.lm_head.weight, labels, self.config.vocab_size, self.config.loss)
        return self.lm_head(x)[..., : self.config.vocab_size]  # padding rows: never predicted
