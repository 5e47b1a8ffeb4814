//! Reads the input and output names of an ONNX file's graph without loading the model: enough to tell an encoder
//! from a decoder before any session is opened. Weights, which make almost all of a file, are skipped unread.
//!
//! The protobuf fields read (onnx.proto): `ModelProto.graph` = 7; `GraphProto.input` = 11, `.output` = 12;
//! `ValueInfoProto.name` = 1.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek};
use std::path::Path;

const MODEL_GRAPH: u64 = 7;
const GRAPH_INPUT: u64 = 11;
const GRAPH_OUTPUT: u64 = 12;
const VALUE_INFO_NAME: u64 = 1;

/// The names of a graph's inputs and outputs, in order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GraphNames {
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

impl GraphNames {
    pub fn has_input(&self, name: &str) -> bool {
        self.inputs.iter().any(|input| input == name)
    }
}

/// The graph's input and output names of the ONNX file at `path`.
pub fn graph_names(path: &Path) -> io::Result<GraphNames> {
    let file = File::open(path)?;
    let length = file.metadata()?.len();
    let mut reader = BufReader::new(file);
    let mut names = GraphNames::default();
    let mut found_graph = false;
    for_each_field(&mut reader, length, &mut |reader, field, size| {
        if field != MODEL_GRAPH {
            return skip(reader, size);
        }
        found_graph = true;
        for_each_field(reader, size, &mut |reader, field, size| {
            let list = match field {
                GRAPH_INPUT => &mut names.inputs,
                GRAPH_OUTPUT => &mut names.outputs,
                _ => return skip(reader, size),
            };
            let mut value_info = vec![0; to_usize(size)?];
            reader.read_exact(&mut value_info)?;
            list.push(value_info_name(&value_info)?);
            Ok(())
        })
    })?;
    if !found_graph {
        return Err(invalid("no graph: not an ONNX model"));
    }
    Ok(names)
}

/// Calls `visit(reader, field number, size)` for each length-delimited field of the next `length` bytes; other
/// wire types are read past. `visit` must consume exactly `size` bytes.
fn for_each_field<R: BufRead + Seek>(
    reader: &mut R,
    length: u64,
    visit: &mut dyn FnMut(&mut R, u64, u64) -> io::Result<()>,
) -> io::Result<()> {
    let mut consumed = 0;
    while consumed < length {
        let (key, key_bytes) = varint(reader)?;
        consumed += key_bytes;
        let (field, wire_type) = (key >> 3, key & 7);
        let size = match wire_type {
            0 => varint(reader)?.1,
            1 => skip(reader, 8).map(|()| 8)?,
            5 => skip(reader, 4).map(|()| 4)?,
            2 => {
                let (size, size_bytes) = varint(reader)?;
                consumed += size_bytes;
                if consumed + size > length {
                    return Err(invalid("a field runs past its message"));
                }
                visit(reader, field, size)?;
                size
            }
            other => return Err(invalid(&format!("wire type {other} is not used by ONNX"))),
        };
        consumed += size;
    }
    if consumed != length {
        return Err(invalid("a field runs past its message"));
    }
    Ok(())
}

/// The `name` field of an encoded ValueInfoProto.
fn value_info_name(bytes: &[u8]) -> io::Result<String> {
    let mut reader = io::Cursor::new(bytes);
    let mut name = None;
    for_each_field(&mut reader, bytes.len() as u64, &mut |reader, field, size| {
        if field != VALUE_INFO_NAME {
            return skip(reader, size);
        }
        let mut text = vec![0; to_usize(size)?];
        reader.read_exact(&mut text)?;
        name = Some(String::from_utf8(text).map_err(|_| invalid("a name is not UTF-8"))?);
        Ok(())
    })?;
    name.ok_or_else(|| invalid("an input or output has no name"))
}

/// A protobuf varint and how many bytes it took.
fn varint(reader: &mut impl Read) -> io::Result<(u64, u64)> {
    let mut value = 0u64;
    for index in 0..10 {
        let mut byte = [0u8];
        reader.read_exact(&mut byte)?;
        value |= u64::from(byte[0] & 0x7f) << (7 * index);
        if byte[0] & 0x80 == 0 {
            return Ok((value, index + 1));
        }
    }
    Err(invalid("a varint longer than 10 bytes"))
}

fn skip(reader: &mut impl Seek, size: u64) -> io::Result<()> {
    let offset = i64::try_from(size).map_err(|_| invalid("a field larger than a file can be"))?;
    reader.seek_relative(offset)
}

fn to_usize(size: u64) -> io::Result<usize> {
    usize::try_from(size).map_err(|_| invalid("a field larger than memory"))
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(path: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models").join(path)
    }

    #[test]
    fn reads_the_names_of_encoders_and_decoders() {
        let encoder = graph_names(&fixture("samexporter-hwc/samserve_amg.encoder.onnx")).unwrap();
        assert_eq!(encoder.inputs, ["input_image"]);
        assert_eq!(encoder.outputs, ["image_embeddings"]);
        let decoder = graph_names(&fixture("tiny/decoder.onnx")).unwrap();
        let inputs = ["image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input"];
        assert_eq!(&decoder.inputs[..5], inputs);
        assert!(decoder.has_input("orig_im_size") && decoder.outputs.contains(&"low_res_masks".to_string()));
    }

    #[test]
    fn other_files_are_errors_not_panics() {
        let folder = std::env::temp_dir().join(format!("samserve-onnx-file-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        let decoder = std::fs::read(fixture("tiny/decoder.onnx")).unwrap();
        let cases: [(&str, &[u8]); 4] = [
            ("empty.onnx", b""),
            ("text.onnx", b"name = \"not a model\"\n"),
            ("truncated.onnx", &decoder[..decoder.len() / 2]),
            ("varint.onnx", &[0xff; 12]),
        ];
        for (name, bytes) in cases {
            let path = folder.join(name);
            std::fs::write(&path, bytes).unwrap();
            assert!(graph_names(&path).is_err(), "{name}");
        }
        std::fs::remove_dir_all(&folder).unwrap();
    }
}
