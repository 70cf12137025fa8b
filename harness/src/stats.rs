//! Small statistics over `f64` values (mean, medians), the one home of each for the library
//! and the binary. Low in the module floor: it imports nothing of the crate.

use std::borrow::Borrow;

/// Mean of `values` (0 for none), summed in order.
pub fn mean<I>(values: I) -> f64
where
    I: IntoIterator,
    I::Item: Borrow<f64>,
{
    let (sum, count) = values.into_iter().fold((0.0, 0usize), |(s, c), v| (s + *v.borrow(), c + 1));
    if count == 0 {
        0.0
    } else {
        sum / count as f64
    }
}

/// Median of sorted values (mean of the middle two for an even count; NaN for none).
pub fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => f64::midpoint(sorted[n / 2 - 1], sorted[n / 2]),
    }
}

/// The upper of the middle values of `values` in any order (the middle one for an odd count;
/// `None` for none): what calibration keeps of a probe's repetitions, a value that was measured.
pub fn upper_median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(values[values.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::{mean, median, upper_median};

    #[test]
    fn means_of_slices_and_iterators_agree_and_none_is_zero() {
        assert!((mean([1.0, 2.0, 6.0]) - 3.0).abs() < 1e-12);
        let slice: &[f64] = &[1.0, 2.0, 6.0];
        assert!((mean(slice) - 3.0).abs() < 1e-12);
        assert!((mean(vec![0.5, 1.0].into_iter().map(|x| x * 2.0)) - 1.5).abs() < 1e-12);
        assert!(mean(Vec::<f64>::new()).abs() < f64::EPSILON);
    }

    #[test]
    fn medians() {
        assert!((median(&[1.0, 2.0, 4.0, 8.0]) - 3.0).abs() < 1e-12);
        assert!(median(&[]).is_nan());
        assert_eq!(upper_median(vec![8.0, 1.0, 4.0, 2.0]), Some(4.0));
        assert_eq!(upper_median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(upper_median(Vec::new()), None);
    }
}
