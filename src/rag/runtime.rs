//! Finding and loading ONNX Runtime, once per process, without any manual step.
//!
//! `ort` is built with `load-dynamic`: nothing is linked or downloaded at build time, and the
//! shared library is looked up at run time in this order:
//! 1. `ORT_DYLIB_PATH` (a path to `libonnxruntime.so*`; if set it must work),
//! 2. the `onnxruntime` wheel of a Python interpreter: the one the embedding host registered
//!    with [`set_python_interpreter`] (keel's Python module registers `sys.executable`), else
//!    `KEEL_PYTHON`, else the active virtualenv's (`VIRTUAL_ENV`), else `python3` on `PATH`; the package is located with
//!    `importlib.util.find_spec`, which does not import it, and `capi/libonnxruntime.so.*` is used,
//! 3. `libonnxruntime.so*` next to the running executable,
//! 4. the system loader path (`libonnxruntime.so`, found through `ld.so`).
//!
//! Invariant: `ort::init()` is never called (it panics when the library is missing); the
//! library is loaded with `ort::init_from`, and the outcome, success or a typed error that says
//! how to install ONNX Runtime, is cached for the life of the process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use ort::environment::Environment;

use super::RagError;

/// The ONNX Runtime major line this build targets (`ort`'s `api-31` feature).
pub const ORT_REQUIREMENT: &str = "onnxruntime>=1.31,<2";

static PYTHON: OnceLock<PathBuf> = OnceLock::new();
static LIBRARY: OnceLock<PathBuf> = OnceLock::new();
static ENVIRONMENT: OnceLock<Result<(Environment, PathBuf), RagError>> = OnceLock::new();

/// Registers the Python interpreter whose `onnxruntime` wheel is searched (step 2). Only the
/// first call counts; it must come before the first model is opened to have an effect.
pub fn set_python_interpreter(path: impl Into<PathBuf>) {
    let _ = PYTHON.set(path.into());
}

/// Names the ONNX Runtime library to load (an engine's `retrieval.onnxruntime`), ahead of every
/// other lookup step, `ORT_DYLIB_PATH` included. Only the first call counts, and only before the
/// library is first loaded. Returns whether this path is the one in effect.
pub fn set_library_path(path: impl Into<PathBuf>) -> bool {
    let path = path.into();
    LIBRARY.get_or_init(|| path.clone()) == &path && ENVIRONMENT.get().is_none()
}

/// How to fix a missing runtime, appended to every "not found" error.
fn install_hint() -> String {
    format!(
        "ONNX Runtime was not found: install it with `pip install \"{ORT_REQUIREMENT}\"` into the \
         Python on PATH (or set KEEL_PYTHON to that interpreter), or set ORT_DYLIB_PATH to a \
         libonnxruntime.so of version 1.31 or newer"
    )
}

/// The Python snippet that prints the wheel's library paths without importing onnxruntime.
const FIND_WHEEL: &str = concat!(
    "import glob, importlib.util, os\n",
    "s = importlib.util.find_spec('onnxruntime')\n",
    "ds = (s.submodule_search_locations or []) if s else []\n",
    "libs = [p for d in ds for p in glob.glob(os.path.join(d, 'capi', 'libonnxruntime.so*'))]\n",
    "print('\\n'.join(sorted(libs, reverse=True)))\n",
);

/// The `onnxruntime` wheel's libraries as seen by `python`, newest name first; empty when the
/// interpreter or the package is missing.
pub fn python_wheel_libraries(python: &Path) -> Vec<PathBuf> {
    let Ok(out) = Command::new(python).arg("-c").arg(FIND_WHEEL).output() else {
        return Vec::new();
    };
    if !out.status.success() {
        return Vec::new();
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .collect()
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
    let python = PYTHON
        .get()
        .cloned()
        .or_else(|| std::env::var_os("KEEL_PYTHON").map(PathBuf::from))
        .or_else(|| {
            std::env::var_os("VIRTUAL_ENV")
                .map(|v| PathBuf::from(v).join("bin").join("python"))
                .filter(|p| p.is_file())
        })
        .unwrap_or_else(|| PathBuf::from("python3"));
    let mut out = python_wheel_libraries(&python);
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

/// Builds a session for `model` with `threads` intra-op threads (0: ONNX Runtime's default).
pub(crate) fn session(model: &Path, threads: usize) -> Result<ort::session::Session, RagError> {
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
    builder
        .commit_from_file(model)
        .map_err(|e| fail(e.to_string()))
}
