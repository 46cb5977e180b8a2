//! Kubernetes resource quantities (`100m`, `128Mi`, `1.5`, `2e3`).

/// Parses a quantity into a number of milli-units (cpu `100m` → 100, memory `1Ki` → 1,024,000).
/// Milli-units keep cpu exact; memory in bytes fits easily (i128 guards the arithmetic).
pub fn parse_milli(s: &str) -> Result<i128, String> {
    let s = s.trim();
    let invalid = || {
        format!(
            "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$' (got {s:?})"
        )
    };
    if s.is_empty() {
        return Err(invalid());
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    if number.is_empty() || number == "+" || number == "-" || number.matches('.').count() > 1 {
        return Err(invalid());
    }
    let (negative, digits) = match number.as_bytes()[0] {
        b'-' => (true, &number[1..]),
        b'+' => (false, &number[1..]),
        _ => (false, number),
    };
    if digits.is_empty() || digits.contains(['+', '-']) {
        return Err(invalid());
    }
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    // value = mantissa * 10^exp10 * 2^exp2, kept as an exact rational over powers of ten.
    let mantissa: i128 = format!("{int_part}{frac_part}")
        .parse()
        .map_err(|_| invalid())?;
    let mut exp10: i32 = -(frac_part.len() as i32);
    let mut exp2: u32 = 0;
    match suffix {
        "" => {}
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        "Ki" => exp2 = 10,
        "Mi" => exp2 = 20,
        "Gi" => exp2 = 30,
        "Ti" => exp2 = 40,
        "Pi" => exp2 = 50,
        "Ei" => exp2 = 60,
        e if e.starts_with(['e', 'E']) => {
            exp10 += e[1..].parse::<i32>().map_err(|_| invalid())?;
        }
        _ => return Err(invalid()),
    }
    exp10 += 3; // to milli-units
    let mut value = mantissa.checked_mul(1i128 << exp2).ok_or_else(invalid)?;
    if exp10 >= 0 {
        value = value
            .checked_mul(10i128.checked_pow(exp10 as u32).ok_or_else(invalid)?)
            .ok_or_else(invalid)?;
    } else {
        let div = 10i128.checked_pow((-exp10) as u32).unwrap_or(i128::MAX);
        // Round up, as Kubernetes does when a quantity is scaled to a coarser unit.
        value = (value + div - 1) / div;
    }
    Ok(if negative { -value } else { value })
}

/// Whether a quantity is written with a binary suffix (`Ki`, `Mi`, ...), so sums of it print
/// in the same form, as Kubernetes keeps a quantity's format.
pub fn is_binary(s: &str) -> bool {
    s.trim().ends_with('i')
}

/// Formats milli-units in Kubernetes' canonical form: `500m`, `2`, `1k` in decimal; `128Mi`,
/// `1Gi` in binary when the value is a whole number of at least 1024 (otherwise decimal, as
/// Kubernetes does to avoid losing precision).
pub fn format_milli(milli: i128, binary: bool) -> String {
    if milli % 1000 != 0 {
        return format!("{milli}m");
    }
    let mut units = milli / 1000;
    if units == 0 {
        return "0".into();
    }
    if binary && units.abs() >= 1024 {
        let mut suffix = 0;
        while units % 1024 == 0 && suffix < 6 {
            units /= 1024;
            suffix += 1;
        }
        return format!(
            "{units}{}",
            ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][suffix]
        );
    }
    let mut suffix = 0;
    while units % 1000 == 0 && suffix < 6 {
        units /= 1000;
        suffix += 1;
    }
    format!("{units}{}", ["", "k", "M", "G", "T", "P", "E"][suffix])
}

#[cfg(test)]
mod tests {
    use super::{format_milli, is_binary, parse_milli};

    #[test]
    fn parses_common_forms() {
        assert_eq!(parse_milli("100m"), Ok(100));
        assert_eq!(parse_milli("1"), Ok(1000));
        assert_eq!(parse_milli("1.5"), Ok(1500));
        assert_eq!(parse_milli("128Mi"), Ok(128 * 1024 * 1024 * 1000));
        assert_eq!(parse_milli("1k"), Ok(1_000_000));
        assert_eq!(parse_milli("2e3"), Ok(2_000_000));
        assert_eq!(parse_milli("-1"), Ok(-1000));
        assert!(parse_milli("12x").is_err());
        assert!(parse_milli("").is_err());
        assert!(parse_milli("1..2").is_err());
    }

    #[test]
    fn formats_canonically() {
        assert_eq!(format_milli(500, false), "500m");
        assert_eq!(format_milli(1000, false), "1");
        assert_eq!(format_milli(1500, false), "1500m");
        assert_eq!(format_milli(0, true), "0");
        assert_eq!(format_milli(2_000_000, false), "2k");
        assert_eq!(format_milli(parse_milli("256Mi").unwrap(), true), "256Mi");
        assert_eq!(format_milli(parse_milli("1024Mi").unwrap(), true), "1Gi");
        assert_eq!(format_milli(parse_milli("100").unwrap(), true), "100");
        assert_eq!(format_milli(parse_milli("1000m").unwrap(), false), "1");
        assert!(is_binary("128Mi") && !is_binary("128M") && !is_binary("1"));
    }
}
