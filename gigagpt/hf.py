"""Convert between gigagpt.GPT and Hugging Face's GPT2LMHeadModel (same architecture, other names)."""
import torch

from gigagpt.errors import GigaGPTError
from gigagpt.model import GPT, GPTConfig

# HF GPT-2 stores its linear layers as Conv1D, i.e. transposed (in_features, out_features) weights.
_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


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
        n_head=c.heads, activation_function="gelu", resid_pdrop=c.dropout, embd_pdrop=c.dropout,
        attn_pdrop=c.dropout, layer_norm_epsilon=1e-5, initializer_range=c.init_std, tie_word_embeddings=True,
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
    """transformers.GPT2LMHeadModel (e.g. from_pretrained('gpt2'), which needs network) -> gigagpt.GPT."""
    hc = hf_model.config
    if hc.activation_function not in ("gelu", "gelu_new", "gelu_pytorch_tanh"):
        raise GigaGPTError(f"cannot convert activation {hc.activation_function!r}: gigagpt uses GELU")
    config = GPTConfig(width=hc.n_embd, depth=hc.n_layer, heads=hc.n_head, vocab_size=hc.vocab_size,
                       max_position_embeddings=hc.n_positions, dropout=0.0, bias=True,
                       init_std=hc.initializer_range)
    with torch.device("meta"):
        model = GPT(config)
    theirs = hf_model.state_dict()
    ours = {name: theirs[hf_name].t() if hf_name.endswith(_TRANSPOSED) else theirs[hf_name]
            for name, hf_name in _name_map(config.depth).items()}
    ours["lm_head.weight"] = ours["wte.weight"]
    model.load_state_dict(ours, assign=True)
    model.lm_head.weight = model.wte.weight  # re-tie after assign
    return model.float().eval()
