"""Write a tiny, loadable llama-architecture GGUF for fast in-process tests.

The model is random (seeded) and ~150 KB: it loads in milliseconds and decodes a token in
well under a millisecond, so tests about gates, queues, cancellation and errors need not pay
for the real gemma model. Its text is meaningless; it is built so that greedy decoding never
picks end-of-sequence or byte tokens (their output rows point away from a constant component
every hidden state carries), so a request always produces exactly ``max_tokens`` words.

    path = write_tiny_gguf(tmp_path / "tiny.gguf")          # chat_format="chatml" to use it

Needs the ``gguf`` package (routekit's dev extra); numpy comes with it.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["TINY_N_CTX_TRAIN", "TINY_WORDS", "write_tiny_gguf"]

TINY_N_CTX_TRAIN = 4096
TINY_WORDS = (
    "the a an and or of to in on for with is are was be it this that we you they he she "
    "hello world model route fall back chain answer token local cloud fast slow small "
    "big red blue green one two three yes no ok good bad new old"
).split()

_N_EMBD = 32
_N_HEAD = 2
_N_FF = 64
_N_LAYER = 2


def write_tiny_gguf(path: str | Path, *, seed: int = 0, n_layer: int = _N_LAYER) -> Path:
    """Write the tiny model to ``path`` (overwriting it) and return the path."""
    import gguf
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    # SentencePiece-style vocabulary: specials, 256 byte-fallback tokens, then words.
    tokens: list[str] = ["<unk>", "<s>", "</s>"]
    types: list[int] = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [gguf.TokenType.BYTE] * 256
    first_word = len(tokens)
    words = ["\u2581" + w for w in TINY_WORDS] + [".", ",", "!", "?", "\u2581"]
    words += [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens += words
    types += [gguf.TokenType.NORMAL] * len(words)
    n_vocab = len(tokens)
    scores = [0.0] * first_word + [-float(i) for i in range(len(words))]

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("routekit-tiny")
    w.add_context_length(TINY_N_CTX_TRAIN)
    w.add_embedding_length(_N_EMBD)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(_N_FF)
    w.add_head_count(_N_HEAD)
    w.add_head_count_kv(_N_HEAD)
    w.add_rope_dimension_count(_N_EMBD // _N_HEAD)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)

    def rand(*shape: int, scale: float) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    # Every token embedding carries +4 in component 0 and the blocks add little to the
    # residual stream, so every final hidden state has a large positive component 0.
    embd = rand(n_vocab, _N_EMBD, scale=0.5)
    embd[:, 0] = 4.0
    out = rand(n_vocab, _N_EMBD, scale=1.0)
    out[:, 0] = 0.5
    out[:first_word, 0] = -50.0  # <unk>, <s>, </s> and bytes: never the argmax
    w.add_tensor("token_embd.weight", embd)
    w.add_tensor("output_norm.weight", np.ones(_N_EMBD, dtype=np.float32))
    w.add_tensor("output.weight", out)
    for i in range(n_layer):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(_N_EMBD, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w.add_tensor(f"blk.{i}.{name}.weight", rand(_N_EMBD, _N_EMBD, scale=0.05))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(_N_EMBD, dtype=np.float32))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", rand(_N_FF, _N_EMBD, scale=0.05))
        w.add_tensor(f"blk.{i}.ffn_up.weight", rand(_N_FF, _N_EMBD, scale=0.05))
        w.add_tensor(f"blk.{i}.ffn_down.weight", rand(_N_EMBD, _N_FF, scale=0.05))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
