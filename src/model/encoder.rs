//! The image encoder: preprocess an RGB8 image and run it once, giving an [`Embedding`].
//!
//! SAM encoders are published taking the image in one of two ways (see [`InputLayout`]); both get the same pixels
//! after the official ResizeLongestSide, so both give the official embedding.

mod safetensors_file;

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use half::f16;
use image::RgbImage;
use ndarray::{Array3, Array4, ArrayD, ArrayViewD, Axis, IxDyn};
use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{Session, SessionInputValue};
use ort::value::{Outlet, Tensor, TensorValueType};

use super::family::{Family, ResizedPixels};
use super::float_io::{float_input, float_output, is_half};
use super::pool::SessionPool;
use super::preprocess::{ImageSize, normalize_and_pad, to_hwc_f32};
use super::{Manifest, ModelError, Placement, static_dims};

/// What the encoder made of one image, with the sizes needed to map prompts and masks between frames.
#[derive(Debug, Clone)]
pub struct Embedding {
    /// One tensor for SAM, several for models whose decoder also takes the encoder's earlier features (SAM 2's
    /// high-resolution features), in the encoder's output order.
    parts: Vec<EmbeddingPart>,
    /// The image as uploaded (after EXIF orientation).
    pub original: ImageSize,
    /// The image as the encoder saw it, inside its S x S input (see [`super::Family::resized_size`]).
    pub resized: ImageSize,
}

/// One embedding tensor and the decoder input it feeds.
#[derive(Debug, Clone)]
struct EmbeddingPart {
    decoder_input: Arc<str>,
    /// The host copy: what the cache counts and what a decoder on another device takes.
    tensor: EmbeddingTensor,
    /// The encoder's output left where it was computed, when the decoder runs on that same GPU: decoder runs take
    /// it as it is instead of copying the host tensor over each time. Freed with the last clone (cache entry).
    on_device: Option<Arc<Tensor<f32>>>,
}

/// [1, C, h, w], as the encoder gave it or stored in half precision (half the memory of a cache entry).
#[derive(Debug, Clone)]
enum EmbeddingTensor {
    F32(ArrayD<f32>),
    F16(ArrayD<f16>),
}

/// The float type of embedding tensors, as the cache keeps them (`f16` with `--cache-f16`) or as a client asks for
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EmbeddingDtype {
    F32,
    F16,
}

/// What the decoder is fed for one embedding tensor.
pub(super) enum DecoderFeed<'a> {
    OnDevice(&'a Tensor<f32>),
    Host(Cow<'a, ArrayD<f32>>),
}

impl Embedding {
    pub fn size_in_bytes(&self) -> usize {
        self.parts
            .iter()
            .map(|part| match &part.tensor {
                EmbeddingTensor::F32(tensor) => tensor.len() * std::mem::size_of::<f32>(),
                EmbeddingTensor::F16(tensor) => tensor.len() * std::mem::size_of::<f16>(),
            })
            .sum()
    }

    /// The same embedding stored as f16 (rounded to nearest).
    pub fn into_f16(self) -> Self {
        let parts = self
            .parts
            .into_iter()
            .map(|part| {
                let tensor = match part.tensor {
                    EmbeddingTensor::F32(tensor) => EmbeddingTensor::F16(tensor.mapv(f16::from_f32)),
                    half => half,
                };
                EmbeddingPart { tensor, ..part }
            })
            .collect();
        Self { parts, ..self }
    }

    /// Each tensor in f32 (converted when stored as f16), named by the decoder input it feeds.
    pub fn tensors_f32(&self) -> impl Iterator<Item = (&str, Cow<'_, ArrayD<f32>>)> {
        self.parts.iter().map(|part| (&*part.decoder_input, part.tensor.to_f32()))
    }

    /// The same embedding without its device copies: what a decoder on another device gets (for benchmarks).
    pub fn without_device_copy(&self) -> Self {
        let parts = self.parts.iter().map(|part| EmbeddingPart { on_device: None, ..part.clone() }).collect();
        Self { parts, ..self.clone() }
    }

    /// Whether the encoder left copies on the decoder's device.
    pub fn on_device(&self) -> bool {
        self.parts.iter().all(|part| part.on_device.is_some())
    }

    /// What the decoder takes, by input name: the device copy where there is one, else the host tensor in f32.
    pub(super) fn decoder_feeds(&self) -> impl Iterator<Item = (&str, DecoderFeed<'_>)> {
        self.parts.iter().map(|part| {
            let feed = match &part.on_device {
                Some(on_device) => DecoderFeed::OnDevice(on_device),
                None => DecoderFeed::Host(part.tensor.to_f32()),
            };
            (&*part.decoder_input, feed)
        })
    }
}

impl EmbeddingPart {
    /// The values the decoder is fed, in f32: the host tensor's, or where it is rounded to f16 and a device copy
    /// exists (`--cache-f16` with the decoder on the encoder's GPU, which takes that copy as it is), the device
    /// copy's, brought to the host.
    fn fed_f32(&self) -> Result<Cow<'_, ArrayD<f32>>, ModelError> {
        let (EmbeddingTensor::F16(rounded), Some(on_device)) = (&self.tensor, &self.on_device) else {
            return Ok(self.tensor.to_f32());
        };
        let host = on_device.to(AllocationDevice::CPU, 0)?;
        let values = host.try_extract_array::<f32>()?;
        // The encoder's output, in the decoder's shape (as `EmbeddingOutput::host_array` gives it).
        let shaped = values.to_shape(rounded.shape()).map_err(|e| ModelError::Contract {
            file: "encoder".into(),
            message: format!("`{}` is not {:?}: {e}", self.decoder_input, rounded.shape()),
        })?;
        Ok(Cow::Owned(shaped.into_owned()))
    }
}

impl EmbeddingTensor {
    fn to_f32(&self) -> Cow<'_, ArrayD<f32>> {
        match self {
            Self::F32(tensor) => Cow::Borrowed(tensor),
            Self::F16(tensor) => Cow::Owned(tensor.mapv(f16::to_f32)),
        }
    }
}

/// How an encoder graph takes the image, told apart by the shape of its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputLayout {
    /// `[1, 3, S, S]` float32, normalized and zero-padded bottom/right by the caller: the official export,
    /// samexporter without `--use-preprocess`.
    NormalizedSquare,
    /// `[h, w, 3]` float32 RGB in 0..255, resized so that the longest side is S; the graph normalizes, transposes
    /// and pads: samexporter's `--use-preprocess`, as published for MobileSAM (`Acly/MobileSAM`) and AnyLabeling.
    ResizedHwc,
    /// `[1, 3, H, W]` float32 RGB in 0..1 at the original size; the graph resizes and normalizes: EfficientSAM's
    /// `batched_images`.
    OriginalUnit,
}

/// The encoder input of EfficientSAM's export, which takes the image as it is.
const ORIGINAL_IMAGE_INPUT: &str = "batched_images";

impl InputLayout {
    /// The name `GET /v1/models` gives it.
    pub fn name(self) -> &'static str {
        match self {
            Self::NormalizedSquare => "normalized",
            Self::ResizedHwc => "rgb_hwc",
            Self::OriginalUnit => "original",
        }
    }
}

/// What the encoder graph is fed for one image.
pub enum EncoderInput {
    NormalizedSquare(Array4<f32>),
    ResizedHwc(Array3<f32>),
}

impl EncoderInput {
    fn into_tensor(self) -> Result<Tensor<f32>, ort::Error> {
        match self {
            Self::NormalizedSquare(tensor) => Tensor::from_array(tensor),
            Self::ResizedHwc(tensor) => Tensor::from_array(tensor),
        }
    }

    /// The graph input: the array as it is, or in float16 for a `half` input.
    fn value(&self, half: bool) -> Result<SessionInputValue<'_>, ort::Error> {
        match self {
            Self::NormalizedSquare(tensor) => float_input(tensor.view(), half),
            Self::ResizedHwc(tensor) => float_input(tensor.view(), half),
        }
    }
}

/// The image as `[1, 3, H, W]` float32 in 0..1 (EfficientSAM's `batched_images`: the image / 255).
fn to_nchw_unit(image: &RgbImage) -> Array4<f32> {
    let (width, height) = (image.width() as usize, image.height() as usize);
    Array4::from_shape_fn((1, 3, height, width), |(_, c, y, x)| {
        f32::from(image.get_pixel(x as u32, y as u32)[c]) / 255.0
    })
}

/// SAM-family image encoders (ViT with 16-pixel patches, TinyViT) make one embedding cell per 16 x 16 input pixels:
/// S when the graph does not state it (a `ResizedHwc` input has no fixed size).
const INPUT_PIXELS_PER_EMBEDDING_CELL: usize = 16;

pub struct Encoder {
    sessions: SessionPool,
    family: Family,
    layout: InputLayout,
    input_name: String,
    /// Whether the graph takes its input, or gives any embedding tensor, in float16.
    half_input: bool,
    half_outputs: bool,
    outputs: Vec<EmbeddingOutput>,
    /// Which of `outputs` is the image embedding proper (the others are earlier features).
    main_output: usize,
    input_size: usize,
    pixel_mean: [f32; 3],
    pixel_std: [f32; 3],
    /// Where embeddings also stay after the run (IoBinding): the decoder's GPU, when it shares it with the encoder.
    keep_on: Option<Placement>,
}

/// Encoder outputs that make one decoder input: one output, or several stacked along a new first axis (SAM-HQ's
/// decoder takes the outputs of the ViT's G global-attention blocks as one `interm_embeddings` [G, 1, h, w, D]).
struct EmbeddingOutput {
    names: Vec<String>,
    decoder_input: Arc<str>,
    /// The shape the decoder takes, dynamic axes filled in from the encoder's outputs.
    shape: Vec<usize>,
}

/// The decoder inputs that take the image embedding proper: SAM's, then SAM 2's (samexporter's, transformers').
pub(super) const MAIN_EMBEDDING_INPUTS: [&str; 3] = ["image_embeddings", "image_embed", "image_embeddings.2"];

impl Encoder {
    /// Reads the shapes from the first session; all sessions are of the same file. The embedding is every encoder
    /// output that the decoder takes as an input of the same name (or the only output, when the decoder takes
    /// `image_embeddings`). The decoder's shapes of those inputs (`decoder_inputs`) fill what the encoder's outputs
    /// leave dynamic (encoders with the preprocessing inside have dynamic outputs), and must agree with the rest.
    pub(super) fn new(
        sessions: Vec<Session>,
        manifest: &Manifest,
        family: Family,
        decoder_inputs: &[Outlet],
    ) -> Result<Self, ModelError> {
        let session = &sessions[0];
        let file = &manifest.encoder;
        let contract = |message: String| ModelError::Contract { file: file.display().to_string(), message };
        let Some(input) = session.inputs().first() else {
            return Err(contract("it has no input".to_string()));
        };
        let input_name = input.name().to_string();
        let decoder_takes = |name: &str| decoder_inputs.iter().any(|i| i.name() == name);
        let mut pairs: Vec<(Vec<String>, String)> = Vec::new();
        for (index, output) in session.outputs().iter().enumerate() {
            if decoder_takes(output.name()) {
                let count = stacked_count(output, decoder_inputs, file)?;
                let Some(stacked) = session.outputs().get(index..index + count) else {
                    return Err(contract(format!(
                        "the decoder takes {count} of its outputs stacked as `{}`, and fewer follow it",
                        output.name()
                    )));
                };
                pairs.push((stacked.iter().map(|o| o.name().to_string()).collect(), output.name().to_string()));
            }
        }
        if let ([only], true) = (session.outputs(), pairs.is_empty() && decoder_takes(MAIN_EMBEDDING_INPUTS[0])) {
            pairs.push((vec![only.name().to_string()], MAIN_EMBEDDING_INPUTS[0].to_string()));
        }
        if pairs.is_empty() {
            let names = |outlets: &[Outlet]| outlets.iter().map(|o| format!("`{}`", o.name())).collect::<Vec<_>>();
            return Err(contract(format!(
                "none of its outputs ({}) is an input of the decoder ({}): they are not one model",
                names(session.outputs()).join(", "),
                names(decoder_inputs).join(", ")
            )));
        }
        let outputs = pairs
            .into_iter()
            .map(|(names, decoder_input)| {
                let shape = fed_shape(session.outputs(), &names, decoder_inputs, &decoder_input, file)?;
                Ok(EmbeddingOutput { names, decoder_input: decoder_input.into(), shape })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let main_output =
            outputs.iter().position(|o| MAIN_EMBEDDING_INPUTS.contains(&&*o.decoder_input)).unwrap_or_default();
        if outputs[main_output].shape.len() != 4 {
            let (name, shape) = (&outputs[main_output].decoder_input, &outputs[main_output].shape);
            return Err(contract(format!("the image embedding `{name}` must be [1, C, h, w], not {shape:?}")));
        }
        let (layout, stated_size) = match static_dims(session.inputs(), &input_name, file)?.as_slice() {
            [_, Some(3), _, _] if input_name == ORIGINAL_IMAGE_INPUT => (InputLayout::OriginalUnit, None),
            [_, Some(3), Some(h), Some(w)] if h == w => (InputLayout::NormalizedSquare, Some(*h)),
            [_, Some(3), None, None] => (InputLayout::NormalizedSquare, None),
            [_, _, Some(3)] if family == Family::Sam => (InputLayout::ResizedHwc, None),
            other => {
                let expected = match family {
                    Family::Sam => "[1, 3, S, S] (normalized) or [h, w, 3] (resized RGB)",
                    Family::Sam2 => "[1, 3, S, S] (normalized)",
                    Family::EfficientSam => "`batched_images` [1, 3, H, W]",
                };
                return Err(contract(format!("input `{input_name}` must be {expected}, not {other:?}")));
            }
        };
        let input_size = match (stated_size, manifest.image_size, layout) {
            (Some(stated), Some(given), _) if stated != given => {
                return Err(contract(format!("its input is {stated} px but model.toml says image_size = {given}")));
            }
            (Some(size), _, _) | (None, Some(size), _) => size,
            (None, None, InputLayout::ResizedHwc | InputLayout::OriginalUnit) => {
                INPUT_PIXELS_PER_EMBEDDING_CELL * outputs[main_output].shape[2]
            }
            (None, None, InputLayout::NormalizedSquare) => {
                return Err(contract("the input size is dynamic and model.toml gives no image_size".into()));
            }
        };
        let half_input = is_half(session.inputs(), &input_name);
        let half_outputs = outputs.iter().flat_map(|o| &o.names).any(|name| is_half(session.outputs(), name));
        Ok(Self {
            sessions: SessionPool::new(sessions),
            family,
            layout,
            input_name,
            half_input,
            half_outputs,
            outputs,
            main_output,
            input_size,
            pixel_mean: manifest.pixel_mean,
            pixel_std: manifest.pixel_std,
            keep_on: None,
        })
    }

    /// Whether embeddings can stay on the device (IoBinding): when the graph takes and gives float32 only, and
    /// each embedding tensor is one output (stacking would need them on the host).
    pub(super) fn binds_to_device(&self) -> bool {
        !self.half_input && !self.half_outputs && self.outputs.iter().all(|output| output.names.len() == 1)
    }

    /// Leave each embedding on `placement` as well as copying it to the host (see [`Embedding`]).
    pub(super) fn keep_embeddings_on(&mut self, placement: Placement) {
        self.keep_on = Some(placement);
    }

    /// Whether embeddings also stay on the decoder's device (see [`Self::keep_embeddings_on`]).
    pub fn keeps_embeddings_on_device(&self) -> bool {
        self.keep_on.is_some()
    }

    /// S: the side of the square the encoder takes.
    pub fn input_size(&self) -> usize {
        self.input_size
    }

    /// [C, h, w] of the image embedding proper.
    pub fn embedding_shape(&self) -> [usize; 3] {
        let shape = &self.outputs[self.main_output].shape;
        [shape[1], shape[2], shape[3]]
    }

    /// Every embedding tensor: the decoder input it feeds and its shape there.
    pub fn embedding_tensors(&self) -> impl Iterator<Item = (&str, &[usize])> {
        self.outputs.iter().map(|output| (&*output.decoder_input, output.shape.as_slice()))
    }

    pub fn family(&self) -> Family {
        self.family
    }

    /// How the graph takes the image.
    pub fn layout(&self) -> InputLayout {
        self.layout
    }

    /// The official preprocessing alone, as far as this graph leaves it to the caller: the resized size and what
    /// the graph is fed.
    pub fn preprocess(&self, image: &RgbImage) -> (ImageSize, EncoderInput) {
        let original = ImageSize::new(image.height() as usize, image.width() as usize);
        let resized_size = self.family.resized_size(original, self.input_size);
        let (size, mean, std) = (self.input_size, self.pixel_mean, self.pixel_std);
        if self.layout == InputLayout::OriginalUnit {
            // The graph resizes and normalizes.
            return (resized_size, EncoderInput::NormalizedSquare(to_nchw_unit(image)));
        }
        let input = match (self.family.resize(image, resized_size, &self.input_name), self.layout) {
            (ResizedPixels::Rgb8(resized), InputLayout::ResizedHwc) => EncoderInput::ResizedHwc(to_hwc_f32(&resized)),
            (ResizedPixels::Rgb8(resized), _) => {
                EncoderInput::NormalizedSquare(normalize_and_pad(resized.as_raw(), resized_size.width, size, mean, std))
            }
            (ResizedPixels::Float { pixels, size: resized }, _) => {
                EncoderInput::NormalizedSquare(normalize_and_pad(&pixels, resized.width, size, mean, std))
            }
        };
        (resized_size, input)
    }

    /// Preprocesses and encodes one image.
    pub fn encode(&self, image: &RgbImage) -> Result<Embedding, ModelError> {
        let original = ImageSize::new(image.height() as usize, image.width() as usize);
        let (resized, input) = self.preprocess(image);
        let parts = self.sessions.with_session(|session| -> Result<_, ModelError> {
            let outputs = self.outputs.iter();
            match self.keep_on {
                None => {
                    let results =
                        session.run(ort::inputs![self.input_name.as_str() => input.value(self.half_input)?])?;
                    outputs
                        .map(|output| {
                            let arrays = output
                                .names
                                .iter()
                                .map(|name| float_output(&results[name.as_str()]))
                                .collect::<Result<Vec<_>, _>>()?;
                            Ok(output.part(output.host_array(arrays.iter().map(|a| a.view()))?, None))
                        })
                        .collect()
                }
                Some(placement) => {
                    let mut binding = session.create_binding()?;
                    // Owned: ort copies a bound view of borrowed data through a helper session that deadlocks
                    // (ort 2.0.0-rc.15, `IdentitySessionHandle::new` re-entering its lock).
                    binding.bind_input(self.input_name.as_str(), &input.into_tensor()?)?;
                    // Single outputs only (see `binds_to_device`).
                    let names = outputs.clone().map(|output| output.names[0].as_str());
                    for name in names.clone() {
                        binding.bind_output_to_device(name, &memory_info(placement)?)?;
                    }
                    let mut results = session.run_binding(&binding)?;
                    outputs
                        .zip(names)
                        .map(|(output, name)| {
                            let on_device = results
                                .remove(name)
                                .ok_or_else(|| ModelError::Contract {
                                    file: "encoder".into(),
                                    message: format!("the bound output `{name}` is missing"),
                                })?
                                .downcast::<TensorValueType<f32>>()?;
                            let host = on_device.to(AllocationDevice::CPU, 0)?;
                            let host = output.host_array([host.try_extract_array::<f32>()?])?;
                            Ok(output.part(host, Some(Arc::new(on_device))))
                        })
                        .collect()
                }
            }
        })?;
        Ok(Embedding { parts, original, resized })
    }
}

impl EmbeddingOutput {
    fn part(&self, host: ArrayD<f32>, on_device: Option<Arc<Tensor<f32>>>) -> EmbeddingPart {
        EmbeddingPart { decoder_input: self.decoder_input.clone(), tensor: EmbeddingTensor::F32(host), on_device }
    }

    /// The outputs (already on the host) as one owned array of the shape the decoder takes: stacked where there
    /// are several.
    fn host_array<'a>(&self, arrays: impl IntoIterator<Item = ArrayViewD<'a, f32>>) -> Result<ArrayD<f32>, ModelError> {
        let views: Vec<ArrayViewD<f32>> = arrays.into_iter().collect();
        let contract = |message: String| ModelError::Contract { file: "encoder".into(), message };
        let joined = if views.len() == 1 {
            views[0].to_owned()
        } else {
            ndarray::stack(Axis(0), &views).map_err(|e| contract(format!("stacking {:?}: {e}", self.names)))?
        };
        joined
            .into_shape_with_order(IxDyn(&self.shape))
            .map_err(|e| contract(format!("`{}` is not {:?}: {e}", self.decoder_input, self.shape)))
    }
}

/// How many encoder outputs, from `output` on, the decoder's input of the same name takes stacked: G when that
/// input has one more axis than the output and states G first (SAM-HQ's `interm_embeddings`), else 1.
fn stacked_count(output: &Outlet, decoder_inputs: &[Outlet], file: &Path) -> Result<usize, ModelError> {
    let gives = static_dims(std::slice::from_ref(output), output.name(), file)?;
    let takes = static_dims(decoder_inputs, output.name(), file)?;
    Ok(match takes.first() {
        Some(Some(count)) if takes.len() == gives.len() + 1 => *count,
        _ => 1,
    })
}

/// The shape the decoder input `decoder_input` takes from the encoder outputs `names` (one, or several to stack):
/// the decoder's axes, the dynamic ones filled in from the encoder's; both must agree where both state them. The
/// first axis is the batch (1), or for stacked outputs the stack (their count) then the batch.
fn fed_shape(
    encoder_outputs: &[Outlet],
    names: &[String],
    decoder_inputs: &[Outlet],
    decoder_input: &str,
    file: &Path,
) -> Result<Vec<usize>, ModelError> {
    let contract = |message: String| ModelError::Contract { file: file.display().to_string(), message };
    let takes = static_dims(decoder_inputs, decoder_input, file)?;
    let leading = if names.len() > 1 { vec![names.len(), 1] } else { vec![1] };
    let show =
        |dims: &[Option<usize>]| format!("{:?}", dims.iter().map(|d| d.map_or(-1, |d| d as i64)).collect::<Vec<_>>());
    let mut shape: Vec<Option<usize>> = takes.iter().skip(leading.len()).copied().collect();
    for name in names {
        let gives = static_dims(encoder_outputs, name, file)?;
        let gives = gives.get(1..).unwrap_or_default();
        let agrees = gives.len() == shape.len()
            && gives.iter().zip(&shape).all(|(given, taken)| given.is_none() || taken.is_none() || given == taken);
        if !agrees {
            return Err(contract(format!(
                "its `{name}` is {} but the decoder's `{decoder_input}` is {} (-1: dynamic): they are not one model",
                show(gives),
                show(&shape)
            )));
        }
        for (taken, given) in shape.iter_mut().zip(gives) {
            *taken = taken.or(*given);
        }
    }
    let axes = shape
        .into_iter()
        .enumerate()
        .map(|(axis, size)| {
            size.ok_or_else(|| {
                contract(format!("neither it nor the decoder states axis {} of `{decoder_input}`", axis + 1))
            })
        })
        .collect::<Result<Vec<usize>, ModelError>>()?;
    Ok([leading, axes].concat())
}

fn memory_info(placement: Placement) -> Result<MemoryInfo<'static>, ort::Error> {
    let (device, index) = match placement {
        Placement::Cpu => (AllocationDevice::CPU, 0),
        Placement::Cuda(index) => (AllocationDevice::CUDA, index),
    };
    MemoryInfo::new(device, index, AllocatorType::Device, MemoryType::Default)
}
