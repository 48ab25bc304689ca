//! `keel.Keyring` and `keel.Memory`: encrypted conversation memory from Python.
//!
//! Arguments are converted and owned first (metadata through `json.dumps`, token counts through
//! the optional Python `token_counter`, both needing the GIL); then every database call runs in
//! `py.allow_threads`, so other Python threads (and `asyncio.to_thread` workers, see
//! `keel.AsyncMemory`) keep running while SQLite and AES work.

use std::sync::Arc;
use std::time::Duration;

use keel::memory::llm::system_content;
use keel::memory::{
    AnyMemory, ContextPassage, MemorySettings, Message, NewMessage, SessionInfo, SessionRef,
};
use keel::{Keyring, MemoryOptions, MemoryStore, Synchronous};
use pyo3::prelude::*;

use crate::telemetry::Traced;
use pyo3::sync::GILOnceCell;
use pyo3::types::PyDict;

use crate::args::{u32_arg, u64_arg};
use crate::errors::{invalid, to_py};
use crate::rag::PyHit;

/// One `llm_messages` passage: a `keel.Hit`, or a dict with `text` and optional `title` and
/// `doc_id`.
fn context_passage(item: &Bound<'_, PyAny>) -> PyResult<ContextPassage> {
    if let Ok(hit) = item.downcast::<PyHit>() {
        return Ok(ContextPassage::from(&hit.get().hit));
    }
    let Ok(d) = item.downcast::<PyDict>() else {
        return Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "a passage must be a keel.Hit or a dict with text, title, doc_id; not {}",
            item.get_type().name()?
        )));
    };
    let field = |name: &str| -> PyResult<Option<String>> {
        d.get_item(name)?
            .filter(|v| !v.is_none())
            .map(|v| v.extract())
            .transpose()
    };
    let Some(text) = field("text")? else {
        return Err(invalid("a passage dict needs a \"text\""));
    };
    Ok(ContextPassage {
        doc_id: field("doc_id")?.unwrap_or_default(),
        title: field("title")?.unwrap_or_default(),
        text,
    })
}

/// `json.dumps` / `json.loads`, looked up once.
fn json_fn<'py>(py: Python<'py>, name: &'static str) -> PyResult<&'py Bound<'py, PyAny>> {
    static DUMPS: GILOnceCell<PyObject> = GILOnceCell::new();
    static LOADS: GILOnceCell<PyObject> = GILOnceCell::new();
    let cell = if name == "dumps" { &DUMPS } else { &LOADS };
    let f = cell.get_or_try_init(py, || -> PyResult<PyObject> {
        Ok(py.import("json")?.getattr(name)?.unbind())
    })?;
    Ok(f.bind(py))
}

/// A keyring of versioned AES-SIV keys (never printed; `repr` shows ids only).
#[pyclass(module = "keel._native", name = "Keyring", frozen)]
pub struct PyKeyring {
    pub(crate) inner: Arc<Keyring>,
}

#[pymethods]
impl PyKeyring {
    /// Parses the keyring text format (`ID:BASE64KEY` entries, optional `primary=ID`).
    #[staticmethod]
    fn parse(text: &str) -> PyResult<Self> {
        Ok(Self {
            inner: Arc::new(Keyring::parse(text).map_err(to_py)?),
        })
    }

    /// Reads the keyring from an environment variable (default `KEEL_KEYRING`).
    #[staticmethod]
    #[pyo3(signature = (var = keel::crypto::KEYRING_ENV))]
    fn from_env(var: &str) -> PyResult<Self> {
        Ok(Self {
            inner: Arc::new(Keyring::from_env(var).map_err(to_py)?),
        })
    }

    /// Reads the keyring from a key file, which group and others must not be able to read or
    /// write (KeyringError naming the path and mode otherwise: chmod 600 it).
    #[staticmethod]
    fn from_file(path: std::path::PathBuf) -> PyResult<Self> {
        Ok(Self {
            inner: Arc::new(Keyring::from_file(path).map_err(to_py)?),
        })
    }

    /// A keyring of one raw 64-byte key.
    #[staticmethod]
    #[pyo3(signature = (key, key_id = i128::from(keel::crypto::DEFAULT_KEY_ID)))]
    fn from_key(key: &[u8], key_id: i128) -> PyResult<Self> {
        let key_id = u32_arg("key_id", key_id)?;
        Ok(Self {
            inner: Arc::new(Keyring::new(key_id, key).map_err(to_py)?),
        })
    }

    /// A keyring with one freshly generated key (id 1).
    #[staticmethod]
    fn generate() -> PyResult<Self> {
        Ok(Self {
            inner: Arc::new(Keyring::generate().map_err(to_py)?),
        })
    }

    /// A fresh random key, base64-encoded (the text after `ID:` in a keyring).
    #[staticmethod]
    fn generate_key() -> PyResult<String> {
        Keyring::generate_key()
            .map(|k| k.as_str().to_owned())
            .map_err(to_py)
    }

    /// A copy with `key` (64 bytes) added under `key_id` as the new primary.
    fn with_key(&self, key_id: i128, key: &[u8]) -> PyResult<Self> {
        let key_id = u32_arg("key_id", key_id)?;
        Ok(Self {
            inner: Arc::new(self.inner.with_key(key_id, key).map_err(to_py)?),
        })
    }

    #[getter]
    fn primary_id(&self) -> u32 {
        self.inner.primary_id()
    }

    #[getter]
    fn key_ids(&self) -> Vec<u32> {
        self.inner.key_ids()
    }

    fn __repr__(&self) -> String {
        format!(
            "Keyring(key_ids={:?}, primary_id={})",
            self.inner.key_ids(),
            self.inner.primary_id()
        )
    }
}

/// A stored message. `repr` leaves the content out, so logging one leaks nothing.
#[pyclass(module = "keel._native", name = "Message", frozen, get_all)]
pub struct PyMessage {
    id: i64,
    role: String,
    content: String,
    metadata_json: Option<String>,
    tokens: u32,
    created_at_ms: i64,
}

#[pymethods]
impl PyMessage {
    /// The metadata as a Python object (`json.loads` of `metadata_json`), or None.
    #[getter]
    fn metadata(&self, py: Python<'_>) -> PyResult<PyObject> {
        match &self.metadata_json {
            None => Ok(py.None()),
            Some(text) => Ok(json_fn(py, "loads")?.call1((text.as_str(),))?.unbind()),
        }
    }

    /// The message as plain JSON-able types: `{"id", "role", "content", "metadata" (the parsed
    /// object or None), "tokens", "created_at_ms"}`.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("id", self.id)?;
        d.set_item("role", &self.role)?;
        d.set_item("content", &self.content)?;
        d.set_item("metadata", self.metadata(py)?)?;
        d.set_item("tokens", self.tokens)?;
        d.set_item("created_at_ms", self.created_at_ms)?;
        Ok(d)
    }

    /// Rebuilds a message from its fields (used by pickle).
    #[classmethod]
    fn _restore(
        _cls: &Bound<'_, pyo3::types::PyType>,
        id: i64,
        role: String,
        content: String,
        metadata_json: Option<String>,
        tokens: u32,
        created_at_ms: i64,
    ) -> Self {
        Self {
            id,
            role,
            content,
            metadata_json,
            tokens,
            created_at_ms,
        }
    }

    #[allow(clippy::type_complexity)]
    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(
        Bound<'py, PyAny>,
        (i64, String, String, Option<String>, u32, i64),
    )> {
        let m = slf.get();
        Ok((
            slf.get_type().getattr("_restore")?,
            (
                m.id,
                m.role.clone(),
                m.content.clone(),
                m.metadata_json.clone(),
                m.tokens,
                m.created_at_ms,
            ),
        ))
    }

    fn __repr__(&self) -> String {
        format!(
            "Message(id={}, role={:?}, tokens={}, created_at_ms={})",
            self.id, self.role, self.tokens, self.created_at_ms
        )
    }
}

impl From<Message> for PyMessage {
    fn from(m: Message) -> Self {
        Self {
            id: m.id,
            role: m.role,
            content: m.content,
            metadata_json: m.metadata,
            tokens: m.tokens,
            created_at_ms: m.created_at_ms,
        }
    }
}

/// A session of one user, as listed by `Memory.sessions`.
#[pyclass(module = "keel._native", name = "SessionInfo", frozen, get_all)]
pub struct PySessionInfo {
    session: String,
    created_at_ms: i64,
    updated_at_ms: i64,
    message_count: u64,
}

#[pymethods]
impl PySessionInfo {
    /// The session as plain JSON-able types: `{"session", "created_at_ms", "updated_at_ms",
    /// "message_count"}`.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
        let d = pyo3::types::PyDict::new(py);
        d.set_item("session", &self.session)?;
        d.set_item("created_at_ms", self.created_at_ms)?;
        d.set_item("updated_at_ms", self.updated_at_ms)?;
        d.set_item("message_count", self.message_count)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "SessionInfo(message_count={}, updated_at_ms={})",
            self.message_count, self.updated_at_ms
        )
    }
}

impl From<SessionInfo> for PySessionInfo {
    fn from(s: SessionInfo) -> Self {
        Self {
            session: s.session,
            created_at_ms: s.created_at_ms,
            updated_at_ms: s.updated_at_ms,
            message_count: s.message_count,
        }
    }
}

/// Encrypted conversation memory in one SQLite file.
#[pyclass(module = "keel._native", name = "Memory", frozen)]
pub struct PyMemory {
    inner: Arc<MemoryStore<AnyMemory>>,
    token_counter: Option<PyObject>,
}

fn secs(name: &str, value: f64) -> PyResult<Duration> {
    keel::clock::duration_from_secs(name, value).map_err(to_py)
}

fn messages(list: Vec<Message>) -> Vec<PyMessage> {
    list.into_iter().map(PyMessage::from).collect()
}

impl PyMemory {
    /// Wraps a core memory (also one an `Engine` shares).
    pub(crate) fn from_core(inner: Arc<MemoryStore<AnyMemory>>) -> Self {
        Self {
            inner,
            token_counter: None,
        }
    }

    fn new_message(
        &self,
        py: Python<'_>,
        role: String,
        content: String,
        metadata: Option<&Bound<'_, PyAny>>,
        tokens: Option<i128>,
    ) -> PyResult<NewMessage> {
        let tokens = tokens.map(|t| u32_arg("tokens", t)).transpose()?;
        let metadata = match metadata {
            Some(obj) if !obj.is_none() => Some(json_fn(py, "dumps")?.call1((obj,))?.extract()?),
            _ => None,
        };
        let tokens = match (tokens, &self.token_counter) {
            (Some(t), _) => Some(t),
            (None, Some(counter)) => {
                let counted = counter.call1(py, (content.as_str(),))?.extract(py)?;
                Some(u32_arg("token_counter result", counted)?)
            }
            (None, None) => None,
        };
        Ok(NewMessage {
            role,
            content,
            metadata,
            tokens,
        })
    }
}

#[pymethods]
impl PyMemory {
    /// Identifies the database connection pool this object uses, within the process: objects
    /// that share one pool (e.g. an `Engine`'s memory, API keys and audit log) report the same id.
    #[getter]
    fn store_id(&self) -> u64 {
        self.inner.backend().store_id().unwrap_or_default()
    }

    #[new]
    #[pyo3(signature = (
        path, keyring, *, synchronous = None, busy_timeout = None, pool_size = None,
        max_content_bytes = None, max_metadata_bytes = None, token_counter = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: std::path::PathBuf,
        keyring: &PyKeyring,
        synchronous: Option<&str>,
        busy_timeout: Option<f64>,
        pool_size: Option<i128>,
        max_content_bytes: Option<i128>,
        max_metadata_bytes: Option<i128>,
        token_counter: Option<PyObject>,
    ) -> PyResult<Self> {
        // None: the core's default (keel::memory::MemoryOptions::default()).
        let size = |name: &str, n: i128| u64_arg(name, n).map(|n| n as usize);
        let options = MemoryOptions::from(MemorySettings {
            busy_timeout: busy_timeout.map(|s| secs("busy_timeout", s)).transpose()?,
            pool_size: pool_size.map(|n| u32_arg("pool_size", n)).transpose()?,
            synchronous: synchronous
                .map(Synchronous::parse)
                .transpose()
                .map_err(to_py)?,
            max_content_bytes: max_content_bytes
                .map(|n| size("max_content_bytes", n))
                .transpose()?,
            max_metadata_bytes: max_metadata_bytes
                .map(|n| size("max_metadata_bytes", n))
                .transpose()?,
        });
        let keys = Arc::clone(&keyring.inner);
        let inner = py
            .traced(|| MemoryStore::open(path, keys, options))
            .map_err(to_py)?;
        Ok(Self {
            inner: Arc::new(inner.into_any()),
            token_counter,
        })
    }

    /// Appends one message; returns its id.
    #[pyo3(signature = (tenant, user, session, role, content, metadata = None, tokens = None))]
    #[allow(clippy::too_many_arguments)]
    fn append(
        &self,
        py: Python<'_>,
        tenant: String,
        user: String,
        session: String,
        role: String,
        content: String,
        metadata: Option<&Bound<'_, PyAny>>,
        tokens: Option<i128>,
    ) -> PyResult<i64> {
        let msg = self.new_message(py, role, content, metadata, tokens)?;
        let at = SessionRef::new(&tenant, &user, &session);
        py.traced(|| self.inner.append(&at, &msg)).map_err(to_py)
    }

    /// Appends messages atomically; each is a dict with "role", "content" and optionally
    /// "metadata" and "tokens". Returns their ids.
    fn append_many(
        &self,
        py: Python<'_>,
        tenant: String,
        user: String,
        session: String,
        messages: &Bound<'_, PyAny>,
    ) -> PyResult<Vec<i64>> {
        let mut batch = Vec::new();
        for item in messages.try_iter()? {
            let item = item?;
            let dict = item
                .downcast::<PyDict>()
                .map_err(|_| invalid("each message must be a dict with role and content"))?;
            let get = |k: &str| dict.get_item(k);
            let role = get("role")?
                .ok_or_else(|| invalid("a message has no \"role\""))?
                .extract::<String>()?;
            let content = get("content")?
                .ok_or_else(|| invalid("a message has no \"content\""))?
                .extract::<String>()?;
            let metadata = get("metadata")?;
            let tokens = match get("tokens")? {
                Some(t) if !t.is_none() => Some(t.extract::<i128>()?),
                _ => None,
            };
            batch.push(self.new_message(py, role, content, metadata.as_ref(), tokens)?);
        }
        let at = SessionRef::new(&tenant, &user, &session);
        py.traced(|| self.inner.append_many(&at, &batch))
            .map_err(to_py)
    }

    /// Messages newest first; `limit` defaults to the core's `DEFAULT_HISTORY_LIMIT` (50).
    #[pyo3(signature = (tenant, user, session, limit = i128::from(keel::memory::DEFAULT_HISTORY_LIMIT), offset = 0))]
    fn history(
        &self,
        py: Python<'_>,
        tenant: String,
        user: String,
        session: String,
        limit: i128,
        offset: i128,
    ) -> PyResult<Vec<PyMessage>> {
        let (limit, offset) = (u32_arg("limit", limit)?, u32_arg("offset", offset)?);
        let at = SessionRef::new(&tenant, &user, &session);
        py.traced(|| self.inner.history(&at, limit, offset))
            .map(messages)
            .map_err(to_py)
    }

    /// The newest messages fitting `budget` tokens, oldest first.
    fn window(
        &self,
        py: Python<'_>,
        tenant: String,
        user: String,
        session: String,
        budget: i128,
    ) -> PyResult<Vec<PyMessage>> {
        let budget = u64_arg("budget", budget)?;
        let at = SessionRef::new(&tenant, &user, &session);
        py.traced(|| self.inner.window(&at, budget))
            .map(messages)
            .map_err(to_py)
    }

    /// The messages of an LLM request: `[{"role": ..., "content": ...}]`, the system message
    /// (`system` and the `passages` cited as [1], [2], ...) first, then the newest turns that
    /// fit what remains of `budget` tokens, oldest first. `passages`: `keel.Hit`s or dicts with
    /// `text` and optional `title` and `doc_id`.
    #[pyo3(signature = (tenant, user, session, *, budget, system=None, passages=None))]
    #[allow(clippy::too_many_arguments)]
    fn llm_messages<'py>(
        &self,
        py: Python<'py>,
        tenant: String,
        user: String,
        session: String,
        budget: i128,
        system: Option<String>,
        passages: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let budget = u64_arg("budget", budget)?;
        let passages = match passages.filter(|p| !p.is_none()) {
            None => Vec::new(),
            Some(list) => list
                .try_iter()?
                .map(|item| context_passage(&item?))
                .collect::<PyResult<Vec<_>>>()?,
        };
        // A Python token counter counts the system message as it counts stored messages.
        let system_tokens = match &self.token_counter {
            Some(counter) => match system_content(system.as_deref(), &passages) {
                Some(text) => {
                    let counted = counter.call1(py, (text,))?.extract(py)?;
                    Some(u32_arg("token_counter result", counted)?)
                }
                None => None,
            },
            None => None,
        };
        let at = SessionRef::new(&tenant, &user, &session);
        let out = py
            .allow_threads(|| {
                self.inner.llm_messages_counted(
                    &at,
                    budget,
                    system.as_deref(),
                    &passages,
                    system_tokens,
                )
            })
            .map_err(to_py)?;
        out.into_iter()
            .map(|m| {
                let d = PyDict::new(py);
                d.set_item("role", m.role)?;
                d.set_item("content", m.content)?;
                Ok(d)
            })
            .collect()
    }

    /// The user's sessions, most recently updated first; `limit` defaults to the core's
    /// `DEFAULT_SESSIONS_LIMIT` (100).
    #[pyo3(signature = (tenant, user, limit = i128::from(keel::memory::DEFAULT_SESSIONS_LIMIT), offset = 0))]
    fn sessions(
        &self,
        py: Python<'_>,
        tenant: String,
        user: String,
        limit: i128,
        offset: i128,
    ) -> PyResult<Vec<PySessionInfo>> {
        let (limit, offset) = (u32_arg("limit", limit)?, u32_arg("offset", offset)?);
        py.traced(|| self.inner.sessions(&tenant, &user, limit, offset))
            .map(|v| v.into_iter().map(PySessionInfo::from).collect())
            .map_err(to_py)
    }

    /// The session as a JSON document (str).
    fn export(
        &self,
        py: Python<'_>,
        tenant: String,
        user: String,
        session: String,
    ) -> PyResult<String> {
        let at = SessionRef::new(&tenant, &user, &session);
        py.traced(|| self.inner.export(&at)).map_err(to_py)
    }

    /// Hard-deletes a session; raises SessionNotFound if there is none.
    fn delete_session(
        &self,
        py: Python<'_>,
        tenant: String,
        user: String,
        session: String,
    ) -> PyResult<()> {
        let at = SessionRef::new(&tenant, &user, &session);
        py.traced(|| self.inner.delete_session(&at)).map_err(to_py)
    }

    /// Hard-deletes all of a user's sessions in a tenant; returns how many.
    fn delete_user(&self, py: Python<'_>, tenant: String, user: String) -> PyResult<u64> {
        py.traced(|| self.inner.delete_user(&tenant, &user))
            .map_err(to_py)
    }

    /// Deletes sessions idle for more than `idle` seconds; returns how many.
    fn purge_idle(&self, py: Python<'_>, idle: f64) -> PyResult<u64> {
        let idle = secs("idle", idle)?;
        py.traced(|| self.inner.purge_idle(idle)).map_err(to_py)
    }

    /// Installs a keyring (e.g. with a new primary key).
    fn set_keyring(&self, keyring: &PyKeyring) {
        self.inner.set_keyring(Arc::clone(&keyring.inner));
    }

    /// The current keyring.
    #[getter]
    fn keyring(&self) -> PyKeyring {
        PyKeyring {
            inner: self.inner.keyring(),
        }
    }

    /// Re-encrypts up to `batch` messages under the primary key; 0 when rotation is complete.
    /// `batch` defaults to the core's `DEFAULT_ROTATE_BATCH` (1000).
    #[pyo3(signature = (batch = i128::from(keel::memory::DEFAULT_ROTATE_BATCH)))]
    fn rotate(&self, py: Python<'_>, batch: i128) -> PyResult<u64> {
        let batch = u32_arg("batch", batch)?;
        py.traced(|| self.inner.rotate(batch)).map_err(to_py)
    }

    /// {key_id: number of messages encrypted under it}.
    fn key_usage<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let usage = py.traced(|| self.inner.key_usage()).map_err(to_py)?;
        let dict = PyDict::new(py);
        for (id, n) in usage {
            dict.set_item(id, n)?;
        }
        Ok(dict)
    }

    /// Drops `key_id` from the keyring; raises KeyInUseError while messages still use it and
    /// KeyringError for an id the keyring lacks or for its primary.
    fn retire_key(&self, py: Python<'_>, key_id: i128) -> PyResult<()> {
        let key_id = u32_arg("key_id", key_id)?;
        py.traced(|| self.inner.retire_key(key_id)).map_err(to_py)
    }

    fn __repr__(&self) -> String {
        format!("Memory(location={:?})", self.inner.backend().location())
    }
}
