//! Model folders: model.toml parsing, shapes read from the ONNX files, and contract violations as clear errors.

mod common;

use std::path::PathBuf;

use samserve::model::manifest::{Manifest, ManifestError};
use samserve::model::{ModelError, SamModel, SessionCounts};

/// A fresh folder with `model.toml` = `toml`, next to the fixture model files.
fn folder_with(name: &str, toml: &str) -> PathBuf {
    let folder = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("model-folders").join(name);
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("model.toml"), toml).unwrap();
    folder
}

fn tiny(file: &str) -> String {
    common::fixtures().join("models/tiny").join(file).display().to_string()
}

#[test]
fn shapes_come_from_the_onnx_files() {
    let model = common::load_model("tiny");
    assert_eq!(model.name(), "tiny");
    assert_eq!(model.encoder.input_size(), 256);
    assert_eq!(model.encoder.embedding_shape(), [64, 16, 16]);
    assert_eq!(model.decoder.low_res_size(), samserve::model::ImageSize::new(64, 64));
}

#[test]
fn name_defaults_to_the_folder_and_statistics_to_sam_s() {
    let toml = format!("encoder = {:?}\ndecoder = {:?}\n", tiny("encoder.onnx"), tiny("decoder.onnx"));
    let folder = folder_with("unnamed-model", &toml);
    let manifest = Manifest::load(&folder).unwrap();
    assert_eq!(manifest.name, "unnamed-model");
    assert_eq!(manifest.pixel_mean, [123.675, 116.28, 103.53]);
    assert_eq!(manifest.image_size, None);
    SamModel::load(&folder, common::runtime(), SessionCounts::default()).unwrap();
}

#[test]
fn bad_manifests_are_rejected_with_the_reason() {
    let invalid = |name: &str, toml: &str| match Manifest::load(&folder_with(name, toml)) {
        Err(ManifestError::Invalid { message, .. }) => message,
        other => panic!("{name}: {other:?}"),
    };
    assert!(invalid("typo", "encoder = \"e.onnx\"\ndecoder = \"d.onnx\"\nimage_sise = 3\n").contains("image_sise"));
    assert!(invalid("family", "family = \"sam3\"\nencoder = \"e\"\ndecoder = \"d\"\n").contains("sam3"));
    assert!(invalid("no-decoder", "encoder = \"e.onnx\"\n").contains("decoder"));
    assert!(
        invalid("zero-std", "encoder = \"e\"\ndecoder = \"d\"\npixel_std = [1.0, 0.0, 1.0]\n").contains("pixel_std")
    );
}

#[test]
fn files_that_break_the_contract_are_named() {
    let runtime = common::runtime();
    let missing =
        folder_with("missing-file", &format!("encoder = {:?}\ndecoder = \"nope.onnx\"\n", tiny("encoder.onnx")));
    assert!(matches!(SamModel::load(&missing, runtime, SessionCounts::default()), Err(ModelError::Load { .. })));

    let swapped = format!("encoder = {:?}\ndecoder = {:?}\n", tiny("decoder.onnx"), tiny("encoder.onnx"));
    let error = SamModel::load(&folder_with("swapped", &swapped), runtime, SessionCounts::default()).err().unwrap();
    assert!(matches!(error, ModelError::Contract { .. }), "{error}");

    let wrong_size =
        format!("encoder = {:?}\ndecoder = {:?}\nimage_size = 1024\n", tiny("encoder.onnx"), tiny("decoder.onnx"));
    let error =
        SamModel::load(&folder_with("wrong-size", &wrong_size), runtime, SessionCounts::default()).err().unwrap();
    assert!(error.to_string().contains("image_size"), "{error}");
}

/// A fresh folder holding copies of `files` (fixture paths below tests/fixtures/models, or raw bytes) under new names.
fn folder_of(name: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let folder = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("detected-folders").join(name);
    let _ = std::fs::remove_dir_all(&folder);
    std::fs::create_dir_all(&folder).unwrap();
    for (file, bytes) in files {
        std::fs::write(folder.join(file), bytes).unwrap();
    }
    folder
}

fn fixture_bytes(path: &str) -> Vec<u8> {
    std::fs::read(common::fixtures().join("models").join(path)).unwrap()
}

#[test]
fn a_folder_without_model_toml_finds_its_encoder_and_decoder() {
    let (encoder, decoder) = (fixture_bytes("tiny/encoder.onnx"), fixture_bytes("tiny/decoder.onnx"));
    // Any names: the decoder is the graph that takes point_coords. Weight files beside them are not models.
    let files: [(&str, &[u8]); 3] =
        [("a-prompt-net.onnx", &decoder), ("z-vit.onnx", &encoder), ("z-vit.onnx_data", b"")];
    let folder = folder_of("my-sam", &files);
    let manifest = Manifest::load(&folder).unwrap();
    assert_eq!((manifest.name.as_str(), manifest.image_size), ("my-sam", None));
    assert!(manifest.encoder.ends_with("z-vit.onnx") && manifest.decoder.ends_with("a-prompt-net.onnx"));
    let model = SamModel::load(&folder, common::runtime(), SessionCounts::default()).unwrap();
    assert_eq!((model.encoder.input_size(), model.encoder.embedding_shape()), (256, [64, 16, 16]));
}

#[test]
fn of_a_single_mask_and_a_multimask_decoder_the_multimask_one_is_taken() {
    // As Acly/MobileSAM publishes it: one encoder, `sam_mask_decoder_single.onnx` and `sam_mask_decoder_multi.onnx`.
    let (encoder, multi) = (
        fixture_bytes("samexporter-hwc/samserve_amg.encoder.onnx"),
        fixture_bytes("samexporter-hwc/samserve_amg.decoder.onnx"),
    );
    let single = fixture_bytes("samexporter-single/samserve_amg.decoder.onnx");
    let files: [(&str, &[u8]); 3] = [
        ("mobile_sam_image_encoder.onnx", &encoder),
        ("sam_mask_decoder_multi.onnx", &multi),
        ("sam_mask_decoder_single.onnx", &single),
    ];
    let manifest = Manifest::load(&folder_of("acly-layout", &files)).unwrap();
    assert!(manifest.decoder.ends_with("sam_mask_decoder_multi.onnx"), "{}", manifest.decoder.display());
    assert!(manifest.encoder.ends_with("mobile_sam_image_encoder.onnx"));
}

#[test]
fn folders_that_cannot_be_told_apart_say_why() {
    let (encoder, decoder) = (fixture_bytes("tiny/encoder.onnx"), fixture_bytes("tiny/decoder.onnx"));
    let undetected = |folder: PathBuf| match Manifest::load(&folder) {
        Err(error @ ManifestError::Undetected { .. }) => error.to_string(),
        other => panic!("{}: {other:?}", folder.display()),
    };
    let two_encoders = undetected(folder_of("two-encoders", &[("a.onnx", &encoder), ("b.onnx", &encoder)]));
    assert!(two_encoders.contains("encoders: a.onnx, b.onnx") && two_encoders.contains("model.toml"), "{two_encoders}");
    let no_decoder = undetected(folder_of("no-decoder", &[("a.onnx", &encoder)]));
    assert!(no_decoder.contains("`batched_point_coords`): none"), "{no_decoder}");
    let single = fixture_bytes("samexporter-single/samserve_amg.decoder.onnx");
    let two_single =
        undetected(folder_of("two-single", &[("e.onnx", &encoder), ("s1.onnx", &single), ("s2.onnx", &single)]));
    assert!(two_single.contains("s1.onnx, s2.onnx"), "{two_single}");
    let corrupt = undetected(folder_of("corrupt", &[("a.onnx", &encoder), ("d.onnx", &decoder[..1000])]));
    assert!(corrupt.contains("d.onnx is not an ONNX model"), "{corrupt}");
}

#[test]
fn an_encoder_and_a_decoder_of_different_models_are_refused() {
    let encoder = fixture_bytes("tiny/encoder.onnx"); // 64-channel embeddings
    let decoder = fixture_bytes("samexporter-hwc/samserve_amg.decoder.onnx"); // takes 128 channels
    let folder = folder_of("mismatched", &[("encoder.onnx", &encoder), ("decoder.onnx", &decoder)]);
    let error = SamModel::load(&folder, common::runtime(), SessionCounts::default()).err().unwrap();
    assert!(matches!(error, ModelError::Contract { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains("[64, 16, 16]") && message.contains("[128, 16, 16]") && message.contains("not one model"));
}

#[test]
fn sam_and_sam2_halves_do_not_make_a_model() {
    let sam_encoder = fixture_bytes("tiny/encoder.onnx");
    let sam2_decoder = fixture_bytes("sam2-samexporter/sam2_hiera_tiny.decoder.onnx");
    let folder =
        folder_of("sam-encoder-sam2-decoder", &[("encoder.onnx", &sam_encoder), ("decoder.onnx", &sam2_decoder)]);
    let message = SamModel::load(&folder, common::runtime(), SessionCounts::default()).err().unwrap().to_string();
    assert!(message.contains("`image_embed`") && message.contains("not one model"), "{message}");

    let sam2_encoder = fixture_bytes("sam2-samexporter/sam2_hiera_tiny.encoder.onnx");
    let sam_decoder = fixture_bytes("tiny/decoder.onnx");
    let folder =
        folder_of("sam2-encoder-sam-decoder", &[("encoder.onnx", &sam2_encoder), ("decoder.onnx", &sam_decoder)]);
    let message = SamModel::load(&folder, common::runtime(), SessionCounts::default()).err().unwrap().to_string();
    assert!(message.contains("`high_res_feats_0`") && message.contains("not one model"), "{message}");
}

#[test]
fn a_model_toml_family_must_be_the_decoders() {
    let sam2 = common::fixtures().join("models").join("sam2-samexporter");
    let toml = |family: &str| {
        format!(
            "family = \"{family}\"\nencoder = \"{}\"\ndecoder = \"{}\"\n",
            sam2.join("sam2_hiera_tiny.encoder.onnx").display(),
            sam2.join("sam2_hiera_tiny.decoder.onnx").display()
        )
    };
    let runtime = common::runtime();
    let stated = SamModel::load(&folder_with("sam2-stated", &toml("sam2")), runtime, SessionCounts::default()).unwrap();
    assert_eq!(stated.encoder.family(), samserve::model::Family::Sam2);
    let error = SamModel::load(&folder_with("sam2-as-sam", &toml("sam")), runtime, SessionCounts::default()).err();
    let message = error.unwrap().to_string();
    assert!(message.contains("family = \"sam\", but this is a sam2 decoder"), "{message}");
}
