"""Convert between gigagpt.GPT and Hugging Face's GPT2LMHeadModel (same architecture, other names).

    model = from_pretrained("gpt2")            # OpenAI's GPT-2 124M (transformers downloads it once, online)
    model = from_pretrained("path/to/folder")  # a folder written by save_pretrained: works offline
    hf = to_hf(model)                          # back, e.g. to save_pretrained or push to the Hub
"""
import torch

from gigagpt.errors import GigaGPTError
from gigagpt.model import GPT, GPTConfig

# HF GPT-2 stores its linear layers as Conv1D, i.e. transposed (in_features, out_features) weights.
_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Hugging Face's names of the two GELUs gigagpt has (GPT-2 itself uses the tanh approximation, "gelu_new").
_ACTIVATION_FROM_HF = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
_ACTIVATION_TO_HF = {"gelu": "gelu", "gelu_tanh": "gelu_new"}


def _name_map(depth):
    """gigagpt parameter name -> HF parameter name."""
    names = {"wte.weight": "transformer.wte.weight", "wpe.weight": "transformer.wpe.weight",
             "ln_f.weight": "transformer.ln_f.weight", "ln_f.bias": "transformer.ln_f.bias"}
    ours_to_hf = {"ln_1": "ln_1", "attn.qkv": "attn.c_attn", "attn.proj": "attn.c_proj",
                  "ln_2": "ln_2", "mlp.fc": "mlp.c_fc", "mlp.proj": "mlp.c_proj"}
    for i in range(depth):
        for ours, theirs in ours_to_hf.items():
            for kind in ("weight", "bias"):
                names[f"blocks.{i}.{ours}.{kind}"] = f"transformer.h.{i}.{theirs}.{kind}"
    return names


def to_hf(model: GPT):
    """gigagpt.GPT -> transformers.GPT2LMHeadModel with the same function (fp32, eval mode)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    c = model.config
    hf = GPT2LMHeadModel(GPT2Config(
        vocab_size=c.vocab_size, n_positions=c.max_position_embeddings, n_embd=c.width, n_layer=c.depth,
        n_head=c.heads, activation_function=_ACTIVATION_TO_HF[c.activation], resid_pdrop=c.dropout,
        embd_pdrop=c.dropout, attn_pdrop=c.dropout, layer_norm_epsilon=1e-5, initializer_range=c.init_std,
        tie_word_embeddings=True,
    ))
    ours = model.state_dict()
    theirs = {}
    for name, hf_name in _name_map(c.depth).items():
        tensor = ours.get(name)
        if tensor is None:  # bias=False: HF GPT-2 always has biases, zeros are the same function
            tensor = torch.zeros_like(hf.state_dict()[hf_name])
        theirs[hf_name] = tensor.t() if hf_name.endswith(_TRANSPOSED) else tensor
    theirs["transformer.wte.weight"] = theirs["transformer.wte.weight"][: c.vocab_size]  # drop any padding rows
    theirs["lm_head.weight"] = theirs["transformer.wte.weight"]
    hf.load_state_dict(theirs, strict=False)  # strict=False: HF may keep non-parameter buffers (causal mask)
    return hf.eval()


def from_hf(hf_model) -> GPT:
    """transformers.GPT2LMHeadModel -> gigagpt.GPT computing the same function, or a GigaGPTError naming what
    of the Hugging Face config gigagpt cannot reproduce."""
    hc = hf_model.config
    unsupported = {
        "activation_function": hc.activation_function not in _ACTIVATION_FROM_HF,
        "layer_norm_epsilon": hc.layer_norm_epsilon != 1e-5,
        "n_inner": hc.n_inner not in (None, 4 * hc.n_embd),
        "scale_attn_weights": not hc.scale_attn_weights,
        "scale_attn_by_inverse_layer_idx": hc.scale_attn_by_inverse_layer_idx,
    }
    bad = [f"{key}={getattr(hc, key)!r}" for key, is_bad in unsupported.items() if is_bad]
    if bad:
        raise GigaGPTError(f"cannot convert this GPT-2: gigagpt has no {', '.join(bad)} (it has GELU or tanh "
                           f"GELU, LayerNorm eps 1e-5, a 4x MLP and 1/sqrt(head size) attention scaling)")
    config = GPTConfig(width=hc.n_embd, depth=hc.n_layer, heads=hc.n_head, vocab_size=hc.vocab_size,
                       max_position_embeddings=hc.n_positions, dropout=0.0, bias=True,
                       init_std=hc.initializer_range, activation=_ACTIVATION_FROM_HF[hc.activation_function])
    with torch.device("meta"):
        model = GPT(config)
    theirs = hf_model.state_dict()
    ours = {name: theirs[hf_name].t() if hf_name.endswith(_TRANSPOSED) else theirs[hf_name]
            for name, hf_name in _name_map(config.depth).items()}
    ours["lm_head.weight"] = ours["wte.weight"]
    model.load_state_dict(ours, assign=True)
    model.lm_head.weight = model.wte.weight  # re-tie after assign
    return model.float().eval()


def from_pretrained(name_or_path) -> GPT:
    """A Hugging Face GPT-2 by name ("gpt2", "gpt2-medium", ...: downloaded by transformers and cached, so
    online the first time) or a local folder written by `save_pretrained` (offline) -> gigagpt.GPT."""
    from transformers import GPT2LMHeadModel

    try:
        hf_model = GPT2LMHeadModel.from_pretrained(name_or_path)
    except OSError as e:  # no such folder, and the Hub could not be reached or has no such model
        raise GigaGPTError(f"cannot load GPT-2 {str(name_or_path)!r}: no such folder with a saved model, and "
                           f"transformers could not download it ({str(e).strip().splitlines()[0]})") from e
    return from_hf(hf_model)
