//! The catalogue: published models known by a short name (`mobilesam`, `sam2.1-tiny`, ...), as data in
//! `catalogue.toml`, each pointing at its files on the Hugging Face Hub as their publisher uploaded them.

use std::sync::OnceLock;

use serde::Deserialize;

/// One published model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogueEntry {
    /// What users type: `--model NAME`, `samserve pull NAME`.
    pub name: String,
    /// `sam`, `sam2` or `efficientsam` (the graphs tell at load; this is for the listing).
    pub family: String,
    pub title: String,
    /// The Hugging Face repo id, `OWNER/REPO`.
    pub repo: String,
    /// A full commit hash where a public record gives one, else a branch (`main`).
    pub revision: String,
    /// Paths in the repo: the encoder, the decoder and their external-data files. Empty with `archive`.
    #[serde(default)]
    pub files: Vec<String>,
    /// A zip in the repo whose ONNX files form the model (unpacked after download).
    pub archive: Option<String>,
    /// The download, in MB.
    pub size_mb: f64,
    pub license: String,
    /// Where the model is described (model card or upstream repository).
    pub source: String,
    /// Whose export the files are (`samexporter`, `transformers`, ...), as docs/models.md names the layouts.
    pub layout: String,
    /// The prompts the decoder takes: `points`, `box`, `mask_input`, `multimask`.
    pub supports: Vec<String>,
}

impl CatalogueEntry {
    /// The paths in the repo to download: the files, or the archive.
    pub fn downloads(&self) -> Vec<&str> {
        match &self.archive {
            Some(archive) => vec![archive.as_str()],
            None => self.files.iter().map(String::as_str).collect(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogueFile {
    model: Vec<CatalogueEntry>,
}

/// Every entry, in the file's order.
pub fn catalogue() -> &'static [CatalogueEntry] {
    static CATALOGUE: OnceLock<Vec<CatalogueEntry>> = OnceLock::new();
    CATALOGUE.get_or_init(|| {
        // A test checks the file; a binary with a broken catalogue is a build defect, not a user error.
        let file: CatalogueFile =
            toml::from_str(include_str!("catalogue.toml")).expect("src/hub/catalogue.toml parses");
        file.model
    })
}

pub fn find(name: &str) -> Option<&'static CatalogueEntry> {
    catalogue().iter().find(|entry| entry.name.eq_ignore_ascii_case(name))
}

/// Catalogue names close to a mistyped one, closest first (at most three).
pub fn closest_names(name: &str) -> Vec<&'static str> {
    let typed = name.to_ascii_lowercase();
    let mut scored: Vec<(f64, &str)> = catalogue()
        .iter()
        .map(|entry| (strsim::jaro_winkler(&typed, &entry.name), entry.name.as_str()))
        .filter(|(score, _)| *score > 0.7)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.into_iter().take(3).map(|(_, name)| name).collect()
}
