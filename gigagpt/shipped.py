"""The files that ship with the course, by path from the repository root, and their sha256.

Standard library only: `gigagpt doctor` reads it (by file path) where numpy, torch or tiktoken are missing.
"""
GPT2_RANKS_PATH = "gigagpt/gpt2.tiktoken"  # GPT-2's BPE ranks, so the gpt2 tokenizer never downloads them
GPT2_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
SHAKESPEARE_PATH = "data/tinyshakespeare.txt"  # the course's corpus
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
# Notebook 03's default model, trained (scripts/make_pretrained.sh): for a laptop too slow to train it
PRETRAINED_PATH = "data/shakespeare_char_pretrained.pt"
PRETRAINED_SHA256 = "c3dfcce8ff952535df726df29dfb11ad8eea0107a3294240dfb06436ac59054a"
SHIPPED = {GPT2_RANKS_PATH: GPT2_SHA256, SHAKESPEARE_PATH: SHAKESPEARE_SHA256, PRETRAINED_PATH: PRETRAINED_SHA256}
