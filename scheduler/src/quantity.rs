//! Kubernetes resource quantities (`100m`, `1.5`, `128Mi`, `1G`, `1e3`).
//!
//! The scheduler only needs two projections of a quantity: CPU in millicores
//! and memory in bytes, both rounded *up* like `resource.Quantity.MilliValue()`
//! and `Value()` in Kubernetes, so a request is never under-counted. The parser
//! follows the grammar of `k8s.io/apimachinery/pkg/api/resource`:
//!
//! ```text
//! <quantity>        ::= <signedNumber><suffix>
//! <signedNumber>    ::= [+-] <digits> [ "." <digits> ] | [+-] "." <digits>
//! <suffix>          ::= <binarySI> | <decimalExponent> | <decimalSI>
//! <binarySI>        ::= Ki | Mi | Gi | Ti | Pi | Ei
//! <decimalSI>       ::= n | u | m | "" | k | M | G | T | P | E
//! <decimalExponent> ::= "e" <signedNumber> | "E" <signedNumber>   (integer)
//! ```
//!
//! Values are exact: the number is kept as an integer mantissa with a power of
//! ten and a power of two, so `0.1Gi` or `1.5e-3` convert without float error.

use std::fmt;

/// Why a string is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Empty input, a missing number, or characters outside the grammar.
    #[error(
        "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    )]
    Format,
    /// The value does not fit in 64 bits once scaled.
    #[error("quantity is too large")]
    TooLarge,
}

/// A parsed quantity: `(-1)^negative * mantissa * 10^exp10 * 2^exp2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    negative: bool,
    mantissa: u128,
    exp10: i32,
    exp2: u32,
}

/// More significant digits than this cannot be represented exactly in the
/// mantissa; Kubernetes quantities in practice have a handful.
const MAX_DIGITS: usize = 36;

impl Quantity {
    /// Parses a Kubernetes quantity string.
    pub fn parse(input: &str) -> Result<Quantity, QuantityError> {
        let s = input.trim();
        let (negative, rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            Some(_) => (false, s),
            None => return Err(QuantityError::Format),
        };
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(number_len);
        let (int_part, frac_part) = match number.split_once('.') {
            Some((i, f)) => (i, f),
            None => (number, ""),
        };
        if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
            return Err(QuantityError::Format);
        }
        let mut mantissa: u128 = 0;
        let mut significant = 0usize;
        for c in int_part.bytes().chain(frac_part.bytes()) {
            let digit = u128::from(c - b'0');
            if mantissa == 0 && digit == 0 {
                continue;
            }
            significant += 1;
            if significant > MAX_DIGITS {
                return Err(QuantityError::TooLarge);
            }
            mantissa = mantissa * 10 + digit;
        }
        let frac_len = i32::try_from(frac_part.len()).map_err(|_| QuantityError::Format)?;
        let (suffix_exp10, exp2) = parse_suffix(suffix)?;
        let exp10 = suffix_exp10
            .checked_sub(frac_len)
            .ok_or(QuantityError::TooLarge)?;
        Ok(Quantity {
            negative: negative && mantissa != 0,
            mantissa,
            exp10,
            exp2,
        })
    }

    /// The value multiplied by `10^scale`, rounded toward positive infinity.
    fn scaled_ceil(&self, scale: i32) -> Result<i64, QuantityError> {
        if self.mantissa == 0 {
            return Ok(0);
        }
        let exp10 = self
            .exp10
            .checked_add(scale)
            .ok_or(QuantityError::TooLarge)?;
        let mut numerator = self
            .mantissa
            .checked_mul(pow(2, self.exp2)?)
            .ok_or(QuantityError::TooLarge)?;
        if exp10 >= 0 {
            let factor = pow(10, exp10.unsigned_abs())?;
            numerator = numerator
                .checked_mul(factor)
                .ok_or(QuantityError::TooLarge)?;
            return to_i64(self.negative, numerator);
        }
        // A divisor beyond u128 means the magnitude is below one unit.
        let magnitude_floor_and_rem = match pow(10, exp10.unsigned_abs()) {
            Ok(divisor) => (numerator / divisor, numerator % divisor != 0),
            Err(_) => (0, true),
        };
        let (floor, has_rem) = magnitude_floor_and_rem;
        if self.negative {
            // ceil(-x) = -floor(x)
            to_i64(true, floor)
        } else {
            to_i64(false, floor + u128::from(has_rem))
        }
    }

    /// The value in thousandths, rounded up (`MilliValue()`): CPU millicores.
    pub fn milli_value(&self) -> Result<i64, QuantityError> {
        self.scaled_ceil(3)
    }

    /// The value in units, rounded up (`Value()`): bytes, pods.
    pub fn value(&self) -> Result<i64, QuantityError> {
        self.scaled_ceil(0)
    }
}

impl std::str::FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Quantity::parse(s)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.negative { "-" } else { "" };
        write!(f, "{sign}{}e{}*2^{}", self.mantissa, self.exp10, self.exp2)
    }
}

fn pow(base: u128, exp: u32) -> Result<u128, QuantityError> {
    base.checked_pow(exp).ok_or(QuantityError::TooLarge)
}

fn to_i64(negative: bool, magnitude: u128) -> Result<i64, QuantityError> {
    let v = i64::try_from(magnitude).map_err(|_| QuantityError::TooLarge)?;
    Ok(if negative { -v } else { v })
}

/// Returns `(power of ten, power of two)` for a suffix.
fn parse_suffix(suffix: &str) -> Result<(i32, u32), QuantityError> {
    Ok(match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        s if s.starts_with(['e', 'E']) => {
            let exp = &s[1..];
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(QuantityError::Format);
            }
            let value: i32 = exp.parse().map_err(|_| QuantityError::TooLarge)?;
            (value, 0)
        }
        _ => return Err(QuantityError::Format),
    })
}

/// CPU quantity in millicores, rounded up; `None` when unparsable.
pub fn cpu_millis(q: &str) -> Option<i64> {
    Quantity::parse(q).ok()?.milli_value().ok()
}

/// Memory (or any count) quantity in units, rounded up; `None` when unparsable.
pub fn units(q: &str) -> Option<i64> {
    Quantity::parse(q).ok()?.value().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn milli(s: &str) -> i64 {
        match Quantity::parse(s).and_then(|q| q.milli_value()) {
            Ok(v) => v,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    fn val(s: &str) -> i64 {
        match Quantity::parse(s).and_then(|q| q.value()) {
            Ok(v) => v,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn cpu_forms() {
        assert_eq!(milli("100m"), 100);
        assert_eq!(milli("1"), 1000);
        assert_eq!(milli("0.5"), 500);
        assert_eq!(milli(".5"), 500);
        assert_eq!(milli("2."), 2000);
        assert_eq!(milli("1.5"), 1500);
        assert_eq!(milli("250000u"), 250);
        assert_eq!(milli("1e3"), 1_000_000);
        assert_eq!(milli("1E-3"), 1);
        assert_eq!(milli("+3"), 3000);
        assert_eq!(milli("0"), 0);
        assert_eq!(milli("-0"), 0);
    }

    #[test]
    fn cpu_rounds_up_like_milli_value() {
        assert_eq!(milli("1n"), 1);
        assert_eq!(milli("1001u"), 2);
        assert_eq!(milli("0.0001"), 1);
        assert_eq!(milli("1e-40"), 1);
        assert_eq!(milli("-1n"), 0);
        assert_eq!(milli("-1.5"), -1500);
    }

    #[test]
    fn memory_forms() {
        assert_eq!(val("128Mi"), 128 * 1024 * 1024);
        assert_eq!(val("1Ki"), 1024);
        assert_eq!(val("1G"), 1_000_000_000);
        assert_eq!(val("1k"), 1000);
        assert_eq!(val("1e3"), 1000);
        assert_eq!(val("1.5Gi"), 1_610_612_736);
        assert_eq!(val("0.1Gi"), 107_374_183); // 107374182.4 rounded up
        assert_eq!(val("129e6"), 129_000_000);
    }

    #[test]
    fn too_large_is_an_error_not_a_wrap() {
        assert_eq!(
            Quantity::parse("8Ei").and_then(|q| q.value()),
            Err(QuantityError::TooLarge)
        );
        assert_eq!(
            Quantity::parse("1e400").and_then(|q| q.value()),
            Err(QuantityError::TooLarge)
        );
        assert_eq!(val("7Ei"), 7 * (1i64 << 60));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "", " ", "m", "Mi", "1.2.3", "1 Mi", "1mi", "1KI", "1e", "1e+", "1ee3", "abc", "1Mix",
            "--1", "1e1.5", "..1",
        ] {
            assert_eq!(
                Quantity::parse(bad),
                Err(QuantityError::Format),
                "{bad:?} should not parse"
            );
        }
    }

    /// Property-style sweep: `N<suffix>` equals `N * multiplier` for every
    /// suffix and a range of N, and `N` with a fraction of millis round-trips.
    #[test]
    fn suffix_multipliers_hold_for_many_values() {
        let suffixes: [(&str, i64); 12] = [
            ("", 1),
            ("k", 1_000),
            ("M", 1_000_000),
            ("G", 1_000_000_000),
            ("T", 1_000_000_000_000),
            ("Ki", 1 << 10),
            ("Mi", 1 << 20),
            ("Gi", 1 << 30),
            ("Ti", 1 << 40),
            ("e0", 1),
            ("e3", 1_000),
            ("E6", 1_000_000),
        ];
        let mut n: i64 = 0;
        while n < 5_000 {
            for (suffix, mult) in suffixes {
                assert_eq!(val(&format!("{n}{suffix}")), n * mult, "{n}{suffix}");
                assert_eq!(val(&format!("-{n}{suffix}")), -n * mult, "-{n}{suffix}");
            }
            // n millis written three ways agree.
            let whole = n / 1000;
            let frac = n % 1000;
            assert_eq!(milli(&format!("{n}m")), n);
            assert_eq!(milli(&format!("{whole}.{frac:03}")), n);
            assert_eq!(milli(&format!("{n}e-3")), n);
            n = n * 3 + 1;
        }
    }

    #[test]
    fn helpers_return_none_for_garbage() {
        assert_eq!(cpu_millis("2"), Some(2000));
        assert_eq!(cpu_millis("two"), None);
        assert_eq!(units("64Mi"), Some(67_108_864));
        assert_eq!(units("1e999"), None);
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        const SUFFIXES: [(&str, i64); 11] = [
            ("", 1),
            ("k", 1_000),
            ("M", 1_000_000),
            ("G", 1_000_000_000),
            ("Ki", 1 << 10),
            ("Mi", 1 << 20),
            ("Gi", 1 << 30),
            ("e0", 1),
            ("e3", 1_000),
            ("E6", 1_000_000),
            ("e+2", 100),
        ];

        proptest! {
            /// Arbitrary text (as found in any API object) never panics.
            #[test]
            fn parse_never_panics(s in "\\PC{0,40}") {
                if let Ok(q) = Quantity::parse(&s) {
                    let _ = q.value();
                    let _ = q.milli_value();
                }
            }

            /// Grammar-shaped junk never panics either.
            #[test]
            fn grammar_shaped_input_never_panics(s in "[-+]?[0-9.]{0,45}([eE][-+]?[0-9]{0,12}|[KMGTPE]i|[numkMGTPE])?") {
                if let Ok(q) = Quantity::parse(&s) {
                    let _ = q.value();
                    let _ = q.milli_value();
                }
            }

            /// `N<suffix>` is exactly `N * multiplier`.
            #[test]
            fn integer_times_suffix(n in 0i64..1_000_000, idx in 0usize..SUFFIXES.len()) {
                let (suffix, mult) = SUFFIXES[idx];
                let q = Quantity::parse(&format!("{n}{suffix}")).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(q.value(), Ok(n * mult));
            }

            /// Millicores written as `Nm`, as a decimal and as an exponent agree.
            #[test]
            fn millis_three_ways(n in 0i64..10_000_000) {
                let forms = [format!("{n}m"), format!("{}.{:03}", n / 1000, n % 1000), format!("{n}e-3")];
                for f in forms {
                    prop_assert_eq!(cpu_millis(&f), Some(n), "{}", f);
                }
            }

            /// Rounding is always up, by less than one unit.
            #[test]
            fn value_rounds_up(whole in 0i64..1_000_000, frac in 1u32..1000) {
                let q = Quantity::parse(&format!("{whole}.{frac:03}")).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(q.value(), Ok(whole + 1));
            }
        }
    }
}
