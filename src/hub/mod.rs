//! Models by name (docs/models.md, "Models by name"): what `--model NAME` means and where the files come from.
//!
//! A name is the built-in model (`samserve-s`), a folder path, a catalogue name (`mobilesam`) or
//! `hf:OWNER/REPO[@REVISION][/SUBFOLDER]`. Hub files are fetched once into the Hugging Face cache ([`client`]); a
//! download happens only when a named model is asked for and its files are not cached.

mod archive;
pub mod catalogue;
pub mod client;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

pub use catalogue::{CatalogueEntry, catalogue};
pub use client::{Hub, HubError};

use crate::model::{BUILTIN_MODEL, Manifest, Runtime, SamModel, SessionCounts};

/// A model as named on the command line.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSpec {
    Builtin,
    Folder(PathBuf),
    Catalogue(&'static CatalogueEntry),
    Hub(HubRepo),
}

/// `hf:OWNER/REPO[@REVISION][/SUBFOLDER]`.
#[derive(Debug, Clone, PartialEq)]
pub struct HubRepo {
    pub repo: String,
    pub revision: String,
    pub subfolder: Option<String>,
}

impl PartialEq for CatalogueEntry {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl ModelSpec {
    /// Reads a `--model` value. An existing path is a folder even where a catalogue name is spelt the same.
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        if text.is_empty() {
            bail!("an empty model name");
        }
        if let Some(rest) = text.strip_prefix("hf:") {
            return HubRepo::parse(rest).map(Self::Hub);
        }
        if text == BUILTIN_MODEL {
            return Ok(Self::Builtin);
        }
        let path = Path::new(text);
        if path.exists() || text.contains(['/', '\\']) || text.starts_with('.') {
            return Ok(Self::Folder(path.to_path_buf()));
        }
        if let Some(entry) = catalogue::find(text) {
            return Ok(Self::Catalogue(entry));
        }
        let closest = catalogue::closest_names(text);
        let hint = if closest.is_empty() {
            "see `samserve models list`".to_string()
        } else {
            format!("did you mean {}?", closest.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "))
        };
        bail!(
            "{text:?} is not a catalogue model, a folder, {BUILTIN_MODEL:?} or hf:OWNER/REPO: {hint} (`samserve models list` lists the catalogue)"
        )
    }

    /// The name the model is served under.
    pub fn served_name(&self) -> String {
        match self {
            Self::Builtin => BUILTIN_MODEL.to_string(),
            Self::Folder(folder) => folder.display().to_string(),
            Self::Catalogue(entry) => entry.name.clone(),
            Self::Hub(repo) => repo.served_name(),
        }
    }
}

impl HubRepo {
    fn parse(text: &str) -> Result<Self> {
        let invalid = || anyhow::anyhow!("hf:{text}: expected hf:OWNER/REPO[@REVISION][/SUBFOLDER]");
        let (owner, rest) = text.split_once('/').ok_or_else(invalid)?;
        let name_end = rest.find(['@', '/']).unwrap_or(rest.len());
        let (name, mut rest) = rest.split_at(name_end);
        let mut revision = "main".to_string();
        if let Some(after) = rest.strip_prefix('@') {
            let end = after.find('/').unwrap_or(after.len());
            revision = after[..end].to_string();
            rest = &after[end..];
        }
        let subfolder = rest.trim_matches('/');
        let valid =
            |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !valid(owner) || !valid(name) || revision.is_empty() || subfolder.split('/').any(|p| p == "..") {
            return Err(invalid());
        }
        Ok(Self {
            repo: format!("{owner}/{name}"),
            revision,
            subfolder: (!subfolder.is_empty()).then(|| subfolder.to_string()),
        })
    }

    /// The repo's name, and its subfolder's where one is given: `sam2.1-hiera-tiny-ONNX`.
    fn served_name(&self) -> String {
        let name = self.repo.rsplit('/').next().unwrap_or(&self.repo);
        match &self.subfolder {
            Some(sub) => format!("{name}-{}", sub.replace('/', "-")),
            None => name.to_string(),
        }
    }
}

/// A model whose files are on this machine.
#[derive(Debug, Clone)]
pub enum LocalModel {
    Builtin,
    Folder(PathBuf),
    /// Fetched files: the ONNX graphs chosen in `folder` (a snapshot may hold other variants too).
    Files {
        name: String,
        folder: PathBuf,
        graphs: Vec<PathBuf>,
    },
}

impl LocalModel {
    /// Fetched graphs, which sit in one folder (a snapshot, or an unpacked archive).
    fn fetched(name: String, graphs: Vec<PathBuf>) -> Self {
        let folder = graphs.first().and_then(|g| g.parent()).map(Path::to_path_buf).unwrap_or_default();
        Self::Files { name, folder, graphs }
    }

    pub fn load(&self, runtime: &Runtime, sessions: SessionCounts) -> Result<SamModel> {
        match self {
            Self::Builtin => SamModel::builtin(runtime, sessions).context("loading the built-in model"),
            Self::Folder(folder) => {
                SamModel::load(folder, runtime, sessions).with_context(|| format!("loading {}", folder.display()))
            }
            Self::Files { name, folder, graphs } => {
                let manifest = Manifest::detect_among(name.clone(), folder, graphs.clone())?;
                SamModel::from_manifest(manifest, runtime, sessions).with_context(|| format!("loading {name}"))
            }
        }
    }
}

/// The model's files on this machine, fetching them first where the cache lacks them (`refresh`: ask the hub for
/// the branch's current files even when cached, as `samserve pull` does).
pub fn materialize(spec: &ModelSpec, hub: &Hub, refresh: bool) -> Result<LocalModel> {
    let get = |repo: &str, revision: &str, path: &str| {
        if refresh { hub.refresh(repo, revision, path) } else { hub.fetch(repo, revision, path) }
    };
    match spec {
        ModelSpec::Builtin => Ok(LocalModel::Builtin),
        ModelSpec::Folder(folder) if !folder.exists() => {
            let text = folder.to_string_lossy();
            let repo_like = HubRepo::parse(&text).is_ok_and(|repo| repo.subfolder.is_none());
            let hint = if repo_like { format!(" (a Hugging Face repo is named hf:{text})") } else { String::new() };
            bail!("{}: no such model folder{hint}", folder.display())
        }
        ModelSpec::Folder(folder) => Ok(LocalModel::Folder(folder.clone())),
        ModelSpec::Catalogue(entry) => {
            let mut fetched = Vec::new();
            for path in entry.downloads() {
                fetched.push(get(&entry.repo, &entry.revision, path)?);
            }
            let graphs = match &entry.archive {
                Some(_) => onnx_files_under(&archive::unpacked(&fetched[0], &unpacked_root(hub))?)?,
                None => fetched.into_iter().filter(|f| is_onnx(&f.to_string_lossy())).collect(),
            };
            Ok(LocalModel::fetched(entry.name.clone(), graphs))
        }
        ModelSpec::Hub(repo) => {
            let listing = hub.listing(&repo.repo, &repo.revision)?;
            let chosen = choose_files(&listing, repo.subfolder.as_deref())
                .with_context(|| format!("hf:{}@{}", repo.repo, repo.revision))?;
            let mut graphs = Vec::new();
            for path in &chosen {
                let file = get(&repo.repo, &repo.revision, path)?;
                if is_onnx(path) {
                    graphs.push(file);
                }
            }
            Ok(LocalModel::fetched(repo.served_name(), graphs))
        }
    }
}

/// Parses, fetches what is missing and loads.
pub fn load(text: &str, hub: &Hub, runtime: &Runtime, sessions: SessionCounts) -> Result<SamModel> {
    materialize(&ModelSpec::parse(text)?, hub, false)?.load(runtime, sessions)
}

/// The catalogue model a newcomer is pointed at: small, fast on a CPU, real SAM masks.
pub const RECOMMENDED_MODEL: &str = "mobilesam";

/// What serving the built-in model tells its user (log and page).
pub fn builtin_model_notice() -> String {
    let size = catalogue::find(RECOMMENDED_MODEL).map(|e| format!("{:.0} MB, ", e.size_mb)).unwrap_or_default();
    format!(
        "{BUILTIN_MODEL} is a small demo model trained on synthetic shapes: on real photos its masks are rough blobs. \
         For real Segment Anything masks: samserve serve --model {RECOMMENDED_MODEL} ({size}downloaded once; \
         `samserve models list` shows the others)"
    )
}

/// Where zip archives are unpacked: beside the hub cache, not in it (its layout is huggingface_hub's).
fn unpacked_root(hub: &Hub) -> PathBuf {
    hub.cache.parent().unwrap_or(&hub.cache).join("samserve-unpacked")
}

/// Removes what an archive blob was unpacked into, if anything.
pub fn remove_unpacked(hub: &Hub, blob: &Path) -> std::io::Result<()> {
    let Some(key) = blob.file_name() else { return Ok(()) };
    let folder = unpacked_root(hub).join(key);
    if folder.is_dir() { std::fs::remove_dir_all(folder) } else { Ok(()) }
}

fn is_onnx(path: &str) -> bool {
    path.to_ascii_lowercase().ends_with(".onnx")
}

/// Variant suffixes of the transformers.js / optimum uploads (`vision_encoder_fp16.onnx`, ...): the plain float32
/// files are taken when a folder holds several variants.
const VARIANTS: [&str; 8] = ["_fp16", "_quantized", "_int8", "_uint8", "_q4", "_q4f16", "_bnb4", "_fp32"];

/// The files of a repo listing (paths with `/`) that make the model in `subfolder` (the repo's root when `None`):
/// its `.onnx` graphs, the plain float32 ones where variants sit beside them, and each graph's external data
/// (`NAME.onnx_data`, `NAME.onnx.data`, `NAME_data.bin`, ...: the files named after the graph's stem).
pub fn choose_files(listing: &[String], subfolder: Option<&str>) -> Result<Vec<String>> {
    let prefix = subfolder.map(|s| format!("{}/", s.trim_matches('/'))).unwrap_or_default();
    let here: Vec<(&str, &str)> = listing
        .iter()
        .filter_map(|path| path.strip_prefix(&prefix).map(|name| (path.as_str(), name)))
        .filter(|(_, name)| !name.contains('/'))
        .collect();
    let graphs: Vec<(&str, &str)> = here.iter().copied().filter(|(_, name)| is_onnx(name)).collect();
    let stem = |name: &str| name[..name.len() - ".onnx".len()].to_string();
    let plain: Vec<(&str, &str)> =
        graphs.iter().copied().filter(|(_, name)| !VARIANTS.iter().any(|v| stem(name).ends_with(v))).collect();
    let chosen = if plain.is_empty() { graphs.clone() } else { plain };
    if chosen.is_empty() {
        let subfolders: Vec<&str> =
            listing.iter().filter(|p| is_onnx(p)).filter_map(|p| p.rsplit_once('/').map(|(dir, _)| dir)).collect();
        let mut hint = String::new();
        if let Some(first) = subfolders.first() {
            hint = format!(" (ONNX files are in {first:?}: add /{first} to the name)");
        }
        bail!("no ONNX files in {}{hint}", if prefix.is_empty() { "the repository's root" } else { &prefix });
    }
    let mut files = Vec::new();
    for (path, name) in &chosen {
        files.push(path.to_string());
        let stem = stem(name);
        for (other, other_name) in &here {
            let data = other_name
                .strip_prefix(stem.as_str())
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with("_data"));
            if data && !is_onnx(other_name) {
                files.push(other.to_string());
            }
        }
    }
    Ok(files)
}

/// The `.onnx` files in an unpacked archive (it may wrap them in a folder of its own).
fn onnx_files_under(folder: &Path) -> Result<Vec<PathBuf>> {
    let files = client::files_under(folder).with_context(|| format!("reading {}", folder.display()))?;
    let found: Vec<PathBuf> = files.iter().filter(|f| is_onnx(f)).map(|f| folder.join(f)).collect();
    let parents: std::collections::BTreeSet<_> = found.iter().filter_map(|f| f.parent()).collect();
    if parents.len() > 1 {
        bail!("{}: the archive's ONNX files are in several folders", folder.display());
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Family;

    #[test]
    fn the_catalogue_is_well_formed() {
        let entries = catalogue();
        assert!(catalogue::find(RECOMMENDED_MODEL).is_some());
        let layouts = ["samexporter", "samexporter-sam2", "transformers", "edgesam", "sam-hq", "efficientsam"];
        for (index, entry) in entries.iter().enumerate() {
            let name = &entry.name;
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b)),
                "{name}: lowercase letters, digits, '-' and '.' only"
            );
            assert!(entries[..index].iter().all(|other| &other.name != name), "{name} is listed twice");
            assert_eq!(ModelSpec::parse(name).unwrap(), ModelSpec::Catalogue(entry), "{name} parses as itself");
            assert!(Family::from_name(&entry.family).is_some(), "{name}: unknown family {}", entry.family);
            assert!(HubRepo::parse(&entry.repo).is_ok(), "{name}: repo {:?} is not OWNER/REPO", entry.repo);
            assert!(
                client::is_commit(&entry.revision) || entry.revision == "main",
                "{name}: revision must be a full commit hash or main"
            );
            match &entry.archive {
                Some(archive) => {
                    assert!(entry.files.is_empty(), "{name}: files or archive, not both");
                    assert!(archive.ends_with(".zip"), "{name}: archives are zips");
                }
                None => {
                    let graphs = entry.files.iter().filter(|f| is_onnx(f)).count();
                    assert_eq!(graphs, 2, "{name}: one encoder and one decoder");
                    // What the files list is what an hf: name of the same folder would choose, external data included.
                    let folder = entry.files[0].rsplit_once('/').map(|(dir, _)| dir);
                    let mut chosen = choose_files(&entry.files, folder).unwrap();
                    let mut listed = entry.files.clone();
                    chosen.sort();
                    listed.sort();
                    assert_eq!(chosen, listed, "{name}: every non-ONNX file is a graph's external data");
                }
            }
            assert!(entry.size_mb > 0.0, "{name}: size");
            assert!(!entry.license.is_empty() && !entry.title.is_empty(), "{name}: license and title");
            assert!(entry.source.starts_with("https://"), "{name}: source");
            assert!(layouts.contains(&entry.layout.as_str()), "{name}: unknown layout {}", entry.layout);
            assert!(entry.supports.iter().any(|s| s == "points"), "{name}: every decoder takes points");
            for kind in &entry.supports {
                assert!(["points", "box", "mask_input", "multimask"].contains(&kind.as_str()), "{name}: {kind}?");
            }
        }
    }

    #[test]
    fn model_names_parse() {
        assert_eq!(ModelSpec::parse("samserve-s").unwrap(), ModelSpec::Builtin);
        assert_eq!(ModelSpec::parse("./models/x").unwrap(), ModelSpec::Folder("./models/x".into()));
        let hub = |text| match ModelSpec::parse(text).unwrap() {
            ModelSpec::Hub(repo) => (repo.repo, repo.revision, repo.subfolder),
            other => panic!("{text}: {other:?}"),
        };
        assert_eq!(hub("hf:Acly/MobileSAM"), ("Acly/MobileSAM".into(), "main".into(), None));
        assert_eq!(
            hub("hf:onnx-community/sam2.1-hiera-tiny-ONNX@814a066640debee5a91e70aa401fb8e17e030503/onnx"),
            (
                "onnx-community/sam2.1-hiera-tiny-ONNX".into(),
                "814a066640debee5a91e70aa401fb8e17e030503".into(),
                Some("onnx".into())
            )
        );
        assert_eq!(hub("hf:a/b/sub/dir"), ("a/b".into(), "main".into(), Some("sub/dir".into())));
        for bad in ["hf:", "hf:owner", "hf:/repo", "hf:a/b@", "hf:a/b/../c", "hf:a b/c", ""] {
            assert!(ModelSpec::parse(bad).is_err(), "{bad:?} should be refused");
        }
        let error = ModelSpec::parse("mobilsam").unwrap_err().to_string();
        assert!(error.contains("did you mean `mobilesam`"), "{error}");
    }

    #[test]
    fn the_plain_graphs_and_their_external_data_are_chosen() {
        let listing: Vec<String> = [
            "README.md",
            "config.json",
            "onnx/vision_encoder.onnx",
            "onnx/vision_encoder.onnx_data",
            "onnx/vision_encoder_fp16.onnx",
            "onnx/vision_encoder_fp16.onnx_data",
            "onnx/prompt_encoder_mask_decoder.onnx",
            "onnx/prompt_encoder_mask_decoder_quantized.onnx",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            choose_files(&listing, Some("onnx")).unwrap(),
            ["onnx/vision_encoder.onnx", "onnx/vision_encoder.onnx_data", "onnx/prompt_encoder_mask_decoder.onnx"]
        );
        let error = choose_files(&listing, None).unwrap_err().to_string();
        assert!(error.contains("add /onnx"), "{error}");
        let samexporter = ["vit_h.encoder.onnx", "vit_h.encoder_data.bin", "vit_h.decoder.onnx"].map(String::from);
        assert_eq!(
            choose_files(&samexporter, None).unwrap(),
            ["vit_h.encoder.onnx", "vit_h.encoder_data.bin", "vit_h.decoder.onnx"]
        );
    }
}
