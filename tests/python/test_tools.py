"""The small command-line tools of the Python package: ``python -m keel.eval`` (table output on a
tiny BEIR set written here) and the ONNX Runtime wheel lookup (``keel._onnxruntime``)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

import keel.eval
from keel import _onnxruntime


def tiny_beir(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True)
    docs = [
        {"_id": "d1", "title": "Wings", "text": "lift of a wing at low speed"},
        {"_id": "d2", "title": "Heat", "text": "heat transfer in a boundary layer"},
        {"_id": "q1", "title": "", "text": "a document whose id equals a query id"},
    ]
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    queries = [{"_id": "q1", "text": "wing lift"}, {"_id": "q2", "text": "boundary layer heat"}]
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")
    return root


def test_eval_prints_a_table_of_the_chosen_metrics(tmp_path: Path, capsys) -> None:
    beir = tiny_beir(tmp_path / "beir")
    assert keel.eval.main([str(beir), "--metrics", "ndcg@10, mrr", "--drop-self-hits"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{beir}: 3 documents, 2 queries (test)"
    # Both queries find their judged document first: every metric is exactly 1.
    assert [line.split() for line in out[1:3]] == [["ndcg@10", "1.0000"], ["mrr", "1.0000"]]
    assert out[3].lstrip().startswith("load ") and "q/s" in out[3]


def test_eval_as_a_module_exits_zero_with_json(tmp_path: Path) -> None:
    beir = tiny_beir(tmp_path / "beir")
    out = subprocess.run(
        [sys.executable, "-m", "keel.eval", str(beir), "--json", "--metrics", "map"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout)["metrics"] == {"map": 1.0}


def test_onnxruntime_lookup_is_none_without_the_wheel(monkeypatch) -> None:
    def missing(name: str):
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(importlib.util, "find_spec", missing)
    assert _onnxruntime.wheel_library() is None
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert _onnxruntime.wheel_library() is None


def test_onnxruntime_lookup_as_a_script_prints_the_wheel_library() -> None:
    script = Path(_onnxruntime.__file__)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True)
    path = out.stdout.strip()
    assert path == _onnxruntime.wheel_library()
    assert Path(path).name.startswith("libonnxruntime") and Path(path).is_file()


def test_eval_refuses_a_missing_folder_naming_it(tmp_path: Path) -> None:
    with pytest.raises(keel.KeelError, match="nowhere"):
        keel.eval.main([str(tmp_path / "nowhere")])
