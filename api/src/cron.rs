//! Standard five-field cron schedules and the `@`-macros, as CronJobs use them.

/// A parsed schedule: the allowed values of each field as bit sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Minutes 0-59.
    pub minutes: u64,
    /// Hours 0-23.
    pub hours: u32,
    /// Days of month 1-31.
    pub days_of_month: u32,
    /// Months 1-12.
    pub months: u16,
    /// Days of week 0-6 (Sunday = 0).
    pub days_of_week: u8,
    /// Whether both day fields were restricted (then either may match, as in cron).
    pub day_or: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl Schedule {
    /// Parses `*/5 * * * *`, `0 9 * * mon-fri`, `@hourly` and the like.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.starts_with("TZ=") || s.starts_with("CRON_TZ=") {
            return Err("cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into());
        }
        let expanded = match s {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other if other.starts_with('@') => {
                return Err(format!("unrecognized descriptor: {other}"));
            }
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "expected exactly 5 fields, found {}: {s}",
                fields.len()
            ));
        }
        let minutes = field(fields[0], 0, 59, &[])?;
        let hours = field(fields[1], 0, 23, &[])?;
        let dom = field(fields[2], 1, 31, &[])?;
        let months = field(fields[3], 1, 12, &MONTHS)?;
        let mut dow = field(fields[4], 0, 7, &DAYS)?;
        if dow & (1 << 7) != 0 {
            dow |= 1; // 7 is Sunday too
        }
        Ok(Self {
            minutes,
            hours: hours as u32,
            days_of_month: dom as u32,
            months: months as u16,
            days_of_week: (dow & 0x7f) as u8,
            day_or: !unrestricted(fields[2]) && !unrestricted(fields[4]),
        })
    }

    /// True when the schedule fires at this minute (fields in the schedule's time zone;
    /// `weekday` has Sunday = 0).
    pub fn matches(&self, minute: u32, hour: u32, day: u32, month: u32, weekday: u32) -> bool {
        let dom = self.days_of_month & (1 << day) != 0;
        let dow = self.days_of_week & (1 << weekday) != 0;
        let day_ok = if self.day_or { dom || dow } else { dom && dow };
        self.minutes & (1 << minute) != 0
            && self.hours & (1 << hour) != 0
            && self.months & (1 << month) != 0
            && day_ok
    }
}

/// `*` (or `?`) without a step: the field restricts nothing (`*/2` does, as in cron).
fn unrestricted(field: &str) -> bool {
    matches!(field, "*" | "?" | "*/1" | "?/1")
}

fn field(s: &str, min: u32, max: u32, names: &[&str]) -> Result<u64, String> {
    let mut bits = 0u64;
    for part in s.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, st)) => {
                let step: u32 = st
                    .parse()
                    .map_err(|_| format!("failed to parse int from {st}"))?;
                if step == 0 {
                    return Err(format!("step of range should be a positive number: {part}"));
                }
                (r, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" || range == "?" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a, names, min)?, value(b, names, min)?)
        } else {
            let v = value(range, names, min)?;
            (v, if part.contains('/') { max } else { v })
        };
        if lo < min || hi > max || lo > hi {
            return Err(format!(
                "end of range ({hi}) above maximum ({max}) or beginning of range ({lo}) below minimum ({min}): {part}"
            ));
        }
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

fn value(s: &str, names: &[&str], offset: u32) -> Result<u32, String> {
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
        return Ok(i as u32 + offset);
    }
    s.parse()
        .map_err(|_| format!("failed to parse int from {s}"))
}

#[cfg(test)]
mod tests {
    use super::Schedule;

    #[test]
    fn parses_and_matches() {
        let s = Schedule::parse("*/15 9-17 * * mon-fri").unwrap();
        assert!(s.matches(30, 10, 5, 3, 1));
        assert!(!s.matches(31, 10, 5, 3, 1));
        assert!(!s.matches(30, 10, 5, 3, 0));
        let h = Schedule::parse("@hourly").unwrap();
        assert!(h.matches(0, 3, 1, 1, 4));
        assert!(!h.matches(1, 3, 1, 1, 4));
        assert!(Schedule::parse("* * *").is_err());
        assert!(Schedule::parse("61 * * * *").is_err());
        assert!(Schedule::parse("TZ=UTC * * * * *").is_err());
        assert!(Schedule::parse("0 0 1 jan *").is_ok());
        // Both day fields restricted: either matches; one a plain `*`: the other decides.
        let either = Schedule::parse("0 0 */2 * mon").unwrap();
        assert!(either.matches(0, 0, 2, 1, 1) && either.matches(0, 0, 3, 1, 3));
        assert!(!either.matches(0, 0, 2, 1, 2));
        let both = Schedule::parse("0 0 * * mon").unwrap();
        assert!(!both.matches(0, 0, 3, 1, 3) && both.matches(0, 0, 4, 1, 1));
    }
}
