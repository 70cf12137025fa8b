//! Date normalisation to ISO `YYYY-MM-DD` for the `date` matcher.
//!
//! Understood: `2010-01-01`, `2010/01/01`, `1/1/2010`, `01/01/10`, `January 1, 2010`,
//! `Jan. 1, 2010`, `January 1st, 2010`, `1 January 2010`, `1st day of January, 2010`. Numeric
//! dates that do not start with a four-digit year are read in a [`DateOrder`]: month first (US
//! order, as in CUAD; the default) or day first (`25/03/2020`). A task's order comes from its
//! gold values ([`OrderEvidence`]) or `day-first` in `task.toml`; a numeric date that is not
//! valid in that order does not normalise (`13/1/2010` month first). Two-digit years follow the
//! data set: 50-99 -> 19xx, 00-49 -> 20xx. Several dates joined by `;` normalise item by item.
//! Anything else (`perpetual`, `[]/[]/2020`) gives `None`.

/// How a numeric date without a leading four-digit year is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DateOrder {
    /// `03/25/2020` (US order).
    #[default]
    MonthFirst,
    /// `25/03/2020`.
    DayFirst,
}

impl DateOrder {
    /// `DayFirst` when `day_first`, else `MonthFirst`.
    pub fn day_first(day_first: bool) -> DateOrder {
        if day_first {
            DateOrder::DayFirst
        } else {
            DateOrder::MonthFirst
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DateOrder::MonthFirst => "month first",
            DateOrder::DayFirst => "day first",
        }
    }
}

/// ISO `YYYY-MM-DD` for one date, or several joined by `"; "`, month first; `None` if any part
/// is not a complete, valid date.
pub fn normalize_dates(text: &str) -> Option<String> {
    normalize_dates_in(text, DateOrder::MonthFirst)
}

/// [`normalize_dates`] with numeric dates read in `order`.
pub fn normalize_dates_in(text: &str, order: DateOrder) -> Option<String> {
    let parts: Option<Vec<String>> = text.split(';').map(|part| normalize_date_in(part, order)).collect();
    parts.map(|p| p.join("; "))
}

/// ISO `YYYY-MM-DD` for one date in a common format (numeric dates month first), or `None`.
pub fn normalize_date(text: &str) -> Option<String> {
    normalize_date_in(text, DateOrder::MonthFirst)
}

/// [`normalize_date`] with numeric dates read in `order`.
pub fn normalize_date_in(text: &str, order: DateOrder) -> Option<String> {
    let text = text.trim().to_lowercase();
    let (year, month, day) = numeric(&text, order).or_else(|| textual(&text))?;
    valid(year, month, day).then(|| format!("{year:04}-{month:02}-{day:02}"))
}

fn valid(year: u32, month: u32, day: u32) -> bool {
    (1..=12).contains(&month) && (1..=days_in_month(year, month)).contains(&day)
}

/// What gold values say about the order of their numeric dates: each complete numeric date
/// (not year first) that is valid in one order only counts for that order (`25/03/2020`: day
/// first; `03/25/2020`: month first); one valid both ways (`01/02/2020`) is ambiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OrderEvidence {
    pub day_first: usize,
    pub month_first: usize,
    pub ambiguous: usize,
}

impl OrderEvidence {
    /// Counts the dates of one value (several joined by `;` count one by one).
    pub fn add(&mut self, text: &str) {
        for part in text.split(';') {
            let part = part.trim();
            if split_numeric(part).is_none_or(|groups| groups[0].len() == 4) {
                continue; // not numeric, or year first: no order to learn
            }
            let valid_in = |order| numeric(part, order).is_some_and(|(y, m, d)| valid(y, m, d));
            match (valid_in(DateOrder::MonthFirst), valid_in(DateOrder::DayFirst)) {
                (true, true) => self.ambiguous += 1,
                (true, false) => self.month_first += 1,
                (false, true) => self.day_first += 1,
                (false, false) => {}
            }
        }
    }

    /// The order the evidence favours: day first when more dates prove it than prove month
    /// first; month first otherwise (ambiguous-only or no numeric dates keep the default).
    pub fn order(&self) -> DateOrder {
        DateOrder::day_first(self.day_first > self.month_first)
    }

    /// Dates that can only be read in the order other than `order`.
    pub fn against(&self, order: DateOrder) -> usize {
        match order {
            DateOrder::MonthFirst => self.day_first,
            DateOrder::DayFirst => self.month_first,
        }
    }
}

/// The three digit groups of a numeric date (`1/2/2010`, `2010-01-02`, `1.2.10`), or `None`.
fn split_numeric(text: &str) -> Option<[&str; 3]> {
    let sep = text.chars().find(|c| !c.is_ascii_digit())?;
    if !matches!(sep, '-' | '/' | '.') {
        return None;
    }
    let parts: Vec<&str> = text.split(sep).collect();
    let [a, b, c] = parts.as_slice() else {
        return None;
    };
    if [a, b, c].iter().any(|p| p.is_empty() || p.len() > 4 || !p.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    Some([*a, *b, *c])
}

/// `2010-01-01`, `2010/1/1`, `1/1/2010`, `01-01-10`, `1.1.2010`: (year, month, day), the
/// middle and first groups swapped for `DayFirst`.
fn numeric(text: &str, order: DateOrder) -> Option<(u32, u32, u32)> {
    let [a, b, c] = split_numeric(text)?;
    if a.len() == 4 && b.len() <= 2 && c.len() <= 2 {
        Some((a.parse().ok()?, b.parse().ok()?, c.parse().ok()?))
    } else if a.len() <= 2 && b.len() <= 2 {
        let (month, day) = match order {
            DateOrder::MonthFirst => (a, b),
            DateOrder::DayFirst => (b, a),
        };
        Some((year(c)?, month.parse().ok()?, day.parse().ok()?))
    } else {
        None
    }
}

/// `january 1 2010`, `jan. 1st, 2010`, `1 january 2010`, `the 1st day of january, 2010`.
fn textual(text: &str) -> Option<(u32, u32, u32)> {
    let cleaned: String = text.chars().map(|c| if matches!(c, ',' | '.') { ' ' } else { c }).collect();
    let tokens: Vec<&str> = cleaned.split_whitespace().filter(|t| !matches!(*t, "the" | "this" | "day" | "of")).collect();
    let [first, second, third] = tokens.as_slice() else {
        return None;
    };
    let (month, day) = match month(first) {
        Some(m) => (m, day(second)?),
        None => (month(second)?, day(first)?),
    };
    Some((year(third)?, month, day))
}

/// A day of the month, with an optional ordinal suffix (`1`, `01`, `1st`, `22nd`).
fn day(token: &str) -> Option<u32> {
    let digits = ["st", "nd", "rd", "th"].iter().find_map(|suffix| token.strip_suffix(suffix)).unwrap_or(token);
    (!digits.is_empty() && digits.len() <= 2 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok()).flatten()
}

/// A four-digit year, or a two-digit one with the data set's pivot.
fn year(token: &str) -> Option<u32> {
    if !token.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u32 = token.parse().ok()?;
    match token.len() {
        4 => Some(value),
        2 if value >= 50 => Some(1900 + value),
        2 => Some(2000 + value),
        _ => None,
    }
}

/// Month number for an English month name or abbreviation (already lower-case).
fn month(token: &str) -> Option<u32> {
    const NAMES: [&str; 12] = [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
    ];
    if token == "sept" {
        return Some(9);
    }
    NAMES.iter().position(|name| *name == token || (token.len() == 3 && name.starts_with(token))).map(|i| i as u32 + 1)
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::{normalize_date, normalize_date_in, normalize_dates, normalize_dates_in, DateOrder, OrderEvidence};

    fn iso(text: &str) -> Option<String> {
        normalize_date(text)
    }

    #[test]
    fn iso_dates() {
        assert_eq!(iso("2010-01-01").as_deref(), Some("2010-01-01"));
        assert_eq!(iso(" 2010-1-5 ").as_deref(), Some("2010-01-05"));
        assert_eq!(iso("2010/01/01").as_deref(), Some("2010-01-01"));
    }

    #[test]
    fn us_numeric_dates() {
        assert_eq!(iso("1/1/2010").as_deref(), Some("2010-01-01"));
        assert_eq!(iso("12/31/2010").as_deref(), Some("2010-12-31"));
        assert_eq!(iso("01/02/2010").as_deref(), Some("2010-01-02"));
        assert_eq!(iso("1-2-2010").as_deref(), Some("2010-01-02"));
    }

    #[test]
    fn two_digit_years_pivot_at_50() {
        assert_eq!(iso("01/01/10").as_deref(), Some("2010-01-01"));
        assert_eq!(iso("1/1/49").as_deref(), Some("2049-01-01"));
        assert_eq!(iso("1/1/50").as_deref(), Some("1950-01-01"));
        assert_eq!(iso("6/30/99").as_deref(), Some("1999-06-30"));
        assert_eq!(iso("7/4/00").as_deref(), Some("2000-07-04"));
    }

    #[test]
    fn month_name_dates() {
        assert_eq!(iso("January 1, 2010").as_deref(), Some("2010-01-01"));
        assert_eq!(iso("january 1 2010").as_deref(), Some("2010-01-01"));
        assert_eq!(iso("Jan. 1, 2010").as_deref(), Some("2010-01-01"));
        assert_eq!(iso("Sept. 30, 2015").as_deref(), Some("2015-09-30"));
        assert_eq!(iso("January 1st, 2010").as_deref(), Some("2010-01-01"));
        assert_eq!(iso("March 22nd, 2001").as_deref(), Some("2001-03-22"));
        assert_eq!(iso("DECEMBER 3RD, 1999").as_deref(), Some("1999-12-03"));
    }

    #[test]
    fn day_first_dates() {
        assert_eq!(iso("1 January 2010").as_deref(), Some("2010-01-01"));
        assert_eq!(iso("15 Feb 2012").as_deref(), Some("2012-02-15"));
        assert_eq!(iso("1st day of January, 2010").as_deref(), Some("2010-01-01"));
        assert_eq!(iso("the 21st day of June, 2004").as_deref(), Some("2004-06-21"));
        assert_eq!(iso("this 2nd day of May 2019").as_deref(), Some("2019-05-02"));
    }

    #[test]
    fn invalid_or_partial_dates_do_not_normalise() {
        for text in [
            "perpetual",
            "[]/[]/2020",
            "09/[]/2019",
            "12/01/[]",
            "2/30/2010",
            "13/1/2010",
            "2010-13-01",
            "January 32, 2010",
            "Jan 2010",
            "1/1/123",
            "",
            "5 years",
            "Foo 1, 2010",
        ] {
            assert_eq!(iso(text), None, "{text:?}");
        }
    }

    #[test]
    fn leap_years() {
        assert_eq!(iso("2/29/2012").as_deref(), Some("2012-02-29"));
        assert_eq!(iso("2/29/2000").as_deref(), Some("2000-02-29"));
        assert_eq!(iso("2/29/1900"), None);
        assert_eq!(iso("2/29/2011"), None);
    }

    #[test]
    fn several_dates() {
        assert_eq!(normalize_dates("09/01/2006; 8/31/2007").as_deref(), Some("2006-09-01; 2007-08-31"));
        assert_eq!(normalize_dates("2006-09-01;2007-08-31").as_deref(), Some("2006-09-01; 2007-08-31"));
        assert_eq!(normalize_dates("09/01/2006; perpetual"), None);
    }

    #[test]
    fn day_first_order_reads_numeric_dates_day_first() {
        let dmy = |t: &str| normalize_date_in(t, DateOrder::DayFirst);
        assert_eq!(dmy("25/03/2020").as_deref(), Some("2020-03-25"));
        assert_eq!(dmy("1/2/2010").as_deref(), Some("2010-02-01"));
        assert_eq!(dmy("31.12.99").as_deref(), Some("1999-12-31"));
        assert_eq!(dmy("03/25/2020"), None, "no 25th month");
        // Year-first and month-name dates do not depend on the order.
        assert_eq!(dmy("2010-02-01").as_deref(), Some("2010-02-01"));
        assert_eq!(dmy("February 1, 2010").as_deref(), Some("2010-02-01"));
        assert_eq!(dmy("1 February 2010").as_deref(), Some("2010-02-01"));
        assert_eq!(normalize_dates_in("25/03/2020; 1/2/2010", DateOrder::DayFirst).as_deref(), Some("2020-03-25; 2010-02-01"));
        // Month first (the default) is what `normalize_date` does.
        assert_eq!(normalize_date_in("1/2/2010", DateOrder::MonthFirst), normalize_date("1/2/2010"));
        assert_eq!(normalize_date("25/03/2020"), None);
    }

    #[test]
    fn gold_values_decide_the_order() {
        let evidence = |values: &[&str]| {
            let mut e = OrderEvidence::default();
            for v in values {
                e.add(v);
            }
            e
        };
        // One day-first date proves the convention; ambiguous ones follow it.
        let e = evidence(&["01/02/2020", "25/03/2020", "2020-04-01", "March 3, 2020", "perpetual"]);
        assert_eq!(e, OrderEvidence { day_first: 1, month_first: 0, ambiguous: 1 });
        assert_eq!(e.order(), DateOrder::DayFirst);
        assert_eq!(e.against(DateOrder::MonthFirst), 1);
        let e = evidence(&["03/25/2020", "01/02/2020; 12/31/2019"]);
        assert_eq!(e, OrderEvidence { day_first: 0, month_first: 2, ambiguous: 1 });
        assert_eq!(e.order(), DateOrder::MonthFirst);
        // Ambiguous only, ISO only, or nothing: month first.
        assert_eq!(evidence(&["01/02/2020", "5/6/21"]).order(), DateOrder::MonthFirst);
        assert_eq!(evidence(&["2020-12-25", "[]/[]/2020"]), OrderEvidence::default());
        // Mixed: the majority wins.
        assert_eq!(evidence(&["25/03/2020", "26/03/2020", "03/27/2020"]).order(), DateOrder::DayFirst);
        assert_eq!(evidence(&["25/03/2020", "03/27/2020"]).order(), DateOrder::MonthFirst, "a tie keeps month first");
    }
}
