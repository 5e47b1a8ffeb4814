//! Puts ONNX Runtime where samserve finds it at run time, so that `cargo build`, `cargo test` and `cargo run` work
//! on a fresh machine with no manual step.
//!
//! `ort` is built with `load-dynamic`: the library is opened at run time, never linked. This script fetches the
//! official CPU build from the PyPI wheel `onnxruntime==ORT_VERSION` (with the machine's own `pip`) into a cache
//! folder once, and bakes that path into the binary as the default (`SAMSERVE_BUNDLED_ORT`). A failure here is only a
//! warning: the binary then reports, in one line, how to point it at a library (`--ort-lib` / `SAMSERVE_ORT_LIB`).
//!
//! It also fetches the npm package `onnxruntime-web@ORT_WEB_VERSION` (checked against its published sha512) and keeps
//! the three files the page needs to run the mask decoder in WebAssembly, the `.wasm` gzipped; the binary embeds
//! them (`SAMSERVE_ORT_WEB_DIR`). Without them the page decodes on the server, and says so.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const ORT_VERSION: &str = "1.32.0";
const ORT_WEB_VERSION: &str = "1.31.1";
/// The `dist.integrity` npm publishes for that version's tarball.
const ORT_WEB_SHA512: &str = "5GeH+bWQ+HxM10z7erGlsWqryrwMbSvm/1tkIsKTT48g0fI19VXVVC435t4t7VsPdSQeS7NmuZPXrQ73k82URw==";
/// What the page loads from the package: the WebAssembly-only API and its SIMD + threads runtime.
const ORT_WEB_FILES: [&str; 3] = ["ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    for var in ["SAMSERVE_ORT_CACHE", "XDG_CACHE_HOME", "HOME", "PYTHON"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    place_onnxruntime_web();
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

/// Puts the page's onnxruntime-web files in the cache (fetched once) and points `SAMSERVE_ORT_WEB_DIR` at them;
/// where they cannot be fetched, at empty files in OUT_DIR, which the server takes as "no in-browser decoder".
fn place_onnxruntime_web() {
    let folder = cache_folder().join(format!("onnxruntime-web-{ORT_WEB_VERSION}"));
    let complete = folder.join("complete");
    println!("cargo:rerun-if-changed={}", complete.display());
    let folder = if complete.exists() {
        folder
    } else {
        match fetch_onnxruntime_web(&folder) {
            Ok(()) => folder,
            Err(message) => {
                println!(
                    "cargo:warning=could not fetch onnxruntime-web {ORT_WEB_VERSION} from npm ({message}); the page \
                     will decode clicks on the server"
                );
                let empty = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("no-ort-web");
                fs::create_dir_all(&empty).expect("OUT_DIR is writable");
                for name in ORT_WEB_FILES {
                    fs::write(empty.join(gzipped_name(name)), b"").expect("OUT_DIR is writable");
                }
                empty
            }
        }
    };
    println!("cargo:rustc-env=SAMSERVE_ORT_WEB_DIR={}", folder.display());
    println!("cargo:rustc-env=SAMSERVE_ORT_WEB_VERSION={ORT_WEB_VERSION}");
}

/// The name a file is kept under: the `.wasm` gzipped (a quarter of the size), served as such to browsers.
fn gzipped_name(name: &str) -> String {
    if name.ends_with(".wasm") { format!("{name}.gz") } else { name.to_string() }
}

/// Downloads the npm tarball with Python's standard library (build.rs has no HTTP client; Python is already needed
/// for the ORT wheel), checks its sha512, and extracts the page's files.
fn fetch_onnxruntime_web(folder: &Path) -> Result<(), String> {
    let python = env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
    fs::create_dir_all(folder).map_err(|e| format!("cannot create {}: {e}", folder.display()))?;
    let url = format!("https://registry.npmjs.org/onnxruntime-web/-/onnxruntime-web-{ORT_WEB_VERSION}.tgz");
    let script = format!(
        "import base64, gzip, hashlib, io, pathlib, sys, tarfile, urllib.request\n\
         data = urllib.request.urlopen(sys.argv[1], timeout=120).read()\n\
         if base64.b64encode(hashlib.sha512(data).digest()).decode() != sys.argv[2]:\n    \
             sys.exit('the tarball does not match its published sha512')\n\
         out = pathlib.Path(sys.argv[3])\n\
         with tarfile.open(fileobj=io.BytesIO(data)) as tar:\n    \
             for name in {files:?}:\n        \
                 body = tar.extractfile('package/dist/' + name).read()\n        \
                 if name.endswith('.wasm'):\n            \
                     (out / (name + '.gz')).write_bytes(gzip.compress(body, 9, mtime=0))\n        \
                 else:\n            \
                     (out / name).write_bytes(body)\n\
         (out / 'complete').write_text('')\n",
        files = ORT_WEB_FILES
    );
    let status = Command::new(&python)
        .args(["-c", &script, &url, ORT_WEB_SHA512])
        .arg(folder)
        .status()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("downloading {url} failed")) }
}
