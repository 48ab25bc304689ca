//! Metadata filters, in the MongoDB-style JSON form that vector stores use:
//! `{"lang": "en"}` (equality), `{"tag": ["a", "b"]}` (any of), `{"year": {"$gte": 2020}}`
//! (`$eq $ne $gt $gte $lt $lte $in $nin $exists`), `{"$and": [..]}`, `{"$or": [..]}`,
//! `{"$not": {..}}`. The fields of one object must all match. A missing field matches only
//! `$ne`, `$nin` and `$exists: false`. Numbers compare by value (1 equals 1.0).

use serde_json::Value;

use super::cite::Metadata;
use super::RagError;

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// All must match.
    And(Vec<Filter>),
    /// At least one must match.
    Or(Vec<Filter>),
    /// Must not match.
    Not(Box<Filter>),
    /// A condition on one field.
    Field(String, Cond),
}

/// A condition on one metadata field.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    /// Equal to.
    Eq(Value),
    /// Not equal to (or missing).
    Ne(Value),
    /// Equal to one of.
    In(Vec<Value>),
    /// Equal to none of (or missing).
    Nin(Vec<Value>),
    /// Numerically (or, for strings, lexically) greater than.
    Gt(Value),
    /// Greater than or equal to.
    Gte(Value),
    /// Less than.
    Lt(Value),
    /// Less than or equal to.
    Lte(Value),
    /// Present (true) or absent (false).
    Exists(bool),
}

fn bad(msg: impl Into<String>) -> RagError {
    RagError::InvalidMetadata(msg.into())
}

fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn json_cmp(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

impl Filter {
    /// Parses the JSON form described in the module docs.
    pub fn from_json(value: &Value) -> Result<Self, RagError> {
        let obj = value
            .as_object()
            .ok_or_else(|| bad("a filter must be a JSON object"))?;
        let mut all = Vec::with_capacity(obj.len());
        for (key, v) in obj {
            all.push(match key.as_str() {
                "$and" | "$or" => {
                    let items = v
                        .as_array()
                        .ok_or_else(|| bad(format!("{key} takes an array of filters")))?;
                    let parsed = items
                        .iter()
                        .map(Self::from_json)
                        .collect::<Result<Vec<_>, _>>()?;
                    if key == "$and" {
                        Self::And(parsed)
                    } else {
                        Self::Or(parsed)
                    }
                }
                "$not" => Self::Not(Box::new(Self::from_json(v)?)),
                op if op.starts_with('$') => {
                    return Err(bad(format!("unknown filter operator {op:?}")))
                }
                field => Self::Field(field.to_owned(), Self::cond(v)?),
            });
        }
        Ok(if all.len() == 1 {
            all.pop().expect("one element")
        } else {
            Self::And(all)
        })
    }

    /// Parses a filter from JSON text.
    pub fn parse(json: &str) -> Result<Self, RagError> {
        let value: Value = serde_json::from_str(json).map_err(|e| {
            bad(format!(
                "filter is not JSON: line {} column {}",
                e.line(),
                e.column()
            ))
        })?;
        Self::from_json(&value)
    }

    fn cond(v: &Value) -> Result<Cond, RagError> {
        match v {
            Value::Array(items) => Ok(Cond::In(items.clone())),
            Value::Object(ops) => {
                if ops.len() != 1 {
                    return Err(bad("a field condition object takes exactly one operator"));
                }
                let (op, arg) = ops.iter().next().expect("one entry");
                let list = || {
                    arg.as_array()
                        .cloned()
                        .ok_or_else(|| bad(format!("{op} takes an array")))
                };
                Ok(match op.as_str() {
                    "$eq" => Cond::Eq(arg.clone()),
                    "$ne" => Cond::Ne(arg.clone()),
                    "$in" => Cond::In(list()?),
                    "$nin" => Cond::Nin(list()?),
                    "$gt" => Cond::Gt(arg.clone()),
                    "$gte" => Cond::Gte(arg.clone()),
                    "$lt" => Cond::Lt(arg.clone()),
                    "$lte" => Cond::Lte(arg.clone()),
                    "$exists" => Cond::Exists(
                        arg.as_bool()
                            .ok_or_else(|| bad("$exists takes true or false"))?,
                    ),
                    other => return Err(bad(format!("unknown field operator {other:?}"))),
                })
            }
            scalar => Ok(Cond::Eq(scalar.clone())),
        }
    }

    /// Whether `metadata` passes this filter.
    pub fn matches(&self, metadata: &Metadata) -> bool {
        match self {
            Self::And(all) => all.iter().all(|f| f.matches(metadata)),
            Self::Or(any) => any.iter().any(|f| f.matches(metadata)),
            Self::Not(f) => !f.matches(metadata),
            Self::Field(field, cond) => {
                let value = metadata.get(field);
                match (cond, value) {
                    (Cond::Exists(want), v) => v.is_some() == *want,
                    (Cond::Ne(x), v) => !v.is_some_and(|v| json_eq(v, x)),
                    (Cond::Nin(xs), v) => !v.is_some_and(|v| xs.iter().any(|x| json_eq(v, x))),
                    (_, None) => false,
                    (Cond::Eq(x), Some(v)) => json_eq(v, x),
                    (Cond::In(xs), Some(v)) => xs.iter().any(|x| json_eq(v, x)),
                    (Cond::Gt(x), Some(v)) => json_cmp(v, x).is_some_and(|o| o.is_gt()),
                    (Cond::Gte(x), Some(v)) => json_cmp(v, x).is_some_and(|o| o.is_ge()),
                    (Cond::Lt(x), Some(v)) => json_cmp(v, x).is_some_and(|o| o.is_lt()),
                    (Cond::Lte(x), Some(v)) => json_cmp(v, x).is_some_and(|o| o.is_le()),
                }
            }
        }
    }
}
