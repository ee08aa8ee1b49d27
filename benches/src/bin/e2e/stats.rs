//! What a set of paired runs says: the median of the per-pair ratios, a bootstrap
//! interval around it, and whether a target holds beyond the run's noise.
//!
//! On a shared machine two back-to-back runs of one server differ by up to half,
//! so a median of a dozen pairs can land on either side of a target by chance. The
//! interval says how far the median could move: resample the pairs with
//! replacement many times and take the middle 95% of the resampled medians (a
//! percentile bootstrap). A target is met only when the whole interval is on its
//! side, missed only when the whole interval is past it, and otherwise the run
//! cannot tell.

/// How many resamples an interval is made of.
pub const RESAMPLES: usize = 10_000;

/// The fewest values an interval is made from. Below it the interval says too
/// little: one pair would give a zero-width interval, and a verdict on noise.
/// At five it is already just the lowest and the highest value (a resampled
/// median is the smallest value 6% of the time).
pub const MIN_VALUES: usize = 5;

/// The median: the middle value, or the upper of the two middle ones of an even
/// count. `None` for no values.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied()
}

/// A range the median lies in, at 95%.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

/// The percentile bootstrap interval (95%) of the median of `values`, from
/// `resamples` resamples drawn with a generator seeded by `seed` (the same inputs
/// give the same interval). `None` for fewer than [`MIN_VALUES`] values or no
/// resamples.
pub fn median_interval(values: &[f64], resamples: usize, seed: u64) -> Option<Interval> {
    if values.len() < MIN_VALUES || resamples == 0 {
        return None;
    }
    let mut state = seed | 1;
    let mut next = move || {
        // xorshift64*: enough for picking indices, and free of dependencies.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let n = values.len();
    let mut sample = vec![0.0; n];
    let mut medians = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        for slot in &mut sample {
            // The top bits, scaled to 0..n: no modulo bias worth the name for n < 2^32.
            let pick = ((next() >> 32) * n as u64) >> 32;
            *slot = values[pick as usize];
        }
        medians.push(median(&sample)?);
    }
    medians.sort_by(f64::total_cmp);
    let at = |q: f64| medians[((q * (resamples - 1) as f64).round() as usize).min(resamples - 1)];
    Some(Interval {
        low: at(0.025),
        high: at(0.975),
    })
}

/// Where an interval stands against a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The whole interval is on the target's side.
    Met,
    /// The whole interval is past the target.
    Missed,
    /// The interval straddles the target: this run cannot tell.
    Undecided,
}

impl Verdict {
    /// A ratio that must be at most `ceiling` (CPU per request against the bare
    /// server, say).
    pub fn at_most(interval: Interval, ceiling: f64) -> Verdict {
        if interval.high <= ceiling {
            Verdict::Met
        } else if interval.low > ceiling {
            Verdict::Missed
        } else {
            Verdict::Undecided
        }
    }

    /// A ratio that must be at least `floor` (a throughput against another tool's,
    /// say).
    pub fn at_least(interval: Interval, floor: f64) -> Verdict {
        if interval.low >= floor {
            Verdict::Met
        } else if interval.high < floor {
            Verdict::Missed
        } else {
            Verdict::Undecided
        }
    }

    /// How the table says it.
    pub fn text(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::Missed => "missed",
            Verdict::Undecided => "not decided: the interval straddles the target",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_takes_the_middle_or_the_upper_middle() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(3.0));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn an_interval_of_equal_values_is_that_value() {
        let interval = median_interval(&[1.2; 9], RESAMPLES, 7);
        assert_eq!(
            interval,
            Some(Interval {
                low: 1.2,
                high: 1.2
            })
        );
    }

    #[test]
    fn too_few_values_give_no_interval() {
        assert_eq!(median_interval(&[], RESAMPLES, 7), None);
        assert_eq!(median_interval(&[1.0, 1.2, 1.1, 0.9], RESAMPLES, 7), None);
        assert!(median_interval(&[1.0, 1.2, 1.1, 0.9, 1.3], RESAMPLES, 7).is_some());
        assert_eq!(median_interval(&[1.0; 9], 0, 7), None);
    }

    #[test]
    fn the_interval_of_distinct_values_is_the_binomial_answer() {
        // For n distinct values x1 < … < xn, a resampled median (the upper middle)
        // is at most xk when at least n/2 + 1 of the n draws are: a binomial
        // tail, P(Bin(n, k/n) > n/2). For n = 31 it first reaches 2.5% at k = 11
        // (k = 10: 2.0%, k = 11: 4.8%) and 97.5% at k = 21 (k = 20: 95.2%,
        // k = 21: 98.0%), so the 95% interval is [x11, x21].
        let values: Vec<f64> = (1..=31).map(f64::from).collect();
        let interval = median_interval(&values, RESAMPLES, 0x5eed).unwrap();
        assert_eq!(
            interval,
            Interval {
                low: 11.0,
                high: 21.0
            }
        );
        // The order of the values does not matter.
        let shuffled: Vec<f64> = (0..31).map(|i| f64::from((i * 7) % 31 + 1)).collect();
        assert_eq!(
            median_interval(&shuffled, RESAMPLES, 0x5eed),
            Some(interval)
        );
    }

    #[test]
    fn an_interval_holds_the_median_and_widens_with_the_spread() {
        let narrow: Vec<f64> = (0..13).map(|i| 1.10 + 0.01 * f64::from(i % 5)).collect();
        let wide: Vec<f64> = (0..13).map(|i| 0.80 + 0.10 * f64::from(i % 7)).collect();
        for values in [&narrow, &wide] {
            let interval = median_interval(values, RESAMPLES, 1).unwrap();
            let middle = median(values).unwrap();
            assert!(
                interval.low <= middle && middle <= interval.high,
                "{interval:?}"
            );
        }
        let width = |v: &[f64]| {
            let i = median_interval(v, RESAMPLES, 1).unwrap();
            i.high - i.low
        };
        assert!(width(&wide) > 2.0 * width(&narrow));
    }

    #[test]
    fn more_pairs_narrow_the_interval() {
        // The same spread of ratios, seen 9 times and 45 times.
        let spread = [0.9, 1.0, 1.05, 1.1, 1.15, 1.2, 1.3, 1.5, 1.1];
        let few = median_interval(&spread, RESAMPLES, 3).unwrap();
        let many: Vec<f64> = spread.iter().cycle().take(45).copied().collect();
        let many = median_interval(&many, RESAMPLES, 3).unwrap();
        assert!(
            many.high - many.low < few.high - few.low,
            "{few:?} {many:?}"
        );
    }

    #[test]
    fn a_verdict_needs_the_whole_interval_on_one_side() {
        let at = |low, high| Interval { low, high };
        assert_eq!(Verdict::at_most(at(1.02, 1.09), 1.11), Verdict::Met);
        assert_eq!(Verdict::at_most(at(1.02, 1.11), 1.11), Verdict::Met);
        assert_eq!(Verdict::at_most(at(1.12, 1.30), 1.11), Verdict::Missed);
        assert_eq!(Verdict::at_most(at(1.05, 1.15), 1.11), Verdict::Undecided);
        assert_eq!(Verdict::at_least(at(1.00, 1.08), 1.0), Verdict::Met);
        assert_eq!(Verdict::at_least(at(0.85, 0.99), 1.0), Verdict::Missed);
        assert_eq!(Verdict::at_least(at(0.94, 1.06), 1.0), Verdict::Undecided);
        // On the bound: not past it, so not missed.
        assert_eq!(Verdict::at_most(at(1.11, 1.20), 1.11), Verdict::Undecided);
        assert_eq!(Verdict::at_least(at(0.90, 1.00), 1.0), Verdict::Undecided);
    }
}
