//! The prompt decoder: prompts -> the official SamOnnxModel input tensors -> predicted IoU and low-res logits.
//!
//! Works with the official export (`orig_im_size` input, `masks` output, one prompt per run), with lean exports
//! (no in-graph upsampling, a dynamic prompt axis so that many prompts share one run), and with EdgeSAM's export
//! (points only: no `mask_input`, outputs `scores` and low-res `masks`), and with SAM 2's samexporter export (an
//! embedding of three tensors, the multimask candidates only). The embedding tensors are fed by name, the points
//! as the model's [`Family`] prepares them. The full-resolution masks are never taken from the graph: they are
//! upsampled in Rust from the low-res logits (see `crate::mask::upscale`), only for the masks that are returned.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;

use ndarray::{Array1, Array2, Array3, Array4, Axis, s};
use ort::session::{Session, SessionInputValue};

use super::encoder::DecoderFeed;
use super::family::Family;
use super::float_io::{float_input, float_output, is_half};
use super::point_inputs::{BOX_INPUT, PointInputs};
use super::pool::SessionPool;
use super::prompt::Prompt;
use super::{Embedding, Encoder, ImageSize, Manifest, ModelError, static_dims};
use ort::value::TensorRef;

const ORIG_IM_SIZE: &str = "orig_im_size";
const MASK_INPUTS: [&str; 2] = ["mask_input", "has_mask_input"];
/// The (scores, low-res logits) outputs: SamOnnxModel's, EdgeSAM's, SAM 2's samexporter export's, transformers',
/// EfficientSAM's (full-size logits).
const OUTPUT_NAMES: [(&str, &str); 5] = [
    ("iou_predictions", "low_res_masks"),
    ("scores", "masks"),
    ("iou_predictions", "masks"),
    ("iou_scores", "pred_masks"),
    ("iou_predictions", "output_masks"),
];

/// What a decoder's mask tokens are, from their count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskTokens {
    /// Four (SamOnnxModel): token 0 answers single-mask requests, 1..=3 are the multimask candidates.
    SingleAndMultimask,
    /// One, chosen inside the graph (`SamOnnxModel(return_single_mask=True)`).
    Single,
    /// The three multimask candidates only (SAM 2's samexporter export): a single-mask request gets the
    /// best-scored one, as samexporter's own runtime answers.
    Multimask,
}

/// The decoder's answer for one prompt: every mask token it produced (see [`MaskTokens`]).
#[derive(Debug, Clone)]
pub struct DecodedPrompt {
    /// Predicted IoU per token.
    pub scores: Vec<f32>,
    /// [tokens, h, w] low-res logits.
    pub low_res: Array3<f32>,
}

pub struct Decoder {
    sessions: SessionPool,
    /// The outputs read: the scores per mask token and the low-res logits.
    scores_output: &'static str,
    low_res_output: &'static str,
    /// Whether the graph takes `mask_input` (refinement from earlier logits); EdgeSAM's export does not.
    takes_mask_input: bool,
    mask_tokens: MaskTokens,
    /// How the points are prepared.
    family: Family,
    /// Where the points go, and whether the padding point is the caller's.
    points: PointInputs,
    /// Whether prompts may have a box, and whether it goes in an input of its own rather than as corner points.
    takes_boxes: bool,
    box_input: bool,
    /// The inputs the graph takes in float16 (fp16 exports that convert their inputs too).
    half_inputs: Vec<String>,
    has_orig_im_size: bool,
    batches_prompts: bool,
    low_res_size: ImageSize,
}

impl Decoder {
    /// Reads the contract from the first session; all sessions are of the same file. `encoder` gives the
    /// embedding, already checked against the decoder's inputs of the same names: every other input must be one
    /// this code feeds.
    pub(super) fn new(sessions: Vec<Session>, manifest: &Manifest, encoder: &Encoder) -> Result<Self, ModelError> {
        let session = &sessions[0];
        let file = &manifest.decoder;
        let contract = |message: String| ModelError::Contract { file: file.display().to_string(), message };
        let points = PointInputs::detect(session.inputs()).ok_or_else(|| {
            contract("it takes neither point_coords and point_labels nor input_points and input_labels".into())
        })?;
        let (coords_input, labels_input) = points.names();
        let prompt_inputs = [&[coords_input, labels_input, BOX_INPUT][..], &MASK_INPUTS, &[ORIG_IM_SIZE]].concat();
        let known = |name: &str| prompt_inputs.contains(&name) || encoder.embedding_tensors().any(|(e, _)| e == name);
        if let Some(unknown) = session.inputs().iter().find(|i| !known(i.name())) {
            return Err(contract(format!(
                "it takes `{}`, which is neither a prompt input nor an output of the encoder: they are not one model",
                unknown.name()
            )));
        }
        let embedding_shape = encoder.embedding_shape();
        let has_input = |name: &str| session.inputs().iter().any(|i| i.name() == name);
        let takes_mask_input = match MASK_INPUTS.map(has_input) {
            [true, true] => true,
            [false, false] => false,
            _ => return Err(contract("it takes one of mask_input and has_mask_input without the other".into())),
        };
        let has_output = |name: &str| session.outputs().iter().any(|o| o.name() == name);
        let (scores_output, low_res_output) = OUTPUT_NAMES
            .into_iter()
            .find(|(scores, low_res)| has_output(scores) && has_output(low_res))
            .ok_or_else(|| contract("it has none of the known pairs of outputs (scores, low-res masks)".into()))?;
        let mask_dims = if takes_mask_input {
            static_dims(session.inputs(), "mask_input", file)?
        } else {
            static_dims(session.outputs(), low_res_output, file)?
        };
        // [B, M, h, w], or [B, P, M, h, w] (transformers).
        let low_res_size = match mask_dims.as_slice() {
            [.., _, Some(h), Some(w)] if mask_dims.len() >= 4 => ImageSize::new(*h, *w),
            // SAM's mask decoder upscales the embedding grid 4x.
            [.., _, None, None] if mask_dims.len() >= 4 => {
                ImageSize::new(4 * embedding_shape[1], 4 * embedding_shape[2])
            }
            other => return Err(contract(format!("the low-res masks must be [B, M, h, w], not {other:?}"))),
        };
        let batches_prompts =
            static_dims(session.inputs(), coords_input, file)?.get(points.prompt_axis()) == Some(&None);
        let mask_tokens = match static_dims(session.outputs(), scores_output, file)?.last().copied().flatten() {
            Some(1) => MaskTokens::Single,
            Some(3) => MaskTokens::Multimask,
            // EfficientSAM's graph does not state its three.
            None if points == PointInputs::EfficientSam => MaskTokens::Multimask,
            _ => MaskTokens::SingleAndMultimask,
        };
        let has_orig_im_size = has_input(ORIG_IM_SIZE);
        let (takes_boxes, box_input) = (points.takes_boxes(session.inputs()), points.box_input(session.inputs()));
        let half_inputs = session
            .inputs()
            .iter()
            .map(|i| i.name())
            .filter(|&n| is_half(session.inputs(), n))
            .map(String::from)
            .collect();
        Ok(Self {
            sessions: SessionPool::new(sessions),
            scores_output,
            low_res_output,
            takes_mask_input,
            mask_tokens,
            family: encoder.family(),
            points,
            takes_boxes,
            box_input,
            half_inputs,
            has_orig_im_size,
            batches_prompts,
            low_res_size,
        })
    }

    /// Whether the graph takes `orig_im_size` (the official export) rather than being a lean export.
    pub fn takes_orig_im_size(&self) -> bool {
        self.has_orig_im_size
    }

    /// Whether prompts can carry `mask_input` (earlier low-res logits to refine).
    pub fn takes_mask_input(&self) -> bool {
        self.takes_mask_input
    }

    /// How the graph takes the prompts' points.
    pub(super) fn point_inputs(&self) -> PointInputs {
        self.points
    }

    /// Whether the graph takes any input in float16.
    pub(super) fn takes_half_inputs(&self) -> bool {
        !self.half_inputs.is_empty()
    }

    /// Whether the graph takes any embedding tensor in float16 (then it cannot take the encoder's device copy).
    pub(super) fn takes_half_embeddings(&self) -> bool {
        self.half_inputs.iter().any(|name| !self.is_prompt_input(name))
    }

    fn is_prompt_input(&self, name: &str) -> bool {
        let (coords, labels) = self.points.names();
        [coords, labels, BOX_INPUT, ORIG_IM_SIZE].contains(&name) || MASK_INPUTS.contains(&name)
    }

    /// The most point slots (clicks, box corners) a prompt may have, where the graph limits them (EfficientSAM).
    pub fn max_points(&self) -> Option<usize> {
        self.points.max_points()
    }

    /// Whether prompts can have a box: the transformers layout takes points only.
    pub fn takes_boxes(&self) -> bool {
        self.takes_boxes
    }

    /// Whether the graph gives one mask per prompt, chosen inside it (`SamOnnxModel(return_single_mask=True)`:
    /// the best of the three multimask candidates for fewer than three point slots, else the single-mask token).
    pub fn single_mask(&self) -> bool {
        self.mask_tokens == MaskTokens::Single
    }

    pub fn mask_tokens(&self) -> MaskTokens {
        self.mask_tokens
    }

    /// The tokens of a prompt's answer (its `scores`) that a request gets: the multimask candidates, or the one
    /// single mask.
    pub fn answer_tokens(&self, scores: &[f32], multimask: bool) -> Range<usize> {
        let tokens = scores.len();
        match (self.mask_tokens, multimask) {
            _ if tokens == 1 => 0..1,
            (MaskTokens::SingleAndMultimask, true) => 1..tokens,
            (MaskTokens::Multimask, true) => 0..tokens,
            (MaskTokens::Multimask, false) => {
                let best = (0..tokens).max_by(|&a, &b| scores[a].total_cmp(&scores[b])).unwrap_or_default();
                best..best + 1
            }
            (MaskTokens::SingleAndMultimask | MaskTokens::Single, false) | (MaskTokens::Single, true) => 0..1,
        }
    }

    /// Whether many prompts share one run (a dynamic prompt axis).
    pub fn batches_prompts(&self) -> bool {
        self.batches_prompts
    }

    /// The size of the low-res logits (`mask_input` and `low_res_masks`).
    pub fn low_res_size(&self) -> ImageSize {
        self.low_res_size
    }

    /// Decodes every prompt against one embedding, answers in prompt order. Prompts must be validated.
    ///
    /// With a batching decoder, prompts with the same number of point slots and mask_input presence share a run;
    /// otherwise each prompt runs alone (the official export has a fixed batch of one).
    pub fn decode(&self, embedding: &Embedding, prompts: &[Prompt]) -> Result<Vec<DecodedPrompt>, ModelError> {
        let mut groups: BTreeMap<(usize, bool, bool, usize), Vec<usize>> = BTreeMap::new();
        for (index, prompt) in prompts.iter().enumerate() {
            let solo = if self.batches_prompts { 0 } else { index };
            let key = (self.point_slots(prompt), prompt.bbox.is_some(), prompt.mask_input.is_some(), solo);
            groups.entry(key).or_default().push(index);
        }
        let mut decoded: Vec<Option<DecodedPrompt>> = vec![None; prompts.len()];
        for indices in groups.into_values() {
            let batch: Vec<&Prompt> = indices.iter().map(|&i| &prompts[i]).collect();
            for (index, answer) in indices.into_iter().zip(self.run(embedding, &batch)?) {
                decoded[index] = Some(answer);
            }
        }
        Ok(decoded.into_iter().map(|d| d.expect("every prompt is in one group")).collect())
    }

    /// The point slots a prompt takes in the decoder's input: its points, its box corners, and the padding point
    /// where the caller adds it.
    fn point_slots(&self, prompt: &Prompt) -> usize {
        let pads = self.points.caller_pads(self.family) && prompt.bbox.is_none();
        let corners = prompt.bbox.is_some() && !self.box_input;
        prompt.points.len() + if corners { 2 } else { 0 } + usize::from(pads)
    }

    /// One decoder run for prompts that share their point count and mask_input presence.
    fn run(&self, embedding: &Embedding, batch: &[&Prompt]) -> Result<Vec<DecodedPrompt>, ModelError> {
        let slots = self.point_slots(batch[0]);
        let mut coords = Array3::<f32>::zeros((batch.len(), slots, 2));
        // The padding point, where there is one, is the last: (0, 0) labelled -1.
        let mut labels = Array2::<f32>::from_elem((batch.len(), slots), -1.0);
        let mut mask_input = Array4::<f32>::zeros((batch.len(), 1, self.low_res_size.height, self.low_res_size.width));
        for (b, prompt) in batch.iter().enumerate() {
            self.family.write_points(
                prompt,
                !self.box_input,
                embedding.original,
                embedding.resized,
                coords.index_axis_mut(Axis(0), b),
                labels.index_axis_mut(Axis(0), b),
            );
            if let Some(mask) = &prompt.mask_input {
                mask_input.slice_mut(s![b, 0, .., ..]).assign(mask);
            }
        }
        let has_mask_input = Array1::from_elem(1, if batch[0].mask_input.is_some() { 1.0f32 } else { 0.0 });
        // `orig_im_size` only drives the graph's own upsampled `masks` output, which samserve never reads (it
        // upsamples `low_res_masks` itself, see the module docs). ONNX Runtime computes every output whether it is
        // fetched or not, so a 1x1 size keeps that unused branch cheap: on a 2304x1536 image a decoder run takes
        // about 1.2 ms instead of 22 ms. `iou_predictions` and `low_res_masks` do not depend on it.
        let orig_im_size = Array1::from_vec(vec![1.0f32, 1.0]);
        // EfficientSAM's only masks are those upsampled to `orig_im_size` (int64): the image's real size.
        let original = embedding.original;
        let original_size = Array1::from_vec(vec![original.height as i64, original.width as i64]);
        let feeds: Vec<(&str, DecoderFeed)> = embedding.decoder_feeds().collect();
        let half = |name: &str| self.half_inputs.iter().any(|h| h == name);
        let half_points = half(self.points.names().0);
        let mut inputs: Vec<(Cow<str>, SessionInputValue)> = self.points.values(coords, labels, half_points)?.into();
        if self.box_input {
            // One box per prompt, or none at all: prompts with and without a box never share a run.
            let boxes: Vec<[f32; 4]> = batch
                .iter()
                .filter_map(|prompt| self.family.resized_box(prompt, embedding.original, embedding.resized))
                .collect();
            let boxes = Array2::from_shape_vec((boxes.len(), 4), boxes.concat()).expect("four numbers per box");
            inputs.push(PointInputs::box_value(boxes)?);
        }
        for (name, feed) in &feeds {
            let value: SessionInputValue = match feed {
                DecoderFeed::OnDevice(tensor) => (*tensor).into(),
                DecoderFeed::Host(tensor) => float_input(tensor.view(), half(name))?,
            };
            inputs.push((name.to_string().into(), value));
        }
        if self.takes_mask_input {
            inputs.push(("mask_input".into(), float_input(mask_input.view(), half("mask_input"))?));
            inputs.push(("has_mask_input".into(), float_input(has_mask_input.view(), half("has_mask_input"))?));
        }
        if self.points == PointInputs::EfficientSam {
            inputs.push((ORIG_IM_SIZE.into(), TensorRef::from_array_view(&original_size)?.into()));
        } else if self.has_orig_im_size {
            inputs.push((ORIG_IM_SIZE.into(), float_input(orig_im_size.view(), half(ORIG_IM_SIZE))?));
        }
        self.sessions.with_session(|session| {
            let outputs = session.run(inputs)?;
            let contract = |message: String| ModelError::Contract { file: "decoder".into(), message };
            let (scores, low_res) =
                (float_output(&outputs[self.scores_output])?, float_output(&outputs[self.low_res_output])?);
            // [.., M] and [.., M, h, w], the leading axes holding the prompts (one axis, or two for transformers).
            let mismatch = || {
                contract(format!(
                    "outputs {:?} and {:?} do not match {} prompts",
                    scores.shape(),
                    low_res.shape(),
                    batch.len()
                ))
            };
            let tokens = *scores.shape().last().ok_or_else(mismatch)?;
            let [.., low_res_tokens, h, w] = *low_res.shape() else { return Err(mismatch()) };
            let scores = scores.to_shape((batch.len(), tokens)).map_err(|_| mismatch())?;
            let low_res = low_res.to_shape((batch.len(), low_res_tokens, h, w)).map_err(|_| mismatch())?;
            if low_res_tokens != tokens {
                return Err(mismatch());
            }
            Ok((0..batch.len())
                .map(|b| DecodedPrompt {
                    scores: scores.row(b).to_vec(),
                    low_res: low_res.index_axis(Axis(0), b).to_owned(),
                })
                .collect())
        })
    }
}
