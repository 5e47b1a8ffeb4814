//! What a page needs to run a model's decoder itself (docs/api.md): an image's embedding exactly as the server
//! caches it, as a safetensors file, and the decoder's ONNX file for the decoders a browser can run; both
//! revalidated by ETag.

mod common;

use std::collections::{BTreeMap, HashMap};

use common::server::{Reply, Server};
use half::f16;
use safetensors::{Dtype, SafeTensors};
use samserve::image_input::{ImageLimits, decode_image};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn fixture_model(name: &str) -> String {
    common::fixtures().join("models").join(name).display().to_string()
}

fn landscape() -> Vec<u8> {
    std::fs::read(common::fixtures().join("images").join("landscape.png")).unwrap()
}

fn header(reply: &Reply, name: &str) -> String {
    let value = reply.headers.get(name).unwrap_or_else(|| panic!("no {name} header"));
    value.to_str().unwrap().to_string()
}

fn error(reply: &Reply) -> (u16, String) {
    (reply.status, reply.error_code())
}

/// The bits of a tensor's little-endian f32 or f16 values.
fn bits(data: &[u8], dtype: Dtype) -> Vec<u32> {
    match dtype {
        Dtype::F32 => data.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect(),
        Dtype::F16 => data.chunks_exact(2).map(|c| u32::from(u16::from_le_bytes(c.try_into().unwrap()))).collect(),
        other => panic!("a tensor of {other:?}"),
    }
}

/// For SAM (one tensor) and SAM 2 (three), caching f32 and f16: the f32 file holds the very values the server
/// decodes from (this process encodes the same image with the same model and the same ONNX Runtime, as bits), the
/// f16 file those narrowed; names and shapes as the decoder takes them; the sizes in the metadata.
#[test]
fn the_embedding_is_the_servers_own_with_the_sizes_a_decoder_needs() {
    let image = decode_image(&landscape(), &ImageLimits::default()).unwrap();
    for name in ["tiny", "sam2-samexporter"] {
        let encoded = common::load_model(name).encoder.encode(&image).unwrap();
        for half in [false, true] {
            let folder = fixture_model(name);
            let args = [&["--model", folder.as_str()][..], if half { &["--cache-f16"] } else { &[] }].concat();
            let server = Server::spawn(&args, &[]);
            let info = server.get("/v1/models").json()["models"][0].clone();
            assert_eq!(info["embedding_dtype"], if half { "f16" } else { "f32" }, "{name}");
            let id = server.upload(&landscape())["image_id"].as_str().unwrap().to_string();
            let path = format!("/v1/images/{id}/embedding");
            let (wide, narrow) = (server.get(&format!("{path}?dtype=f32")), server.get(&path));
            assert_eq!((wide.status, narrow.status), (200, 200), "{}", String::from_utf8_lossy(&narrow.body));
            assert_eq!(server.get(&format!("{path}?dtype=f16")).body, narrow.body, "f16 is the default");
            let (wide_file, narrow_file) =
                (SafeTensors::deserialize(&wide.body).unwrap(), SafeTensors::deserialize(&narrow.body).unwrap());

            let listed: BTreeMap<String, Value> = info["embedding_tensors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|tensor| (tensor["name"].as_str().unwrap().to_string(), tensor["shape"].clone()))
                .collect();
            let mut names = wide_file.names();
            names.sort();
            assert_eq!(names, listed.keys().collect::<Vec<_>>(), "{name}");
            for (tensor, values) in encoded.tensors_f32() {
                let label = format!("{name}, --cache-f16 {half}: {tensor}");
                let (wide, narrow) = (wide_file.tensor(tensor).unwrap(), narrow_file.tensor(tensor).unwrap());
                assert_eq!((wide.dtype(), narrow.dtype()), (Dtype::F32, Dtype::F16), "{label}");
                assert_eq!(wide.shape(), values.shape(), "{label}");
                assert_eq!(narrow.shape(), values.shape(), "{label}");
                assert_eq!(serde_json::json!(wide.shape()), listed[tensor], "{label}");
                let cached: Vec<f32> = match half {
                    true => values.iter().map(|&v| f16::from_f32(v).to_f32()).collect(),
                    false => values.iter().copied().collect(),
                };
                let cached_bits: Vec<u32> = cached.iter().map(|v| v.to_bits()).collect();
                assert!(bits(wide.data(), Dtype::F32) == cached_bits, "{label}: f32 values are not the cached ones");
                let narrowed: Vec<u32> = cached.iter().map(|&v| u32::from(f16::from_f32(v).to_bits())).collect();
                assert!(
                    bits(narrow.data(), Dtype::F16) == narrowed,
                    "{label}: f16 values are not the f32 ones narrowed"
                );
            }

            let (_, header) = SafeTensors::read_metadata(&wide.body).unwrap();
            let size = |value: &Value| format!("[{}, {}]", value[0], value[1]);
            let expected = HashMap::from([
                ("model".to_string(), name.to_string()),
                ("family".to_string(), info["family"].as_str().unwrap().to_string()),
                ("image_id".to_string(), id.clone()),
                ("original_size".to_string(), "[427, 640]".to_string()),
                ("resized_size".to_string(), format!("[{}, {}]", encoded.resized.height, encoded.resized.width)),
                ("input_size".to_string(), info["input_size"].to_string()),
                ("low_res_size".to_string(), size(&info["low_res_size"])),
            ]);
            assert_eq!(header.metadata().as_ref(), Some(&expected), "{name}");
        }
    }
}

#[test]
fn the_embedding_is_revalidated_by_etag_and_refused_as_the_other_image_routes_refuse() {
    let server = Server::start(&[]);
    let id = server.upload(&landscape())["image_id"].as_str().unwrap().to_string();
    let path = format!("/v1/images/{id}/embedding");
    let first = server.get(&path);
    assert_eq!(first.status, 200);
    assert_eq!(header(&first, "content-type"), "application/octet-stream");
    assert_eq!(header(&first, "etag"), format!("\"{id}\""));
    assert_eq!(header(&first, "cache-control"), "private, max-age=86400");
    assert_eq!(header(&first, "content-disposition"), format!("attachment; filename=\"{id}.safetensors\""));

    let unchanged = server.get_with_header(&path, "If-None-Match", &format!("\"other\", \"{id}\""));
    assert_eq!((unchanged.status, unchanged.body.len()), (304, 0));
    assert_eq!(header(&unchanged, "etag"), format!("\"{id}\""));
    assert_eq!(header(&unchanged, "cache-control"), "private, max-age=86400");
    assert_eq!(server.get_with_header(&path, "If-None-Match", "\"other\"").body, first.body);

    assert_eq!(error(&server.get(&format!("{path}?dtype=f64"))), (422, "invalid_request".to_string()));
    assert_eq!(error(&server.get(&format!("{path}?type=f16"))), (422, "invalid_request".to_string()));
    let unknown = server.get("/v1/images/0123456789abcdef0123456789abcdef/embedding");
    assert_eq!(error(&unknown), (404, "image_not_found".to_string()));
    assert_eq!(server.delete(&format!("/v1/images/{id}")).status, 204);
    assert_eq!(error(&server.get(&path)), (404, "image_not_found".to_string()));
    assert_eq!(error(&server.get_with_header(&path, "If-None-Match", &format!("\"{id}\""))).0, 404);
}

/// Each fixture layout: whether a browser can run its decoder, or the words of the 404 that says why not.
const LAYOUTS: [(&str, Result<&str, &str>); 8] = [
    ("samserve-s", Ok("models/samserve-s/decoder-lean.onnx")),
    ("tiny", Ok("tests/fixtures/models/tiny/decoder.onnx")),
    ("sam2-samexporter", Ok("tests/fixtures/models/sam2-samexporter/sam2_hiera_tiny.decoder.onnx")),
    // The external data are the encoder's; the decoder is one file.
    ("samexporter-external", Ok("tests/fixtures/models/samexporter-external/samserve_amg.decoder.onnx")),
    ("tiny-fp16", Err("float16")),
    ("efficientsam", Err("batched_point_coords")),
    ("slimsam-transformers", Err("input_points")),
    ("sam2-transformers-fp16", Err("input_points")),
];

#[test]
fn decoders_a_browser_can_run_are_served_as_their_files_and_the_others_say_why_not() {
    let folders =
        LAYOUTS.iter().map(|(name, _)| if *name == "samserve-s" { name.to_string() } else { fixture_model(name) });
    let server = Server::spawn(&["--model", &folders.collect::<Vec<_>>().join(",")], &[]);
    let listed = server.get("/v1/models").json();
    let models: BTreeMap<&str, &Value> =
        listed["models"].as_array().unwrap().iter().map(|m| (m["name"].as_str().unwrap(), m)).collect();
    for (name, expected) in LAYOUTS {
        let info = models[name];
        assert_eq!(
            (info["browser_decoder"].as_bool(), info["embedding_dtype"].as_str()),
            (Some(expected.is_ok()), Some("f32")),
            "{name}"
        );
        let path = format!("/v1/models/{name}/decoder.onnx");
        let file = match expected {
            Ok(file) => std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap(),
            Err(why) => {
                assert!(info.get("decoder_url").is_none(), "{name}");
                let refused = server.get(&path);
                assert_eq!(error(&refused), (404, "no_browser_decoder".to_string()), "{name}");
                let message = refused.json()["error"]["message"].as_str().unwrap().to_string();
                assert!(message.contains("cannot run in a browser") && message.contains(why), "{name}: {message}");
                continue;
            }
        };
        let sha256: String = Sha256::digest(&file).iter().map(|b| format!("{b:02x}")).collect();
        let url = format!("{path}?v={}", &sha256[..16]);
        assert_eq!(info["decoder_url"], url.as_str(), "{name}");
        let served = server.get(&url);
        assert_eq!(served.status, 200, "{name}");
        assert!(served.body == file, "{name}: not the decoder's file");
        assert_eq!(header(&served, "content-type"), "application/octet-stream");
        assert_eq!(header(&served, "etag"), format!("\"{sha256}\""));
        assert_eq!(header(&served, "cache-control"), "public, max-age=31536000, immutable");
        let unchanged = server.get_with_header(&url, "If-None-Match", &format!("\"{sha256}\""));
        assert_eq!((unchanged.status, unchanged.body.len()), (304, 0), "{name}");
        assert_eq!(header(&unchanged, "cache-control"), "public, max-age=31536000, immutable");
        // Without the version, or with another, the bytes are the same but must be revalidated.
        for unversioned in [path.clone(), format!("{path}?v=0000000000000000")] {
            let reply = server.get(&unversioned);
            assert_eq!((reply.status, header(&reply, "cache-control")), (200, "no-cache".to_string()), "{unversioned}");
            assert!(reply.body == file);
        }
    }
    assert_eq!(error(&server.get("/v1/models/none/decoder.onnx")), (404, "model_not_found".to_string()));
    assert_eq!(error(&server.get("/v1/models/tiny/decoder.onnx?w=1")), (422, "invalid_request".to_string()));
}

#[test]
fn with_api_keys_the_decoder_needs_one_and_no_shared_cache_keeps_it() {
    let key = "alice-key-0123456789abcdef";
    let server = Server::start_with_env(&[], &[("SAMSERVE_API_KEYS", &format!("alice:{key}"))]);
    let url = server.with_key(key).get("/v1/models").json()["models"][0]["decoder_url"].as_str().unwrap().to_string();
    assert_eq!(server.get(&url).status, 401);
    let served = server.with_key(key).get(&url);
    assert_eq!((served.status, header(&served, "cache-control")), (200, "private, max-age=31536000, immutable".into()));
}
