//! Counts in request bodies: JSON Schema (and so the API's spec) counts `8.0` as the integer 8, so the server
//! takes it as one too; `8.5`, negative numbers and non-numbers are still refused.

use serde::{Deserialize, Deserializer, de::Error};

pub fn whole_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    if let Some(count) = number.as_u64() {
        return usize::try_from(count).map_err(D::Error::custom);
    }
    match number.as_f64() {
        // Past 2^64 (JSON integers serde_json can only hold as floats) a count saturates: as good as unlimited.
        Some(value) if value >= 0.0 && value.fract() == 0.0 => Ok(value as usize),
        _ => Err(D::Error::custom(format!("{number} is not a whole number of at least 0"))),
    }
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize)]
    struct Count(#[serde(deserialize_with = "super::whole_number")] usize);

    #[test]
    fn integral_floats_are_counts_and_fractions_are_not() {
        let parse = |text: &str| serde_json::from_str::<Count>(text).map(|count| count.0);
        assert_eq!(parse("8").unwrap(), 8);
        assert_eq!(parse("8.0").unwrap(), 8);
        assert_eq!(parse("17179869185.0").unwrap(), 17179869185);
        assert!(parse("8.5").is_err());
        assert!(parse("-1").is_err());
        assert_eq!(parse("1e300").unwrap(), usize::MAX);
        assert_eq!(parse("212479299057286542713159680").unwrap(), usize::MAX);
        assert!(parse("\"8\"").is_err());
    }
}
