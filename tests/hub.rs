//! Models by name against a local stand-in of the Hugging Face Hub (tests/common/mock_hub.rs, the protocol the
//! `hf-hub` crate speaks), reached through `HF_ENDPOINT` as a mirror would be: pull by catalogue name and by `hf:`,
//! the cache with the hub gone, offline mode, a corrupted byte, a dropped connection, the hub's errors, a zip.
//!
//! The mock serves the fixture models under the catalogue's real repo names and revisions, so the test proves the
//! catalogue's own entries resolve and the files load as their publishers lay them out.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::mock_hub::MockHub;
use samserve::hub::catalogue;
use samserve::mask::rle;

/// A Hugging Face home of its own and a hub to talk to.
struct Setup {
    home: PathBuf,
    endpoint: String,
}

impl Setup {
    fn new(label: &str, hub: &MockHub) -> Self {
        Self { home: common::temp_dir(label), endpoint: hub.endpoint() }
    }

    fn run(&self, args: &[&str], extra_env: &[(&str, &str)]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_samserve"));
        command.args(common::runtime_args()).args(args);
        for name in ["HF_HUB_CACHE", "HF_TOKEN", "HF_HUB_OFFLINE", "HF_TOKEN_PATH", "XDG_CACHE_HOME"] {
            command.env_remove(name);
        }
        command.env("HF_HOME", &self.home).env("HF_ENDPOINT", &self.endpoint).env("RUST_LOG", "warn");
        command.envs(extra_env.iter().copied());
        command.output().expect("running samserve")
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str], extra_env: &[(&str, &str)]) -> String {
        let output = self.run(args, extra_env);
        assert!(output.status.success(), "samserve {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    }

    /// Runs and expects failure with one `error:` line; returns that line.
    fn error(&self, args: &[&str], extra_env: &[(&str, &str)]) -> String {
        let output = self.run(args, extra_env);
        assert!(!output.status.success(), "samserve {args:?} should fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let errors: Vec<&str> = stderr.lines().filter(|line| line.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "one error line expected:\n{stderr}");
        errors[0].to_string()
    }

    fn repo_folder(&self, repo: &str) -> PathBuf {
        self.home.join("hub").join(format!("models--{}", repo.replace('/', "--")))
    }
}

fn fixture_model(name: &str) -> PathBuf {
    common::fixtures().join("models").join(name)
}

fn read(folder: &Path, file: &str) -> Vec<u8> {
    std::fs::read(folder.join(file)).unwrap()
}

fn entry(name: &str) -> &'static samserve::hub::CatalogueEntry {
    catalogue().iter().find(|e| e.name == name).unwrap()
}

/// The catalogue's MobileSAM entry at its pinned revision, with the samexporter fixture's files under its names.
fn host_mobilesam(hub: &MockHub) {
    let entry = entry("mobilesam");
    let folder = fixture_model("samexporter-hwc");
    let files = [
        (entry.files[0].as_str(), read(&folder, "samserve_amg.encoder.onnx")),
        (entry.files[1].as_str(), read(&folder, "samserve_amg.decoder.onnx")),
        ("README.md", b"# MobileSAM\n".to_vec()),
    ];
    hub.add_repo_at(&entry.repo, &entry.revision, &files);
}

const SAM2_REPO: &str = "onnx-community/sam2.1-hiera-tiny-ONNX";

/// A transformers.js upload: float32 and fp16 variants under onnx/, metadata at the root.
fn host_sam2_transformers(hub: &MockHub) -> String {
    hub.add_repo(SAM2_REPO, &[("config.json", b"{\"model_type\": \"sam2\"}".to_vec())]);
    hub.add_folder(SAM2_REPO, &fixture_model("sam2-transformers-fp16"), "onnx");
    hub.add_folder(SAM2_REPO, &fixture_model("sam2-transformers"), "onnx")
}

/// `segment --json` on landscape.png with one click: the masks' RLE counts.
fn masks(setup: &Setup, model: &str, extra_env: &[(&str, &str)]) -> Vec<String> {
    let out = setup.home.join(format!("segment-{}.json", model.replace(['/', ':', '@'], "_")));
    let image = common::fixtures().join("images").join("landscape.png");
    let args = ["segment", "--model", model, image.to_str().unwrap(), "--point", "475,365", "--json"];
    setup.ok(&[&args[..], &["--out", out.to_str().unwrap()]].concat(), extra_env);
    let result: serde_json::Value = serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap();
    let masks = result["results"][0]["masks"].as_array().expect("masks in the result").clone();
    assert!(!masks.is_empty());
    masks
        .iter()
        .map(|mask| {
            let coco: rle::CocoRle = serde_json::from_value(mask["rle"].clone()).expect("a COCO RLE mask");
            assert!(rle::decode(&coco).is_ok_and(|m| m.area() > 0), "a mask");
            mask["rle"].to_string()
        })
        .collect()
}

#[test]
fn a_catalogue_model_is_pulled_once_then_served_from_the_cache_with_the_hub_gone() {
    let hub = MockHub::start();
    host_mobilesam(&hub);
    let setup = Setup::new("hub-pull", &hub);
    let listed = setup.ok(&["models", "list"], &[]);
    let row = |listing: &str| listing.lines().find(|l| l.starts_with("mobilesam ")).unwrap().to_string();
    assert!(row(&listed).contains(" no "), "{listed}");

    let pulled = setup.ok(&["pull", "mobilesam"], &[]);
    assert!(pulled.contains("mobilesam: ready"), "{pulled}");
    let snapshot = setup.repo_folder(&entry("mobilesam").repo).join("snapshots").join(&entry("mobilesam").revision);
    assert!(snapshot.join(&entry("mobilesam").files[0]).is_file(), "the Hugging Face cache layout");
    assert!(row(&setup.ok(&["models", "list"], &[])).contains(" yes "));

    let local = masks(&setup, fixture_model("samexporter-hwc").to_str().unwrap(), &[]);
    drop(hub);
    assert_eq!(masks(&setup, "mobilesam", &[]), local, "the hub's files answer as the same files in a folder");

    let removed = setup.ok(&["models", "rm", "mobilesam"], &[]);
    assert!(removed.contains("mobilesam: removed"), "{removed}");
    assert!(row(&setup.ok(&["models", "list"], &[])).contains(" no "));
    let blobs = setup.repo_folder(&entry("mobilesam").repo).join("blobs");
    let left: Vec<_> = std::fs::read_dir(blobs).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    assert!(left.iter().all(|name| name.to_string_lossy().ends_with(".lock")), "blobs left: {left:?}");
}

#[test]
fn an_hf_name_with_revision_and_subfolder_answers_as_the_files_in_a_folder_and_works_offline() {
    let hub = MockHub::start();
    let commit = host_sam2_transformers(&hub);
    let setup = Setup::new("hub-hf", &hub);
    let name = format!("hf:{SAM2_REPO}@{commit}/onnx");
    let local = masks(&setup, fixture_model("sam2-transformers").to_str().unwrap(), &[]);
    assert_eq!(masks(&setup, &name, &[]), local);
    let fetched: Vec<String> = hub.requests().into_iter().filter(|r| r.contains("/resolve/")).collect();
    assert!(
        fetched.iter().all(|r| !r.contains("fp16") && !r.contains("config.json")),
        "only the float32 pair: {fetched:?}"
    );
    assert!(fetched.iter().any(|r| r.contains("onnx/vision_encoder.onnx")), "{fetched:?}");

    hub.clear_requests();
    assert_eq!(masks(&setup, &name, &[("HF_HUB_OFFLINE", "1")]), local);
    assert_eq!(hub.requests(), Vec::<String>::new(), "offline: nothing asked of the hub");
    // The branch name works too, and from the cache once it has been resolved.
    assert_eq!(masks(&setup, &format!("hf:{SAM2_REPO}/onnx"), &[]), local);
}

#[test]
fn offline_without_the_files_says_so_and_asks_nothing() {
    let hub = MockHub::start();
    host_mobilesam(&hub);
    let setup = Setup::new("hub-offline", &hub);
    let line = setup.error(&["pull", "mobilesam"], &[("HF_HUB_OFFLINE", "1")]);
    assert!(line.contains("HF_HUB_OFFLINE") && line.contains("not in the Hugging Face cache"), "{line}");
    assert_eq!(hub.requests(), Vec::<String>::new());
}

#[test]
fn a_corrupted_download_is_refused_and_leaves_nothing_that_looks_complete() {
    let hub = MockHub::start();
    host_mobilesam(&hub);
    let entry = entry("mobilesam");
    let decoder = &entry.files[1];
    hub.corrupt_once(&entry.repo, decoder);
    let setup = Setup::new("hub-corrupt", &hub);
    let line = setup.error(&["pull", "mobilesam"], &[]);
    assert!(line.contains("does not match the hash") && line.contains(decoder), "{line}");
    let etag = hub.etag(&entry.repo, decoder);
    let repo = setup.repo_folder(&entry.repo);
    assert!(!repo.join("blobs").join(&etag).exists(), "the corrupt blob is removed");
    assert!(!repo.join("snapshots").join(&entry.revision).join(decoder).exists(), "and its snapshot link");
    let listed = setup.ok(&["models", "list"], &[]);
    assert!(!listed.lines().any(|l| l.starts_with("mobilesam ") && l.contains(" yes ")), "{listed}");
    // The next try downloads it again, intact.
    setup.ok(&["pull", "mobilesam"], &[]);
    assert!(repo.join("blobs").join(&etag).is_file());
}

#[test]
fn a_dropped_connection_resumes_where_it_stopped() {
    let hub = MockHub::start();
    host_mobilesam(&hub);
    let entry = entry("mobilesam");
    let encoder = &entry.files[0];
    hub.drop_halfway_once(&entry.repo, encoder);
    let setup = Setup::new("hub-resume", &hub);
    setup.ok(&["pull", "mobilesam"], &[]);
    let etag = hub.etag(&entry.repo, encoder);
    let resumed = hub.request_log().into_iter().any(|r| {
        r.path.ends_with(&etag) && r.range.as_deref().is_some_and(|range| range != "bytes=0-" && range != "bytes=0-0")
    });
    assert!(resumed, "a Range request from the middle: {:?}", hub.request_log());
    let blob = setup.repo_folder(&entry.repo).join("blobs").join(&etag);
    assert_eq!(std::fs::read(blob).unwrap(), read(&fixture_model("samexporter-hwc"), "samserve_amg.encoder.onnx"));
}

#[test]
fn the_hubs_refusals_are_one_clear_line_each() {
    let hub = MockHub::start();
    let setup = Setup::new("hub-errors", &hub);
    let line = setup.error(&["pull", "hf:nobody/no-such-repo"], &[]);
    assert!(line.contains("nobody/no-such-repo") && line.contains("401") && line.contains("HF_TOKEN"), "{line}");

    // The pinned revision without the decoder: a file the hub does not have.
    let entry = entry("mobilesam");
    let encoder = read(&fixture_model("samexporter-hwc"), "samserve_amg.encoder.onnx");
    hub.add_repo_at(&entry.repo, &entry.revision, &[(entry.files[0].as_str(), encoder)]);
    let line = setup.error(&["pull", "mobilesam"], &[]);
    assert!(line.contains(&entry.files[1]) && line.contains("404"), "{line}");

    let gated = "meta/gated-sam";
    hub.add_folder(gated, &fixture_model("samexporter-hwc"), "");
    hub.require_token(gated, "hf_secret");
    let line = setup.error(&["pull", &format!("hf:{gated}")], &[]);
    assert!(line.contains("401") && line.contains("HF_TOKEN"), "{line}");
    setup.ok(&["pull", &format!("hf:{gated}")], &[("HF_TOKEN", "hf_secret")]);

    let args = ["segment", "--model", "Acly/MobileSAM", "x.png", "--point", "1,1", "--out", "x-mask.png"];
    let line = setup.error(&args, &[]);
    assert!(line.contains("no such model folder") && line.contains("hf:Acly/MobileSAM"), "{line}");
    let line = setup.error(&["pull", "mobilsam"], &[]);
    assert!(line.contains("did you mean `mobilesam`"), "{line}");
    let line = setup.error(&["serve", "--model", "sam2-tni"], &[]);
    assert!(line.contains("did you mean `sam2-tiny`"), "{line}");
}

#[test]
fn a_model_published_as_a_zip_is_unpacked_once() {
    let entry = entry("sam-vit-b");
    let archive = entry.archive.as_deref().unwrap();
    let stem = archive.trim_end_matches(".zip");
    let folder = fixture_model("samexporter-single");
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (inside, file) in [("encoder", "samserve_amg.encoder.onnx"), ("decoder", "samserve_amg.decoder.onnx")] {
        zip.start_file(format!("{stem}.{inside}.onnx"), options).unwrap();
        zip.write_all(&read(&folder, file)).unwrap();
    }
    let bytes = zip.finish().unwrap().into_inner();
    let hub = MockHub::start();
    hub.add_repo_at(&entry.repo, &entry.revision, &[(archive, bytes)]);
    let setup = Setup::new("hub-zip", &hub);
    let local = masks(&setup, folder.to_str().unwrap(), &[]);
    assert_eq!(masks(&setup, "sam-vit-b", &[]), local);
    let unpacked = setup.home.join("samserve-unpacked").join(hub.etag(&entry.repo, archive));
    assert!(unpacked.join(format!("{stem}.encoder.onnx")).is_file(), "unpacked beside the hub cache");
    setup.ok(&["models", "rm", "sam-vit-b"], &[]);
    assert!(!unpacked.exists(), "rm removes the unpacked files too");
}
