//! Value parsers for `wasmkube server` flags that take the kubelet's
//! spellings: Go durations (`500ms`, `10s`, `5m`, `1m30s`) and resource
//! quantities (`10Mi`, `1G`).

use std::time::Duration;

/// Parses a Go-style duration: one or more `<number><unit>` parts with the
/// units `ns`, `us`, `ms`, `s`, `m`, `h`; a bare `0` is zero.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration (e.g. 10s, 500ms, 5m)".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{input:?}: missing unit (e.g. 10s, 500ms, 5m)"))?;
        let (num, tail) = rest.split_at(digits);
        let value: f64 = num
            .parse()
            .map_err(|_| format!("{input:?}: {num:?} is not a number"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let seconds = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => {
                return Err(format!(
                    "{input:?}: unknown unit {unit:?} (ns, us, ms, s, m, h)"
                ));
            }
        };
        let part =
            Duration::try_from_secs_f64(value * seconds).map_err(|e| format!("{input:?}: {e}"))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| format!("{input:?}: too long"))?;
        rest = next;
    }
    Ok(total)
}

/// Parses a positive duration (a back-off of zero would restart in a hot loop).
pub fn parse_positive_duration(input: &str) -> Result<Duration, String> {
    let d = parse_duration(input)?;
    if d.is_zero() {
        return Err(format!("{input:?}: must be greater than zero"));
    }
    Ok(d)
}

/// Parses a byte size as a Kubernetes quantity (`10Mi`, `1G`, `4096`).
pub fn parse_size(input: &str) -> Result<u64, String> {
    match wasmkube_runtime::pod_worker::parse_quantity(input) {
        Some(0) => Err(format!("{input:?}: must be greater than zero")),
        Some(n) => Ok(n),
        None => Err(format!("{input:?}: not a quantity (e.g. 10Mi, 1Gi)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("500ms"), Ok(ms(500)));
        assert_eq!(parse_duration("1s"), Ok(ms(1000)));
        assert_eq!(parse_duration("1.5s"), Ok(ms(1500)));
        assert_eq!(parse_duration("5m"), Ok(ms(300_000)));
        assert_eq!(parse_duration("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse_duration("1h"), Ok(ms(3_600_000)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "10", "s", "10x", "1..2s", "-1s", "1e999h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} is rejected");
        }
        assert!(parse_positive_duration("0s").is_err());
        assert!(parse_positive_duration("1ms").is_ok());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10Mi"), Ok(10 << 20));
        assert_eq!(parse_size("1G"), Ok(1_000_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("0").is_err());
        assert!(parse_size("ten").is_err());
    }
}
