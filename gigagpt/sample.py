"""Text from a trained checkpoint: load it, then sample token by token (temperature, top-k)."""
import torch

from gigagpt.backends.plain import load_checkpoint_file, resolve_device
from gigagpt.model import GPT, GPTConfig
from gigagpt.tokenizer import encoding_from_meta


def load_model(checkpoint_path, device="cpu"):
    """A checkpoint file -> (GPT in eval mode on `device`, its tokenizer)."""
    state = load_checkpoint_file(checkpoint_path)
    model = GPT(GPTConfig(**state["config"]["model"]))
    model.load_state_dict(state["model"])
    return model.to(resolve_device(device)).eval(), encoding_from_meta(state["tokenizer"])


@torch.no_grad()
def generate(model, input_ids, max_new_tokens, temperature=1.0, top_k=None, generator=None, vocab_size=None):
    """Extend (B, T) input_ids by max_new_tokens sampled tokens.

    vocab_size: sample only ids below it, when the model has more rows than the tokenizer has tokens.
    """
    for _ in range(max_new_tokens):
        context = input_ids[:, -model.config.max_position_embeddings:]  # the model sees at most this many
        logits = model(context)[:, -1, :vocab_size].float()
        if temperature == 0:  # greedy
            next_id = logits.argmax(-1, keepdim=True)
        else:
            logits = logits / temperature
            if top_k:
                kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            next_id = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)
        input_ids = torch.cat([input_ids, next_id], dim=1)
    return input_ids


def sample(model, encoding, prompt="\n", max_new_tokens=200, temperature=0.8, top_k=200, seed=None):
    """Prompt text -> prompt + generated text."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device)
    generator.manual_seed(seed if seed is not None else torch.seed())
    if prompt:
        ids = encoding.encode(prompt)
    else:  # start from "end of text" (GPT-2) or a newline (characters have no such token)
        ids = [encoding.eot_token] if encoding.eot_token is not None else encoding.encode("\n")
    input_ids = torch.tensor([ids], dtype=torch.long, device=device)
    out = generate(model, input_ids, max_new_tokens, temperature, top_k, generator, encoding.n_vocab)
    return encoding.decode(out[0].tolist())
