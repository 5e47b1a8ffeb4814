//! Models published as a zip archive: unpacked once, beside the hub cache, into a folder named by the archive's
//! hash (so a new version of the archive is a new folder and an unpacked one is never half-written).

use std::path::{Path, PathBuf};

use super::client::HubError;

/// The folder holding `archive`'s files, unpacking it on first use under `unpacked_root`.
pub fn unpacked(archive: &Path, unpacked_root: &Path) -> Result<PathBuf, HubError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |error| HubError::Io { path, error }
    };
    // The blob's name is its SHA-256, checked at download.
    let blob = archive.canonicalize().map_err(io(archive))?;
    let key = blob.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let target = unpacked_root.join(&key);
    if target.is_dir() {
        return Ok(target);
    }
    let partial = unpacked_root.join(format!("{key}.partial-{}", std::process::id()));
    std::fs::create_dir_all(&partial).map_err(io(&partial))?;
    let result = extract(&blob, &partial);
    if let Err(error) = result {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(error);
    }
    // Another process may have finished the same archive first: its folder is as good as ours.
    if std::fs::rename(&partial, &target).is_err() && target.is_dir() {
        let _ = std::fs::remove_dir_all(&partial);
    }
    target
        .is_dir()
        .then_some(target.clone())
        .ok_or_else(|| HubError::Fetch(format!("cannot unpack into {}", target.display())))
}

fn extract(archive: &Path, into: &Path) -> Result<(), HubError> {
    let broken =
        |message: String| HubError::Fetch(format!("{}: not a readable zip archive: {message}", archive.display()));
    let file = std::fs::File::open(archive).map_err(|error| HubError::Io { path: archive.to_path_buf(), error })?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| broken(e.to_string()))?;
    for index in 0..zip.len() {
        let mut entry = zip.by_index(index).map_err(|e| broken(e.to_string()))?;
        // enclosed_name refuses absolute paths and `..`: an archive cannot write outside its folder.
        let Some(relative) = entry.enclosed_name() else {
            return Err(broken(format!("entry {:?} points outside the archive's folder", entry.name())));
        };
        let path = into.join(relative);
        let io = |error| HubError::Io { path: path.clone(), error };
        if entry.is_dir() {
            std::fs::create_dir_all(&path).map_err(io)?;
        } else if entry.is_file() {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            let mut out = std::fs::File::create(&path).map_err(io)?;
            std::io::copy(&mut entry, &mut out).map_err(io)?;
        }
    }
    Ok(())
}
