"""Text from a trained model: encode a prompt, then pick one token at a time.

    model, encoding = load_model("out/shakespeare_char/checkpoint_1000.pt")
    print(sample(model, encoding, "ROMEO:", temperature=0.8, top_k=200, seed=0))

Each new token is drawn from the model's softmax over the next position, shaped by three knobs (defaults of
`sample` and `gigagpt sample`: temperature 0.8, top_k 200, top_p off, as nanoGPT's sample.py):
- temperature divides the logits: below 1 sharpens the distribution (safer, more repetitive), above 1
  flattens it (more surprising, more errors); 0 means greedy, always the single most likely token;
- top_k keeps only the k most likely tokens (None: all);
- top_p keeps the smallest set of most likely tokens whose probabilities add up to at least p ("nucleus"
  sampling, Holtzman et al. 2020; None or 1: all).
A KV cache keeps every layer's keys and values, so each new token costs one position's work, not the
prefix's; greedy decoding gives the same tokens with and without it.
"""
import torch

from gigagpt.checkpoint import load_model  # noqa: F401  (gigagpt.sample.load_model, as before)
from gigagpt.model import KVCache


def next_token(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """One token id per row of `logits` (B, V) -> (B, 1)."""
    if temperature == 0:
        return logits.argmax(-1, keepdim=True)
    logits = logits / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        ordered, order = logits.sort(-1, descending=True)
        probs = ordered.softmax(-1)
        beyond = probs.cumsum(-1) - probs >= top_p  # the set already reached p before this token
        logits = logits.masked_fill(beyond.scatter(-1, order, beyond), float("-inf"))
    return torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)


@torch.no_grad()
def generate(model, input_ids, max_new_tokens, temperature=1.0, top_k=None, top_p=None, generator=None,
             vocab_size=None, use_cache=True):
    """Extend (B, T) input_ids by max_new_tokens tokens.

    vocab_size: pick only ids below it, when the model has more rows than the tokenizer has tokens.
    Beyond the model's context (max_position_embeddings) it sees the latest tokens only; positions are
    absolute, so each of those steps recomputes the whole window, with the cache or without.
    """
    context, cache = model.config.max_position_embeddings, None
    for _ in range(max_new_tokens):
        if cache is not None and cache.length < context:
            logits = model(input_ids[:, -1:], cache=cache)  # one new position; the rest is cached
        else:
            cache = KVCache() if use_cache else None
            logits = model(input_ids[:, -context:], cache=cache)
        next_id = next_token(logits[:, -1, :vocab_size].float(), temperature, top_k, top_p, generator)
        input_ids = torch.cat([input_ids, next_id], dim=1)
    return input_ids


def sample(model, encoding, prompt="\n", max_new_tokens=200, temperature=0.8, top_k=200, top_p=None, seed=None):
    """Prompt text -> prompt + generated text. The same seed gives the same text."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device)
    generator.manual_seed(seed if seed is not None else torch.seed())
    if prompt:
        ids = encoding.encode(prompt)
    else:  # start from "end of text" (GPT-2) or a newline (characters have no such token)
        ids = [encoding.eot_token] if encoding.eot_token is not None else encoding.encode("\n")
    input_ids = torch.tensor([ids], dtype=torch.long, device=device)
    out = generate(model, input_ids, max_new_tokens, temperature, top_k, top_p, generator, encoding.n_vocab)
    return encoding.decode(out[0].tolist())
