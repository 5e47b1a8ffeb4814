//! Reads the names and shapes of an ONNX file's graph inputs and outputs without loading the model: enough to tell
//! an encoder from a decoder, and a decoder's mask count, before any session is opened; and whether its weights
//! live in external data files. Weights, which make almost all of a file, are skipped unread.
//!
//! The protobuf fields read (onnx.proto): `ModelProto.graph` = 7; `GraphProto.initializer` = 5, `.input` = 11,
//! `.output` = 12; `TensorProto.data_location` = 14 (`EXTERNAL` = 1); `ValueInfoProto.name` = 1, `.type` = 2;
//! `TypeProto.tensor_type` = 1; `TypeProto.Tensor.shape` = 2; `TensorShapeProto.dim` = 1; `Dimension.dim_value` = 1
//! (a dimension without it is symbolic).

use std::fs::File;
use std::io::{self, BufReader, Read, Seek};
use std::path::Path;

const MODEL_GRAPH: u64 = 7;
const GRAPH_INITIALIZER: u64 = 5;
const GRAPH_INPUT: u64 = 11;
const GRAPH_OUTPUT: u64 = 12;
const VALUE_INFO_NAME: u64 = 1;
const VALUE_INFO_TYPE: u64 = 2;
const TYPE_TENSOR: u64 = 1;
const TENSOR_SHAPE: u64 = 2;
const SHAPE_DIM: u64 = 1;
const DIM_VALUE: u64 = 1;
const TENSOR_DATA_LOCATION: u64 = 14;
const DATA_LOCATION_EXTERNAL: u64 = 1;

/// A graph input or output: its name and, for a tensor with a known rank, its dimensions (`None` where symbolic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueInfo {
    pub name: String,
    pub dims: Option<Vec<Option<u64>>>,
}

/// A graph's inputs and outputs, in order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GraphNames {
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
}

impl GraphNames {
    pub fn has_input(&self, name: &str) -> bool {
        self.inputs.iter().any(|input| input.name == name)
    }

    pub fn output(&self, name: &str) -> Option<&ValueInfo> {
        self.outputs.iter().find(|output| output.name == name)
    }
}

/// The graph inputs and outputs of the ONNX file at `path`.
pub fn graph_names(path: &Path) -> io::Result<GraphNames> {
    let file = File::open(path)?;
    let length = file.metadata()?.len();
    let mut names = GraphNames::default();
    for_each_graph_field(&mut BufReader::new(file), length, &mut |reader, field, wire| {
        let Wire::Bytes(size) = wire else { return Ok(()) };
        let list = match field {
            GRAPH_INPUT => &mut names.inputs,
            GRAPH_OUTPUT => &mut names.outputs,
            _ => return skip(reader, size),
        };
        let mut value_info = vec![0; to_usize(size)?];
        reader.read_exact(&mut value_info)?;
        list.push(parse_value_info(&value_info)?);
        Ok(())
    })?;
    Ok(names)
}

/// Whether the graph's weights (its initializers) live in external data files beside the ONNX file `model`, so
/// that the file alone is not the whole model.
pub fn has_external_data(model: &[u8]) -> io::Result<bool> {
    let mut external = false;
    let mut reader = io::Cursor::new(model);
    for_each_graph_field(&mut reader, model.len() as u64, &mut |reader, field, wire| {
        let Wire::Bytes(size) = wire else { return Ok(()) };
        if field != GRAPH_INITIALIZER {
            return skip(reader, size);
        }
        for_each_field(reader, size, &mut |reader, field, wire| match wire {
            Wire::Varint(location) => {
                external |= field == TENSOR_DATA_LOCATION && location == DATA_LOCATION_EXTERNAL;
                Ok(())
            }
            Wire::Bytes(size) => skip(reader, size),
        })
    })?;
    Ok(external)
}

/// Calls `visit` (as [`for_each_field`] does) for each field of the graph of the ONNX model in the next `length`
/// bytes; an error when there is no graph.
fn for_each_graph_field<R: Read + Seek>(
    reader: &mut R,
    length: u64,
    visit: &mut dyn FnMut(&mut R, u64, Wire) -> io::Result<()>,
) -> io::Result<()> {
    let mut found_graph = false;
    for_each_field(reader, length, &mut |reader, field, wire| {
        let Wire::Bytes(size) = wire else { return Ok(()) };
        if field != MODEL_GRAPH {
            return skip(reader, size);
        }
        found_graph = true;
        for_each_field(reader, size, visit)
    })?;
    if !found_graph {
        return Err(invalid("no graph: not an ONNX model"));
    }
    Ok(())
}

/// A field as the wire gives it: a varint's value, or the size of a length-delimited field's bytes.
enum Wire {
    Varint(u64),
    Bytes(u64),
}

/// Calls `visit(reader, field number, wire)` for each varint and length-delimited field of the next `length`
/// bytes; fixed-width fields are read past. For `Wire::Bytes(size)`, `visit` must consume exactly `size` bytes
/// (reading them, or seeking over them: weights are never read).
fn for_each_field<R: Read + Seek>(
    reader: &mut R,
    length: u64,
    visit: &mut dyn FnMut(&mut R, u64, Wire) -> io::Result<()>,
) -> io::Result<()> {
    let mut consumed = 0;
    while consumed < length {
        let (key, key_bytes) = varint(reader)?;
        consumed += key_bytes;
        let (field, wire_type) = (key >> 3, key & 7);
        let size = match wire_type {
            0 => {
                let (value, value_bytes) = varint(reader)?;
                visit(reader, field, Wire::Varint(value))?;
                value_bytes
            }
            1 => skip(reader, 8).map(|()| 8)?,
            5 => skip(reader, 4).map(|()| 4)?,
            2 => {
                let (size, size_bytes) = varint(reader)?;
                consumed += size_bytes;
                if consumed + size > length {
                    return Err(invalid("a field runs past its message"));
                }
                visit(reader, field, Wire::Bytes(size))?;
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

/// A field of a small message held in memory.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

/// The fields of an encoded message, in order (fixed-width ones skipped).
fn fields(bytes: &[u8]) -> io::Result<Vec<(u64, Field<'_>)>> {
    let mut found = Vec::new();
    let mut cursor = io::Cursor::new(bytes);
    for_each_field(&mut cursor, bytes.len() as u64, &mut |cursor, field, wire| {
        match wire {
            Wire::Varint(value) => found.push((field, Field::Varint(value))),
            Wire::Bytes(size) => {
                let start = cursor.position() as usize;
                found.push((field, Field::Bytes(&bytes[start..start + to_usize(size)?])));
                skip(cursor, size)?;
            }
        }
        Ok(())
    })?;
    Ok(found)
}

/// The length-delimited field `number` of an encoded message, if present (the last one wins, as in protobuf).
fn message_field(bytes: &[u8], number: u64) -> io::Result<Option<&[u8]>> {
    Ok(fields(bytes)?.into_iter().rev().find_map(|(field, value)| match value {
        Field::Bytes(bytes) if field == number => Some(bytes),
        _ => None,
    }))
}

/// A ValueInfoProto: its name, and its tensor shape when it has one.
fn parse_value_info(bytes: &[u8]) -> io::Result<ValueInfo> {
    let name = message_field(bytes, VALUE_INFO_NAME)?.ok_or_else(|| invalid("an input or output has no name"))?;
    let name = String::from_utf8(name.to_vec()).map_err(|_| invalid("a name is not UTF-8"))?;
    let shape = match message_field(bytes, VALUE_INFO_TYPE)? {
        Some(kind) => match message_field(kind, TYPE_TENSOR)? {
            Some(tensor) => message_field(tensor, TENSOR_SHAPE)?,
            None => None,
        },
        None => None,
    };
    let dims = match shape {
        Some(shape) => Some(
            fields(shape)?
                .into_iter()
                .filter_map(|(field, value)| match value {
                    Field::Bytes(dim) if field == SHAPE_DIM => Some(dim),
                    _ => None,
                })
                .map(|dim| {
                    Ok(fields(dim)?.into_iter().find_map(|(field, value)| match value {
                        Field::Varint(size) if field == DIM_VALUE => Some(size),
                        _ => None,
                    }))
                })
                .collect::<io::Result<Vec<Option<u64>>>>()?,
        ),
        None => None,
    };
    Ok(ValueInfo { name, dims })
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
        let names = |values: &[ValueInfo]| values.iter().map(|v| v.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&encoder.inputs), ["input_image"]);
        assert_eq!(encoder.inputs[0].dims, Some(vec![None, None, Some(3)]));
        assert_eq!(names(&encoder.outputs), ["image_embeddings"]);
        let decoder = graph_names(&fixture("tiny/decoder.onnx")).unwrap();
        let inputs = ["image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input"];
        assert_eq!(&names(&decoder.inputs)[..5], inputs);
        assert!(decoder.has_input("orig_im_size") && decoder.output("low_res_masks").is_some());
        assert_eq!(decoder.inputs[0].dims, Some(vec![Some(1), Some(64), Some(16), Some(16)]));
        assert_eq!(decoder.output("iou_predictions").unwrap().dims, Some(vec![None, Some(4)]));
        let single = graph_names(&fixture("samexporter-single/samserve_amg.decoder.onnx")).unwrap();
        assert_eq!(single.output("iou_predictions").unwrap().dims, Some(vec![None, Some(1)]));
    }

    #[test]
    fn tells_weights_in_external_data_files_from_weights_inside() {
        let external = |path: &str| has_external_data(&std::fs::read(fixture(path)).unwrap()).unwrap();
        assert!(external("samexporter-external/samserve_amg.encoder.onnx"));
        assert!(external("sam2-transformers-fp16/prompt_encoder_mask_decoder_fp16.onnx"));
        assert!(!external("samexporter-external/samserve_amg.decoder.onnx"));
        assert!(!external("tiny/decoder.onnx"));
        assert!(has_external_data(b"not a model").is_err());
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
