//! Puts ONNX Runtime where samserve finds it at run time, so that `cargo build`, `cargo test` and `cargo run` work
//! on a fresh machine with no manual step.
//!
//! `ort` is built with `load-dynamic`: the library is opened at run time, never linked. This script fetches the
//! official CPU build from the PyPI wheel `onnxruntime==ORT_VERSION` (with the machine's own `pip`) into a cache
//! folder once, and bakes that path into the binary as the default (`SAMSERVE_BUNDLED_ORT`). A failure here is only a
//! warning: the binary then reports, in one line, how to point it at a library (`--ort-lib` / `SAMSERVE_ORT_LIB`).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const ORT_VERSION: &str = "1.32.0";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    for var in ["SAMSERVE_ORT_CACHE", "XDG_CACHE_HOME", "HOME", "PYTHON"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let folder = cache_folder().join(format!("onnxruntime-{ORT_VERSION}"));
    let library = folder.join(library_file_name());
    println!("cargo:rustc-env=SAMSERVE_BUNDLED_ORT={}", library.display());
    println!("cargo:rerun-if-changed={}", library.display());
    if library.exists() {
        return;
    }
    if let Err(message) = fetch_from_wheel(&folder, &library) {
        println!(
            "cargo:warning=could not fetch ONNX Runtime {ORT_VERSION} from PyPI ({message}); \
             samserve will need --ort-lib or SAMSERVE_ORT_LIB at run time"
        );
    }
}

fn cache_folder() -> PathBuf {
    if let Some(dir) = env::var_os("SAMSERVE_ORT_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("samserve");
    }
    if let Some(home) = env::var_os("HOME") {
        return PathBuf::from(home).join(".cache").join("samserve");
    }
    PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
}

fn library_file_name() -> String {
    match env::var("CARGO_CFG_TARGET_OS").as_deref() {
        Ok("macos") => format!("libonnxruntime.{ORT_VERSION}.dylib"),
        Ok("windows") => "onnxruntime.dll".to_string(),
        _ => format!("libonnxruntime.so.{ORT_VERSION}"),
    }
}

/// `pip download` the wheel (no dependencies, binary only), then unzip the one library file out of it.
fn fetch_from_wheel(folder: &Path, library: &Path) -> Result<(), String> {
    let python = env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
    let download = folder.join("wheel");
    fs::create_dir_all(&download).map_err(|e| format!("cannot create {}: {e}", download.display()))?;
    let status = Command::new(&python)
        .args(["-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"])
        .arg(format!("onnxruntime=={ORT_VERSION}"))
        .arg("--dest")
        .arg(&download)
        .status()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    if !status.success() {
        return Err(format!("`{python} -m pip download onnxruntime=={ORT_VERSION}` failed"));
    }
    let script = format!(
        "import glob, shutil, sys, zipfile\n\
         wheel = glob.glob(sys.argv[1] + '/onnxruntime-*.whl')[0]\n\
         with zipfile.ZipFile(wheel) as z, z.open('onnxruntime/capi/{name}') as src, \
         open(sys.argv[2] + '.part', 'wb') as dst:\n    shutil.copyfileobj(src, dst)\n",
        name = library_file_name()
    );
    let status = Command::new(&python)
        .args(["-c", &script])
        .arg(&download)
        .arg(library)
        .status()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    if !status.success() {
        return Err("could not extract the library from the wheel".to_string());
    }
    let partial = PathBuf::from(format!("{}.part", library.display()));
    fs::rename(&partial, library).map_err(|e| format!("cannot move {}: {e}", partial.display()))?;
    let _ = fs::remove_dir_all(&download);
    Ok(())
}
