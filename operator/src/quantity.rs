//! Kubernetes resource quantities (`1Gi`, `500M`, `1.5Ti`, `2e9`), compared by value.
//!
//! The operator must tell whether a claim's size is below `spec.storage.size` even when the two
//! are spelled differently (`1Gi` and `1073741824` are the same size), so sizes are parsed into
//! one exact unit rather than compared as strings. The unit is the nano-unit (10⁻⁹ bytes for
//! storage): every suffix Kubernetes accepts, down to `n`, is then an exact integer multiple, and
//! `u128` still holds exbibytes with room to spare.

use std::cmp::Ordering;
use std::fmt;

/// A quantity, in nano-units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ParsedQuantity(u128);

/// A string that is not a non-negative Kubernetes quantity this operator can compare.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid quantity {0:?}")]
pub struct QuantityError(pub String);

const NANO: u128 = 1_000_000_000;

/// Multiplier of a suffix, in nano-units.
fn suffix_multiplier(suffix: &str) -> Option<u128> {
    let binary = |shift: u32| Some((1u128 << shift) * NANO);
    match suffix {
        "" => Some(NANO),
        "n" => Some(1),
        "u" => Some(1_000),
        "m" => Some(1_000_000),
        "k" => Some(1_000 * NANO),
        "M" => Some(1_000_000 * NANO),
        "G" => Some(1_000_000_000 * NANO),
        "T" => Some(1_000_000_000_000 * NANO),
        "P" => Some(1_000_000_000_000_000 * NANO),
        "E" => Some(1_000_000_000_000_000_000 * NANO),
        "Ki" => binary(10),
        "Mi" => binary(20),
        "Gi" => binary(30),
        "Ti" => binary(40),
        "Pi" => binary(50),
        "Ei" => binary(60),
        _ => {
            // Decimal exponent: `e3`, `E6` (only the non-negative exponents sizes use).
            let exp = suffix.strip_prefix(['e', 'E'])?;
            let exp: u32 = exp.strip_prefix('+').unwrap_or(exp).parse().ok()?;
            10u128.checked_pow(exp)?.checked_mul(NANO)
        }
    }
}

impl ParsedQuantity {
    /// Parses `s`; a fractional part finer than the unit rounds up (a claim is never smaller
    /// than asked).
    pub fn parse(s: &str) -> Result<Self, QuantityError> {
        let err = || QuantityError(s.to_string());
        let s = s.trim();
        let s = s.strip_prefix('+').unwrap_or(s);
        let number_end = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
        let (number, suffix) = s.split_at(number_end);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() {
            return Err(err());
        }
        let multiplier = suffix_multiplier(suffix).ok_or_else(err)?;
        let digits: u128 = format!("{whole}{fraction}").parse().map_err(|_| err())?;
        let scale = 10u128.checked_pow(u32::try_from(fraction.len()).map_err(|_| err())?).ok_or_else(err)?;
        let product = digits.checked_mul(multiplier).ok_or_else(err)?;
        Ok(Self(product.div_ceil(scale)))
    }
}

impl fmt::Display for ParsedQuantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.div_ceil(NANO))
    }
}

/// Compares two quantity strings by value.
pub fn compare(a: &str, b: &str) -> Result<Ordering, QuantityError> {
    Ok(ParsedQuantity::parse(a)?.cmp(&ParsedQuantity::parse(b)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(s: &str) -> String {
        ParsedQuantity::parse(s).unwrap().to_string()
    }

    #[test]
    fn suffixes_scale_exactly() {
        assert_eq!(bytes("1Gi"), "1073741824");
        assert_eq!(bytes("1G"), "1000000000");
        assert_eq!(bytes("1.5Gi"), "1610612736");
        assert_eq!(bytes("512Mi"), "536870912");
        assert_eq!(bytes("2e3"), "2000");
        assert_eq!(bytes("1E"), "1000000000000000000");
        assert_eq!(bytes("8Ei"), (8u128 << 60).to_string());
        assert_eq!(bytes("100"), "100");
        assert_eq!(bytes("1500m"), "2", "fractions of a byte round up");
    }

    #[test]
    fn spellings_of_one_size_compare_equal() {
        assert_eq!(compare("1Gi", "1073741824"), Ok(Ordering::Equal));
        assert_eq!(compare("1024Mi", "1Gi"), Ok(Ordering::Equal));
        assert_eq!(compare("1G", "1Gi"), Ok(Ordering::Less));
        assert_eq!(compare("2Gi", "1.5Gi"), Ok(Ordering::Greater));
        assert_eq!(compare("0.5Ti", "512Gi"), Ok(Ordering::Equal));
    }

    #[test]
    fn garbage_is_an_error() {
        for s in ["", "Gi", "1GB", "-1Gi", "1..5Gi", "abc", "1 Gi", "1e"] {
            assert!(ParsedQuantity::parse(s).is_err(), "{s:?} parsed");
        }
    }
}
