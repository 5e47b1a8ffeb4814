//! samserve: promptable image segmentation in the Segment Anything style.
//!
//! The data path is one straight line:
//! bytes -> [`image_input`] -> [`model::preprocess`] -> encoder -> [`model::Embedding`]
//! prompt -> [`model::prompt`] -> decoder -> low-res logits -> [`mask`] -> encodings ([`segment`]).

pub mod amg;
pub mod api_keys;
pub mod batch;
pub mod coco;
pub mod engine;
pub mod eval;
pub mod http;
pub mod hub;
pub mod image_input;
pub mod jobs;
pub mod mask;
pub mod metrics;
pub mod model;
#[cfg(test)]
mod proptest_support;
pub mod rate_limit;
pub mod redis_target;
pub mod segment;
pub mod tenant;
pub mod timing;
pub mod whole_number;
