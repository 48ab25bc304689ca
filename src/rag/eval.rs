//! Retrieval metrics with trec_eval's definitions, and a loader for the BEIR data layout.
//!
//! Definitions (as trec_eval 9.x computes them, and as `ranx` does for runs without ties):
//! - a query's ranking is its run sorted by score descending, ties broken by document id in
//!   *descending* string order (trec_eval sorts by score, then docno, in reverse);
//! - a document is relevant when its qrels grade is >= 1; unjudged documents are not relevant;
//! - `ndcg@k` (trec_eval `ndcg_cut_k`): DCG with gain = grade (grades <= 0 gain nothing) and
//!   discount log2(rank + 1), over the ideal DCG of the qrels' grades sorted descending; 0 when
//!   the query has no positive grade;
//! - `recall@k`: relevant documents in the top k / relevant documents in the qrels;
//! - `precision@k` (`P_k`): relevant documents in the top k / k (even if fewer were retrieved);
//! - `map`: mean over the relevant documents of the precision at each one's rank (0 for the
//!   ones not retrieved); `map@k` stops at rank k;
//! - `mrr` (`recip_rank`): 1 / rank of the first relevant document, 0 if none.
//!
//! Means are taken over the queries that appear in both the run and the qrels (trec_eval without
//! `-c`); `Evaluation::per_query` keeps every such query's values.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use serde_json::Value;

use super::cite::{Document, Metadata};
use super::RagError;

/// Relevance judgements: query id → document id → grade.
pub type Qrels = HashMap<String, HashMap<String, i32>>;
/// A run: query id → (document id, score) pairs, in any order.
pub type Run = HashMap<String, Vec<(String, f64)>>;

/// A metric, parsed from names such as `ndcg@10`, `recall@100`, `p@5`, `map`, `mrr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// nDCG at a cutoff.
    Ndcg(usize),
    /// Recall at a cutoff.
    Recall(usize),
    /// Precision at a cutoff.
    Precision(usize),
    /// Mean average precision, over the whole ranking (`None`) or its top k.
    Map(Option<usize>),
    /// Mean reciprocal rank (of the whole ranking).
    Mrr,
}

impl Metric {
    /// The metrics reported when none are asked for (every door): nDCG@10, Recall@100, MAP, MRR,
    /// P@10.
    pub const DEFAULTS: [Metric; 5] = [
        Self::Ndcg(10),
        Self::Recall(100),
        Self::Map(None),
        Self::Mrr,
        Self::Precision(10),
    ];

    /// Parses `ndcg@k`, `recall@k`, `precision@k` / `p@k`, `map`, `map@k`, `mrr`.
    pub fn parse(name: &str) -> Result<Self, RagError> {
        let lower = name.trim().to_ascii_lowercase();
        let (base, cut) = match lower.split_once('@') {
            Some((b, k)) => {
                let k: usize = k.parse().ok().filter(|&k| k > 0).ok_or_else(|| {
                    RagError::InvalidConfig(format!("bad cutoff in metric {name:?}"))
                })?;
                (b.to_owned(), Some(k))
            }
            None => (lower, None),
        };
        let need = |c: Option<usize>| {
            c.ok_or_else(|| {
                RagError::InvalidConfig(format!("metric {name:?} needs a cutoff, e.g. @10"))
            })
        };
        Ok(match base.as_str() {
            "ndcg" => Self::Ndcg(need(cut)?),
            "recall" | "r" => Self::Recall(need(cut)?),
            "precision" | "p" => Self::Precision(need(cut)?),
            "map" | "ap" => Self::Map(cut),
            "mrr" | "recip_rank" if cut.is_none() => Self::Mrr,
            _ => return Err(RagError::InvalidConfig(format!("unknown metric {name:?}"))),
        })
    }

    /// The canonical name, e.g. `ndcg@10`.
    pub fn name(&self) -> String {
        match self {
            Self::Ndcg(k) => format!("ndcg@{k}"),
            Self::Recall(k) => format!("recall@{k}"),
            Self::Precision(k) => format!("precision@{k}"),
            Self::Map(None) => "map".into(),
            Self::Map(Some(k)) => format!("map@{k}"),
            Self::Mrr => "mrr".into(),
        }
    }
}

/// The result of an evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The metrics, in the order asked.
    pub metrics: Vec<Metric>,
    /// The mean of each metric over the evaluated queries.
    pub mean: Vec<f64>,
    /// Each evaluated query's values, in metric order.
    pub per_query: BTreeMap<String, Vec<f64>>,
}

/// Sorts a query's results as trec_eval does: score descending, then document id descending.
pub fn trec_order(results: &mut [(String, f64)]) {
    results.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
}

fn query_metric(
    metric: Metric,
    ranked: &[(String, f64)],
    judged: &HashMap<String, i32>,
    num_rel: usize,
) -> f64 {
    let grade = |d: &str| judged.get(d).copied().unwrap_or(0);
    let rel = |d: &str| grade(d) >= 1;
    match metric {
        Metric::Ndcg(k) => {
            let dcg: f64 = ranked
                .iter()
                .take(k)
                .enumerate()
                .map(|(i, (d, _))| f64::from(grade(d).max(0)) / ((i + 2) as f64).log2())
                .sum();
            let mut ideal: Vec<i32> = judged.values().copied().filter(|&g| g > 0).collect();
            ideal.sort_unstable_by(|a, b| b.cmp(a));
            let idcg: f64 = ideal
                .iter()
                .take(k)
                .enumerate()
                .map(|(i, &g)| f64::from(g) / ((i + 2) as f64).log2())
                .sum();
            if idcg > 0.0 {
                dcg / idcg
            } else {
                0.0
            }
        }
        Metric::Recall(k) => {
            if num_rel == 0 {
                return 0.0;
            }
            ranked.iter().take(k).filter(|(d, _)| rel(d)).count() as f64 / num_rel as f64
        }
        Metric::Precision(k) => {
            ranked.iter().take(k).filter(|(d, _)| rel(d)).count() as f64 / k as f64
        }
        Metric::Map(cut) => {
            if num_rel == 0 {
                return 0.0;
            }
            let mut found = 0usize;
            let mut sum = 0.0;
            for (i, (d, _)) in ranked.iter().take(cut.unwrap_or(usize::MAX)).enumerate() {
                if rel(d) {
                    found += 1;
                    sum += found as f64 / (i + 1) as f64;
                }
            }
            sum / num_rel as f64
        }
        Metric::Mrr => ranked
            .iter()
            .position(|(d, _)| rel(d))
            .map_or(0.0, |i| 1.0 / (i + 1) as f64),
    }
}

/// Evaluates `run` against `qrels` (see the module docs for the definitions).
pub fn evaluate(qrels: &Qrels, run: &Run, metrics: &[Metric]) -> Result<Evaluation, RagError> {
    let _span = tracing::info_span!("rag.eval", rag.queries = run.len() as i64).entered();
    let mut per_query = BTreeMap::new();
    for (qid, results) in run {
        let Some(judged) = qrels.get(qid) else {
            continue;
        };
        let mut seen = HashSet::with_capacity(results.len());
        if !results.iter().all(|(d, _)| seen.insert(d.as_str())) {
            return Err(RagError::InvalidData(
                "a run lists a document twice for one query".into(),
            ));
        }
        if results.iter().any(|(_, s)| s.is_nan()) {
            return Err(RagError::InvalidData("a run contains a NaN score".into()));
        }
        let mut ranked = results.clone();
        trec_order(&mut ranked);
        let num_rel = judged.values().filter(|&&g| g >= 1).count();
        let values = metrics
            .iter()
            .map(|&m| query_metric(m, &ranked, judged, num_rel))
            .collect();
        per_query.insert(qid.clone(), values);
    }
    let n = per_query.len();
    let mean = (0..metrics.len())
        .map(|i| {
            if n == 0 {
                0.0
            } else {
                per_query.values().map(|v: &Vec<f64>| v[i]).sum::<f64>() / n as f64
            }
        })
        .collect();
    Ok(Evaluation {
        metrics: metrics.to_vec(),
        mean,
        per_query,
    })
}

/// Removes, from each query's results, a document whose id equals the query id (BEIR's habit
/// for data sets where a query is itself a corpus document; wrong for most others).
pub fn drop_self_hits(run: &mut Run) {
    for (qid, results) in run.iter_mut() {
        results.retain(|(d, _)| d != qid);
    }
}

/// A data set in the BEIR layout.
#[derive(Debug, Clone, Default)]
pub struct BeirDataset {
    /// The corpus (`corpus.jsonl`: `_id`, `title`, `text`, optional `metadata`).
    pub corpus: Vec<Document>,
    /// Queries (`queries.jsonl`: `_id`, `text`), in file order.
    pub queries: Vec<(String, String)>,
    /// Judgements (`qrels/<split>.tsv`: header, then `query-id corpus-id score`).
    pub qrels: Qrels,
}

fn id_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn read_jsonl(
    path: &Path,
    mut each: impl FnMut(serde_json::Map<String, Value>, usize) -> Result<(), RagError>,
) -> Result<(), RagError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        RagError::InvalidData(format!("cannot read {}: {}", path.display(), e.kind()))
    })?;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line).map_err(|_| {
            RagError::InvalidData(format!("{} line {}: not JSON", path.display(), i + 1))
        })?;
        match value {
            Value::Object(o) => each(o, i + 1)?,
            _ => {
                return Err(RagError::InvalidData(format!(
                    "{} line {}: not a JSON object",
                    path.display(),
                    i + 1
                )))
            }
        }
    }
    Ok(())
}

/// Loads a BEIR directory: `corpus.jsonl`, `queries.jsonl` and `qrels/<split>.tsv`. Only the
/// queries that have judgements in that split are kept.
pub fn load_beir(dir: &Path, split: &str) -> Result<BeirDataset, RagError> {
    let _span = tracing::info_span!("rag.eval.load_beir").entered();
    let mut ds = BeirDataset::default();
    let qrels_path = dir.join("qrels").join(format!("{split}.tsv"));
    let qrels_text = std::fs::read_to_string(&qrels_path).map_err(|e| {
        RagError::InvalidData(format!(
            "cannot read {}: {}",
            qrels_path.display(),
            e.kind()
        ))
    })?;
    for (i, line) in qrels_text.lines().enumerate() {
        let fields: Vec<&str> = line.split('\t').map(str::trim).collect();
        if line.trim().is_empty() || (i == 0 && fields.first() == Some(&"query-id")) {
            continue;
        }
        let bad = || {
            RagError::InvalidData(format!(
                "{} line {}: expected query-id, corpus-id, score",
                qrels_path.display(),
                i + 1
            ))
        };
        if fields.len() != 3 {
            return Err(bad());
        }
        let grade: i32 = fields[2].parse().map_err(|_| bad())?;
        ds.qrels
            .entry(fields[0].to_owned())
            .or_default()
            .insert(fields[1].to_owned(), grade);
    }
    let corpus_path = dir.join("corpus.jsonl");
    read_jsonl(&corpus_path, |mut o, line| {
        let id = o.get("_id").and_then(id_of).ok_or_else(|| {
            RagError::InvalidData(format!("{} line {line}: no _id", corpus_path.display()))
        })?;
        let text = |o: &mut serde_json::Map<String, Value>, k: &str| match o.remove(k) {
            Some(Value::String(s)) => s,
            _ => String::new(),
        };
        let title = text(&mut o, "title");
        let body = text(&mut o, "text");
        let metadata: Metadata = match o.remove("metadata") {
            Some(Value::Object(m)) => m,
            _ => Metadata::new(),
        };
        ds.corpus.push(Document {
            id,
            title,
            text: body,
            metadata,
        });
        Ok(())
    })?;
    let queries_path = dir.join("queries.jsonl");
    read_jsonl(&queries_path, |o, line| {
        let id = o.get("_id").and_then(id_of).ok_or_else(|| {
            RagError::InvalidData(format!("{} line {line}: no _id", queries_path.display()))
        })?;
        if ds.qrels.contains_key(&id) {
            let text = o
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            ds.queries.push((id, text));
        }
        Ok(())
    })?;
    Ok(ds)
}
