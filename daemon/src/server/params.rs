//! Query parameters of the API (web/API.md, "Conventions"): times, durations, targets.
//! Every error names the parameter and the problem in one line.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A parameter the daemon cannot use: answered with 400 and this message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct BadParam(pub String);

fn bad(name: &str, value: &str, problem: &str) -> BadParam {
    BadParam(format!("bad parameter {name}: {value:?} {problem}"))
}

/// `500ms`, `60s`, `1h30m`: one or more `<integer><unit>`, units ms, s, m, h.
pub fn duration(name: &str, text: &str) -> Result<Duration, BadParam> {
    let problem = "is not a duration like 500ms, 60s, 5m or 1h30m";
    let mut rest = text;
    let mut total = Duration::ZERO;
    if rest.is_empty() {
        return Err(bad(name, text, problem));
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| bad(name, text, problem))?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else {
            return Err(bad(name, text, problem));
        };
        rest = &rest[len..];
        let part = unit
            .checked_mul(u32::try_from(number).map_err(|_| bad(name, text, "is too long"))?)
            .ok_or_else(|| bad(name, text, "is too long"))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| bad(name, text, "is too long"))?;
    }
    Ok(total)
}

/// RFC 3339, Unix seconds (fractional too), `now` or `now-DURATION`.
pub fn time(name: &str, text: &str, now: SystemTime) -> Result<SystemTime, BadParam> {
    let problem = "is not RFC 3339, unix seconds or now-DURATION";
    if text == "now" {
        return Ok(now);
    }
    if let Some(d) = text.strip_prefix("now-") {
        let d = duration(name, d).map_err(|_| bad(name, text, problem))?;
        return Ok(now.checked_sub(d).unwrap_or(UNIX_EPOCH));
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let secs: f64 = text.parse().map_err(|_| bad(name, text, problem))?;
        if !secs.is_finite() || secs > 1e11 {
            return Err(bad(name, text, "is too far in the future"));
        }
        return Ok(UNIX_EPOCH + Duration::from_secs_f64(secs));
    }
    rfc3339(text).ok_or_else(|| bad(name, text, problem))
}

/// `2026-11-21T17:39:00Z`, `2026-11-21T18:39:00.250+01:00` (also `t`, `z`, a space).
fn rfc3339(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(range)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut nanos: i64 = 0;
    if b[i] == b'.' {
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        let frac = &text[i + 1..i + 1 + digits.min(9)];
        nanos = frac.parse::<i64>().ok()? * 10i64.pow(9 - frac.len() as u32);
        i += 1 + digits;
    }
    let offset_secs = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let (h, m) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if h > 23 || m > 59 {
                return None;
            }
            let s = h * 3600 + m * 60;
            if *sign == b'+' {
                s
            } else {
                -s
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86400 + hour * 3600 + minute * 60 + second - offset_secs;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos as u32))
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2026-11-21T17:39:00.000Z`.
pub fn format_time(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// What a flame graph, diff or histogram is of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    All,
    Pid(u32),
    /// A full id or a prefix of at least 12 hex digits.
    Container(String),
}

/// `pid=N` | `container=ID` | `all` (the default); two of them is an error.
pub fn target(pid: Option<&str>, container: Option<&str>, all: bool) -> Result<Target, BadParam> {
    let given = [pid.is_some(), container.is_some(), all]
        .iter()
        .filter(|g| **g)
        .count();
    if given > 1 {
        return Err(BadParam(
            "give at most one of pid, container and all".to_string(),
        ));
    }
    if let Some(p) = pid {
        return match p.parse::<u32>() {
            Ok(n) if n > 0 => Ok(Target::Pid(n)),
            _ => Err(bad("pid", p, "is not a process id")),
        };
    }
    if let Some(c) = container {
        let c = c.to_ascii_lowercase();
        if c.len() < 12 || c.len() > 64 || !c.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(
                "container",
                &c,
                "is not a container id (64 hex digits, or a prefix of at least 12)",
            ));
        }
        return Ok(Target::Container(c));
    }
    Ok(Target::All)
}

/// A `[from, to)` range; `to` before `from` is an error.
pub fn range(
    from_name: &str,
    from: Option<&str>,
    to_name: &str,
    to: Option<&str>,
    default_from: Option<&str>,
    now: SystemTime,
) -> Result<(SystemTime, SystemTime), BadParam> {
    let from_text = from
        .or(default_from)
        .ok_or_else(|| BadParam(format!("missing parameter {from_name}")))?;
    let to_text = match (to, default_from) {
        (Some(t), _) => t,
        (None, Some(_)) => "now",
        (None, None) => return Err(BadParam(format!("missing parameter {to_name}"))),
    };
    let from = time(from_name, from_text, now)?;
    let to = time(to_name, to_text, now)?;
    if to < from {
        return Err(BadParam(format!(
            "bad range: {to_name} ({to_text}) is before {from_name} ({from_text})"
        )));
    }
    Ok((from, to))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn durations_of_the_api() {
        assert_eq!(duration("w", "500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("w", "1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(duration("w", "60s"), Ok(Duration::from_secs(60)));
        for bad in ["", "5", "s", "5d", "1.5s", "-1s", "99999999999h"] {
            let e = duration("window", bad).expect_err(bad);
            assert!(e.0.contains("window"), "{e}");
        }
    }

    #[test]
    fn times_in_every_accepted_form() {
        let now = at(1_795_282_800);
        assert_eq!(
            time("from", "2026-11-21T17:39:00Z", now),
            Ok(at(1_795_282_740))
        );
        assert_eq!(
            time("from", "2026-11-21T18:39:00.250+01:00", now),
            Ok(at(1_795_282_740) + Duration::from_millis(250))
        );
        assert_eq!(
            time("from", "1795282740.25", now),
            Ok(at(1_795_282_740) + Duration::from_millis(250))
        );
        assert_eq!(time("from", "now", now), Ok(now));
        assert_eq!(time("from", "now-1h30m", now), Ok(at(1_795_282_800 - 5400)));
        let e = time("from", "yesterday", now).expect_err("bad");
        assert_eq!(
            e.0,
            "bad parameter from: \"yesterday\" is not RFC 3339, unix seconds or now-DURATION"
        );
        for bad in [
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-11-21T17:39:00",
            "2026-11-21T17:39:00+1",
            "now-",
            "1e9",
            "1.2.3",
        ] {
            assert!(time("to", bad, now).is_err(), "{bad}");
        }
        assert_eq!(format_time(at(1_795_282_740)), "2026-11-21T17:39:00.000Z");
    }

    #[test]
    fn targets_and_ranges() {
        assert_eq!(target(None, None, false), Ok(Target::All));
        assert_eq!(target(Some("42"), None, false), Ok(Target::Pid(42)));
        assert!(target(Some("42"), None, true).is_err());
        assert!(target(Some("x"), None, false).is_err());
        assert!(target(None, Some("abc"), false).is_err());
        assert_eq!(
            target(None, Some("3F9A1C0D5E7B"), false),
            Ok(Target::Container("3f9a1c0d5e7b".into()))
        );
        let now = at(1000);
        assert_eq!(
            range("from", None, "to", None, Some("now-1m"), now),
            Ok((at(940), at(1000)))
        );
        assert!(range("from", Some("now"), "to", Some("now-1m"), None, now).is_err());
        let e = range("a_from", None, "a_to", None, None, now).expect_err("required");
        assert!(e.0.contains("a_from"), "{e}");
    }
}
