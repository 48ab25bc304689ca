//! Finding and loading ONNX Runtime, once per process.
//!
//! `ort` is built with `load-dynamic`: nothing is linked or downloaded at build time, and the
//! shared library is looked up at run time in this order:
//! 1. the path named with [`set_library_path`] (an engine's `retrieval.onnxruntime`, or C's
//!    `keel_onnxruntime_set_path`),
//! 2. `ORT_DYLIB_PATH` (a path to `libonnxruntime.so*`; if set it must work),
//! 3. the path the embedding host found with [`set_host_library_path`] (keel's Python module
//!    registers its interpreter's `onnxruntime` wheel),
//! 4. `libonnxruntime.so*` next to the running executable,
//! 5. the system loader path (`libonnxruntime.so`, found through `ld.so`).
//!
//! The core never runs another program to look for it (no Python subprocess): Rust and C users
//! name the library or rely on the system loader.
//!
//! Invariant: `ort::init()` is never called (it panics when the library is missing); the
//! library is loaded with `ort::init_from`, and the outcome, success or a typed error that says
//! how to install ONNX Runtime, is cached for the life of the process.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;

use super::RagError;

/// The ONNX Runtime major line this build targets (`ort`'s `api-31` feature).
pub const ORT_REQUIREMENT: &str = "onnxruntime>=1.31,<2";

static LIBRARY: OnceLock<PathBuf> = OnceLock::new();
static HOST_LIBRARY: OnceLock<PathBuf> = OnceLock::new();
static ENVIRONMENT: OnceLock<Result<(Environment, PathBuf), RagError>> = OnceLock::new();

/// Names the ONNX Runtime library to load (an engine's `retrieval.onnxruntime`), ahead of every
/// other lookup step, `ORT_DYLIB_PATH` included. Only the first call counts, and only before the
/// library is first loaded. Returns whether this path is the one in effect.
pub fn set_library_path(path: impl Into<PathBuf>) -> bool {
    let path = path.into();
    LIBRARY.get_or_init(|| path.clone()) == &path && ENVIRONMENT.get().is_none()
}

/// Registers a library the embedding host found (keel's Python module: its interpreter's
/// `onnxruntime` wheel), tried after `ORT_DYLIB_PATH` and before the executable's directory and
/// the system loader. Only the first call counts, and only before the library is first loaded.
/// Returns whether this path is the registered one and the library is not loaded yet.
pub fn set_host_library_path(path: impl Into<PathBuf>) -> bool {
    let path = path.into();
    HOST_LIBRARY.get_or_init(|| path.clone()) == &path && ENVIRONMENT.get().is_none()
}

/// How to fix a missing runtime, appended to every "not found" error.
fn install_hint() -> String {
    format!(
        "ONNX Runtime was not found: set ORT_DYLIB_PATH to a libonnxruntime.so of version 1.31 \
         or newer (e.g. the one in the onnxruntime wheel, `pip install \"{ORT_REQUIREMENT}\"`, \
         under site-packages/onnxruntime/capi/), or name it in the engine's \
         retrieval.onnxruntime (C: keel_onnxruntime_set_path), or install it where the system \
         loader finds it; keel's Python module finds its own interpreter's onnxruntime wheel"
    )
}

/// `libonnxruntime.so*` files in `dir`, newest name first.
fn libraries_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so"))
        })
        .collect();
    found.sort_unstable_by(|a, b| b.cmp(a));
    found
}

/// Where the library is looked for, in order (see the module docs). `ORT_DYLIB_PATH` wins alone:
/// when it is set, nothing else is tried.
pub fn candidates() -> Result<Vec<PathBuf>, RagError> {
    if let Some(path) = LIBRARY.get() {
        return Ok(vec![path.clone()]);
    }
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            return Err(RagError::Runtime(format!(
                "ORT_DYLIB_PATH is set but {} is not a file; {}",
                path.display(),
                install_hint()
            )));
        }
        return Ok(vec![path]);
    }
    let mut out: Vec<PathBuf> = HOST_LIBRARY.get().cloned().into_iter().collect();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        out.extend(libraries_in(&dir));
    }
    // A bare name makes dlopen search LD_LIBRARY_PATH, the ld.so cache and the default paths.
    out.push(PathBuf::from("libonnxruntime.so"));
    Ok(out)
}

fn load() -> Result<(Environment, PathBuf), RagError> {
    let _span = tracing::info_span!("rag.runtime.load").entered();
    let mut failures = Vec::new();
    for path in candidates()? {
        match ort::init_from(&path) {
            Ok(builder) => {
                let env = builder
                    .with_name("keel")
                    .build()
                    .map_err(|e| RagError::Runtime(format!("ONNX Runtime failed to start: {e}")))?;
                return Ok((env, path));
            }
            Err(e) => failures.push(format!("{}: {e}", path.display())),
        }
    }
    Err(RagError::Runtime(format!(
        "{} (tried: {})",
        install_hint(),
        failures.join("; ")
    )))
}

fn loaded() -> Result<&'static (Environment, PathBuf), RagError> {
    ENVIRONMENT
        .get_or_init(load)
        .as_ref()
        .map_err(RagError::clone)
}

/// The process-wide ONNX Runtime environment, loading the library on first use.
pub fn environment() -> Result<&'static Environment, RagError> {
    loaded().map(|(env, _)| env)
}

/// The path of the loaded ONNX Runtime library (loading it if needed).
pub fn library() -> Result<&'static Path, RagError> {
    loaded().map(|(_, path)| path.as_path())
}

/// Builds a session for `model` with `threads` intra-op threads (0: ONNX Runtime's default),
/// sharing pre-packed weights with the other sessions built with the same `weights`.
pub(crate) fn session(
    model: &Path,
    threads: usize,
    weights: &ort::session::builder::PrepackedWeights,
) -> Result<ort::session::Session, RagError> {
    let env = environment()?;
    let fail = |e: String| RagError::Model(format!("cannot load {}: {e}", model.display()));
    let mut builder = ort::session::Session::builder(env).map_err(|e| fail(e.to_string()))?;
    builder = builder
        .with_optimization_level(ort::session::builder::GraphOptimizationLevel::All)
        .map_err(|e| fail(e.to_string()))?;
    if threads > 0 {
        builder = builder
            .with_intra_threads(threads)
            .map_err(|e| fail(e.to_string()))?;
    }
    builder = builder
        .with_prepacked_weights(weights)
        .map_err(|e| fail(e.to_string()))?;
    builder
        .commit_from_file(model)
        .map_err(|e| fail(e.to_string()))
}
