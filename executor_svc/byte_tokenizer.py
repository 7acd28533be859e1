"""The built-in default model's tokenizer: one token per byte, plus <s> and </s>.

Built with the `tokenizers` library (byte-level BPE with no merges), so it is saved as a normal
``tokenizer.json`` and loads anywhere a Hugging Face tokenizer does. Token id = byte value.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers

BOS_TOKEN, EOS_TOKEN = "<s>", "</s>"
BOS_ID, EOS_ID = 256, 257
VOCAB_SIZE = 258


def byte_to_unicode() -> dict[int, str]:
    """The byte-level alphabet: printable bytes stand for themselves, the rest are shifted
    past 255 so every byte has a visible, whitespace-free character."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    mapping = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + shifted)
            shifted += 1
    return mapping


def build_byte_tokenizer() -> Tokenizer:
    vocab = {char: byte for byte, char in byte_to_unicode().items()}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([BOS_TOKEN, EOS_TOKEN])
    return tokenizer
