//! Durations as people write them in topology files, settings and flags:
//! `90s`, `2m`, `1h 30m` (humantime's grammar), or a bare number of
//! seconds, as in the reference's configuration.
//!
//! Pure: no I/O.

use std::time::Duration;

/// Parse `text` (surrounding white space ignored). The error is the
/// parser's own words; callers say what was expected where.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    match text.parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(text).map_err(|e| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_bare_seconds() {
        assert_eq!(parse("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse(" 90s "), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("soon"), Err("expected number at 0".to_string()));
    }
}
