//! What the property tests (proptest) share: their configuration, with a fixed seed so that CI runs the same
//! cases every time and a case count per test sized to its cost (`PROPTEST_CASES` and `PROPTEST_RNG_SEED` still
//! override both locally: `PROPTEST_CASES=10000 cargo test --lib`), and byte-level mutations of valid inputs.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngSeed};

/// Any fixed value: what matters is that every run draws the same cases.
const SEED: u64 = 0x5a35e7e;

pub(crate) fn config(cases: u32) -> Config {
    let mut config = Config::default();
    // `Config::default()` has read PROPTEST_CASES and PROPTEST_RNG_SEED; keep them where they are set.
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(SEED);
    }
    // A failure is reproduced by the fixed seed: no regression files to clean up after a run.
    config.failure_persistence = None;
    config
}

/// One edit of a byte string, at a position relative to its length at the time.
#[derive(Debug, Clone)]
pub(crate) enum Edit {
    FlipBit(Index, u8),
    Set(Index, u8),
    Insert(Index, Vec<u8>),
    Remove(Index, usize),
    Truncate(Index),
    /// The same bytes again right after them (a duplicated field, line or chunk).
    Repeat(Index, usize),
}

/// `tokens` are inserted whole beside random bytes: the syntax of the format, so that edits get past the lexer.
pub(crate) fn edit(tokens: &'static [&'static str]) -> impl Strategy<Value = Edit> {
    let token = prop::sample::select(tokens).prop_map(|token| token.as_bytes().to_vec());
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Edit::FlipBit(at, bit)),
        (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Edit::Set(at, byte)),
        (any::<Index>(), vec(any::<u8>(), 1..8)).prop_map(|(at, bytes)| Edit::Insert(at, bytes)),
        (any::<Index>(), token).prop_map(|(at, bytes)| Edit::Insert(at, bytes)),
        (any::<Index>(), 1usize..64).prop_map(|(at, length)| Edit::Remove(at, length)),
        any::<Index>().prop_map(Edit::Truncate),
        (any::<Index>(), 1usize..64).prop_map(|(at, length)| Edit::Repeat(at, length)),
    ]
}

pub(crate) fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
    let at = |index: &Index, len: usize| if len == 0 { 0 } else { index.index(len) };
    let len = bytes.len();
    match edit {
        Edit::FlipBit(index, bit) if len > 0 => bytes[at(index, len)] ^= 1 << bit,
        Edit::Set(index, byte) if len > 0 => bytes[at(index, len)] = *byte,
        Edit::FlipBit(..) | Edit::Set(..) => {}
        Edit::Insert(index, inserted) => {
            let at = at(index, len + 1);
            bytes.splice(at..at, inserted.iter().copied());
        }
        Edit::Remove(index, length) => {
            let at = at(index, len);
            bytes.drain(at..(at + length).min(len));
        }
        Edit::Truncate(index) => bytes.truncate(at(index, len)),
        Edit::Repeat(index, length) => {
            let at = at(index, len);
            let copy = bytes[at..(at + length).min(len)].to_vec();
            bytes.splice(at..at, copy);
        }
    }
}

/// `original` after 1 to `max_edits` edits.
pub(crate) fn mutated(
    original: Vec<u8>,
    max_edits: usize,
    tokens: &'static [&'static str],
) -> impl Strategy<Value = Vec<u8>> {
    vec(edit(tokens), 1..=max_edits).prop_map(move |edits| {
        let mut bytes = original.clone();
        for edit in &edits {
            apply(&mut bytes, edit);
        }
        bytes
    })
}

/// Arbitrary JSON values, nested a few levels: numbers at the edges of what JSON holds among them.
pub(crate) fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{Number, Value};
    let number = prop_oneof![
        any::<i64>().prop_map(Number::from),
        any::<u64>().prop_map(Number::from),
        (-5i64..70).prop_map(Number::from),
        prop_oneof![
            any::<f64>(),
            Just(1e300),
            Just(-1e300),
            Just(5e-324),
            Just(-0.0),
            Just(0.5),
            Just(u64::MAX as f64)
        ]
        .prop_filter_map("JSON numbers are finite", Number::from_f64),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number.prop_map(Value::Number),
        "[a-z_ 0-9]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}
