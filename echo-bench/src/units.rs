//! Numbers on the command line with their units: `10s`, `250ms`, `50k`,
//! `4KiB`. Each parser takes the whole argument and says in one line what
//! it could not read; a plain number keeps its old meaning (seconds,
//! a count, bytes), so every command line that worked before still does.
//!
//! Counts use decimal multipliers (`k` = 1,000, `m` = 1,000,000: "50k
//! connections"); byte sizes take both kinds and say which by their name
//! (`k`, `K`, `KiB` = 1,024 as most tools read a size; `kB`, `KB` =
//! 1,000; the same for `M`/`MiB` and `MB`).

/// A count such as `-c 50k` or `--min-rps 1.5m`: a whole number, with an
/// optional `k` (10^3) or `m` (10^6); the result must be whole.
pub fn parse_count(s: &str) -> Result<u64, String> {
    let (num, mult) = split(s);
    let mult = match mult {
        "" => 1.0,
        "k" | "K" => 1e3,
        "m" | "M" => 1e6,
        "g" | "G" => 1e9,
        u => return Err(format!("unknown unit {u:?} in {s:?} (use k or m)")),
    };
    whole(num, mult, s)
}

/// A byte size such as `-s 4KiB`: a number, with an optional `B`, `k`,
/// `K`, `KiB` (1,024), `kB`, `KB` (1,000), `M`, `MiB` (1,048,576), `MB`
/// (10^6).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (num, unit) = split(s);
    let mult = match unit {
        "" | "B" | "b" => 1.0,
        "k" | "K" | "KiB" | "kiB" | "Ki" => 1024.0,
        "kB" | "KB" => 1e3,
        "M" | "m" | "MiB" | "Mi" => 1024.0 * 1024.0,
        "MB" => 1e6,
        u => {
            return Err(format!(
                "unknown unit {u:?} in {s:?} (use B, KiB, KB, MiB or MB)"
            ));
        }
    };
    whole(num, mult, s)
}

/// A time such as `-t 10s`: seconds when no unit is given; `ms`, `s`,
/// `m` (minutes) and `h` otherwise. Fractions are fine (`1.5s`).
pub fn parse_secs(s: &str) -> Result<f64, String> {
    let (num, unit) = split(s);
    let mult = match unit {
        "" | "s" | "sec" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        u => return Err(format!("unknown unit {u:?} in {s:?} (use ms, s, m or h)")),
    };
    let v = number(num, s)? * mult;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("{s:?} is not a number of seconds"))
    }
}

/// The number and the unit after it (`"4KiB"` -> `("4", "KiB")`).
fn split(s: &str) -> (&str, &str) {
    let s = s.trim();
    let at = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(s.len());
    (&s[..at], s[at..].trim())
}

fn number(num: &str, whole_arg: &str) -> Result<f64, String> {
    num.replace('_', "")
        .parse::<f64>()
        .map_err(|_| format!("{whole_arg:?} is not a number"))
}

/// `num * mult`, which must come out a whole number that fits.
fn whole(num: &str, mult: f64, s: &str) -> Result<u64, String> {
    if mult == 1.0 && !num.contains('.') {
        // Exact for every u64, with no detour through a float.
        return num
            .replace('_', "")
            .parse::<u64>()
            .map_err(|_| format!("{s:?} is not a whole number"));
    }
    let v = number(num, s)? * mult;
    if v.fract() != 0.0 || !(0.0..=u64::MAX as f64).contains(&v) {
        return Err(format!("{s:?} is not a whole number"));
    }
    Ok(v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_take_decimal_multipliers() {
        assert_eq!(parse_count("50k"), Ok(50_000));
        assert_eq!(parse_count("1k"), Ok(1_000));
        assert_eq!(parse_count("1.5m"), Ok(1_500_000));
        assert_eq!(parse_count("20000"), Ok(20_000));
        assert_eq!(parse_count("18446744073709551615"), Ok(u64::MAX));
        assert!(parse_count("1.5").is_err());
        assert!(parse_count("5x").is_err());
        assert!(parse_count("").is_err());
    }

    #[test]
    fn sizes_say_binary_or_decimal_by_their_name() {
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("4KB"), Ok(4000));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("64"), Ok(64));
        assert_eq!(parse_size("64B"), Ok(64));
        assert!(parse_size("4 parsecs").is_err());
    }

    #[test]
    fn times_are_seconds_unless_they_say_otherwise() {
        assert_eq!(parse_secs("10s"), Ok(10.0));
        assert_eq!(parse_secs("2"), Ok(2.0));
        assert_eq!(parse_secs("250ms"), Ok(0.25));
        assert_eq!(parse_secs("1.5s"), Ok(1.5));
        assert_eq!(parse_secs("2m"), Ok(120.0));
        assert!(parse_secs("10 fortnights").is_err());
    }
}
