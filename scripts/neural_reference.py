"""Reference sentence embeddings and cross-encoder scores with Python onnxruntime + tokenizers +
numpy: the yardstick keel's Rust implementation is tested (to 1e-4) and benchmarked against.

Same recipe as keel: batch-longest padding, truncation to the model's max length
(sentence_bert_config.json), mean pooling with the attention mask, L2 normalisation; for a
cross-encoder, (query, passage) pairs truncated longest-first and the last logit column.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

TEXTS = [
    "The lift of a wing in a slipstream.",
    "Heat transfer in a laminar boundary layer over a flat plate",
    "short",
    "Überschall-Strömung: naïve café résumé — unicode tokens 東京",
    " ".join(["a long text that is truncated to the model maximum length"] * 60),
    "",
]
QUERY = "what is the lift of a wing?"


def max_length(model_dir: Path, default: int = 512) -> int:
    cfg = model_dir / "sentence_bert_config.json"
    if cfg.is_file():
        return int(json.loads(cfg.read_text())["max_seq_length"])
    return default


def tokenizer(model_dir: Path) -> Tokenizer:
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.enable_padding(pad_id=0, pad_token="[PAD]")  # batch-longest
    tok.enable_truncation(max_length=max_length(model_dir))
    return tok


def session(model_dir: Path, threads: int = 0) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(
        str(model_dir / "model.onnx"), opts, providers=["CPUExecutionProvider"]
    )


def feeds(sess: ort.InferenceSession, encodings: list) -> dict[str, np.ndarray]:
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    types = np.array([e.type_ids for e in encodings], dtype=np.int64)
    names = {i.name for i in sess.get_inputs()}
    out = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in names:
        out["token_type_ids"] = types
    return out


def by_length(texts: list[str]) -> list[int]:
    """Indices sorted by length, so each batch pads little (what keel does)."""
    return sorted(range(len(texts)), key=lambda i: (len(texts[i]), i))


def embed(
    sess: ort.InferenceSession,
    tok: Tokenizer,
    texts: list[str],
    batch_size: int = 32,
    model_time: list[float] | None = None,
) -> np.ndarray:
    """Embeddings in input order; batches are formed in length order. If `model_time` is given,
    the seconds spent inside `InferenceSession.run` are appended to it."""
    order = by_length(texts)
    out = np.zeros((len(texts), 0), dtype=np.float32)
    for start in range(0, len(texts), batch_size):
        idx = order[start : start + batch_size]
        enc = tok.encode_batch([texts[i] for i in idx])
        inputs = feeds(sess, enc)
        t0 = time.perf_counter()
        hidden = sess.run(None, inputs)[0]
        if model_time is not None:
            model_time.append(time.perf_counter() - t0)
        mask = inputs["attention_mask"][:, :, None].astype(np.float32)
        pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        if out.shape[1] == 0:
            out = np.zeros((len(texts), pooled.shape[1]), dtype=np.float32)
        out[idx] = pooled / np.maximum(norms, 1e-12)
    return out


def rerank(
    sess: ort.InferenceSession,
    tok: Tokenizer,
    query: str,
    passages: list[str],
    batch_size: int = 16,
) -> np.ndarray:
    order = by_length(passages)
    out = np.zeros(len(passages), dtype=np.float32)
    for start in range(0, len(passages), batch_size):
        idx = order[start : start + batch_size]
        enc = tok.encode_batch([(query, passages[i]) for i in idx])
        logits = sess.run(None, feeds(sess, enc))[0]
        out[idx] = logits[:, -1]
    return out


def golden(models: Path) -> dict:
    minilm = models / "minilm"
    ce = models / "test-cross-encoder"
    emb = embed(session(minilm), tokenizer(minilm), TEXTS)
    scores = rerank(session(ce), tokenizer(ce), QUERY, TEXTS)
    return {
        "texts": TEXTS,
        "query": QUERY,
        "embeddings": emb.tolist(),
        "rerank_scores": scores.tolist(),
    }
