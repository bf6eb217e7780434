//! `infermesh ab report`: reads the A/B counts a gateway serves at `GET /api/v1/experiments`
//! and prints, per arm, impressions, clicks and click-through rate with a 95% Wilson score
//! interval, and for every arm after the first a two-proportion z-test against the first
//! (the control).
//!
//! The statistics are written here rather than taken from a crate: they are a few lines
//! each, and the one delicate part, the normal tail probability, is computed from `erfc` by
//! two standard expansions chosen so neither cancels (see [`erfc`]) and checked against
//! known values.
//!
//! - Wilson interval for `x` clicks in `n` impressions, `p = x/n`, `z = 1.959964`:
//!   `(p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)`.
//! - z-test with pooled standard error: `p = (x1+x2)/(n1+n2)`,
//!   `se = sqrt(p(1-p)(1/n1 + 1/n2))`, `z = (p2 - p1)/se`, two-sided `P = erfc(|z|/√2)`.

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::experiment::{ExperimentCounts, ExperimentsResponse};

/// The 0.975 quantile of the standard normal distribution (two-sided 95%).
pub const Z_95: f64 = 1.959_963_984_540_054;

/// `infermesh ab ...`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AbCommand {
    /// Impressions, clicks, CTR with 95% Wilson intervals and z-tests against the control
    /// (the first arm), from a running gateway's counts.
    Report(ReportArgs),
}

/// `infermesh ab report` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// Base URL of the gateway whose counts are read (GET <URL>/api/v1/experiments).
    #[arg(
        long,
        env = "INFERMESH_GATEWAY_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub gateway: String,
    /// Report only this experiment (default: every experiment the gateway runs).
    #[arg(long)]
    pub experiment: Option<String>,
    /// Print the report as JSON instead of a table (default: a table).
    #[arg(long)]
    pub json: bool,
    /// How long to wait for the gateway, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,
}

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AbError {
    /// The gateway could not be reached or answered garbage.
    #[error("cannot read {url}: {source}")]
    Http {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// The gateway answered with an error.
    #[error("{url} answered {status}: {body}")]
    Status {
        /// The URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// Its body.
        body: String,
    },
    /// No experiment of that name.
    #[error("the gateway runs no experiment '{name}' (it runs: {available})")]
    NoSuchExperiment {
        /// Asked for.
        name: String,
        /// What there is.
        available: String,
    },
    /// The report could not be encoded.
    #[error("cannot encode the report: {0}")]
    Encode(#[from] serde_json::Error),
}

/// A comparison of an arm with the control.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Comparison {
    /// The control arm's name.
    pub control: String,
    /// CTR of the arm minus CTR of the control.
    pub ctr_difference: f64,
    /// z statistic (pooled standard error).
    pub z: f64,
    /// Two-sided p-value.
    pub p_value: f64,
}

/// One arm in the report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ArmReport {
    /// Arm name.
    pub arm: String,
    /// Items served.
    pub impressions: u64,
    /// Clicks.
    pub clicks: u64,
    /// clicks / impressions (null without impressions).
    pub ctr: Option<f64>,
    /// 95% Wilson interval of the CTR (null without impressions, or with more clicks than
    /// impressions).
    pub ctr_ci95: Option<[f64; 2]>,
    /// Test against the control (null for the control, or when it cannot be computed).
    pub vs_control: Option<Comparison>,
}

/// One experiment in the report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExperimentReport {
    /// Name.
    pub experiment: String,
    /// Arms, the control first.
    pub arms: Vec<ArmReport>,
}

/// The report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// Experiments.
    pub experiments: Vec<ExperimentReport>,
}

/// The complementary error function, `erfc(x) = 1 - erf(x)`, to about 1e-15 relative
/// error.
///
/// For `|x| < 2.5`, the series `erf(x) = 2/√π · e^(-x²) · Σ (2x²)^n x / (1·3·…·(2n+1))`,
/// whose terms are all positive (unlike the Maclaurin series, which cancels badly); for
/// `x ≥ 2.5`, the continued fraction `erfc(x) = e^(-x²)/√π · 1/(x + (1/2)/(x + 1/(x +
/// (3/2)/(x + …))))` evaluated by the modified Lentz method, which converges fast there and
/// keeps the relative precision of the small tail. Negative `x` uses `erfc(-x) = 2 - erfc(x)`.
pub fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    if x < 2.5 {
        let x2 = x * x;
        let mut term = x;
        let mut sum = x;
        let mut n = 0.0;
        while term > sum * 1e-17 {
            n += 1.0;
            term *= 2.0 * x2 / (2.0 * n + 1.0);
            sum += term;
        }
        return 1.0 - 2.0 / std::f64::consts::PI.sqrt() * (-x2).exp() * sum;
    }
    if x > 27.0 {
        return 0.0; // below the smallest f64
    }
    // Lentz: f = b0 + a1/(b1 + a2/(b2 + ...)) with b_i = x, a_i = i/2.
    let tiny = 1e-300;
    let mut f = x;
    let mut c = x;
    let mut d = 0.0;
    for i in 1..300 {
        let a = f64::from(i) / 2.0;
        d = x + a * d;
        d = if d.abs() < tiny { tiny } else { d };
        c = x + a / c;
        c = if c.abs() < tiny { tiny } else { c };
        d = 1.0 / d;
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    (-x * x).exp() / (f * std::f64::consts::PI.sqrt())
}

/// Standard normal CDF, `Φ(x) = erfc(-x/√2)/2`.
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

/// Two-sided p-value of a standard normal statistic: `2(1 - Φ(|z|)) = erfc(|z|/√2)`.
pub fn two_sided_p(z: f64) -> f64 {
    erfc(z.abs() / std::f64::consts::SQRT_2)
}

/// Wilson score interval for `successes` in `trials` at normal quantile `z`; None without
/// trials or with more successes than trials.
pub fn wilson(successes: u64, trials: u64, z: f64) -> Option<[f64; 2]> {
    if trials == 0 || successes > trials {
        return None;
    }
    let n = trials as f64;
    let p = successes as f64 / n;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
    Some([(centre - half).max(0.0), (centre + half).min(1.0)])
}

/// Two-proportion z-test (pooled standard error): `(z, two-sided p)` of `x2/n2` against
/// `x1/n1`; None when a sample is empty, holds more successes than trials, or the pooled
/// proportion is 0 or 1 (no variance).
pub fn two_proportion_z(x1: u64, n1: u64, x2: u64, n2: u64) -> Option<(f64, f64)> {
    if n1 == 0 || n2 == 0 || x1 > n1 || x2 > n2 {
        return None;
    }
    let (n1f, n2f) = (n1 as f64, n2 as f64);
    let pooled = (x1 + x2) as f64 / (n1f + n2f);
    let se = (pooled * (1.0 - pooled) * (1.0 / n1f + 1.0 / n2f)).sqrt();
    if se <= 0.0 || !se.is_finite() {
        return None;
    }
    let z = (x2 as f64 / n2f - x1 as f64 / n1f) / se;
    Some((z, two_sided_p(z)))
}

/// The report of one experiment's counts.
pub fn experiment_report(e: &ExperimentCounts) -> ExperimentReport {
    let control = e.arms.first();
    let arms = e
        .arms
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let ctr = (a.impressions > 0).then(|| a.clicks as f64 / a.impressions as f64);
            let vs_control = match control {
                Some(c) if i > 0 => {
                    two_proportion_z(c.clicks, c.impressions, a.clicks, a.impressions).map(
                        |(z, p_value)| Comparison {
                            control: c.name.clone(),
                            ctr_difference: a.clicks as f64 / a.impressions as f64
                                - c.clicks as f64 / c.impressions as f64,
                            z,
                            p_value,
                        },
                    )
                }
                _ => None,
            };
            ArmReport {
                arm: a.name.clone(),
                impressions: a.impressions,
                clicks: a.clicks,
                ctr,
                ctr_ci95: wilson(a.clicks, a.impressions, Z_95),
                vs_control,
            }
        })
        .collect();
    ExperimentReport {
        experiment: e.name.clone(),
        arms,
    }
}

/// The report as a table.
pub fn render_table(r: &Report) -> String {
    let mut out = String::new();
    if r.experiments.is_empty() {
        out.push_str("no experiments\n");
    }
    for e in &r.experiments {
        let _ = writeln!(out, "experiment {}", e.experiment);
        let _ = writeln!(
            out,
            "  {:<16} {:>12} {:>10} {:>9} {:>21} {:>10} {:>8} {:>9}",
            "arm", "impressions", "clicks", "ctr", "95% CI", "diff", "z", "p"
        );
        for a in &e.arms {
            let pct = |v: f64| format!("{:.3}%", v * 100.0);
            let ctr = a.ctr.map(pct).unwrap_or_else(|| "-".into());
            let ci = a
                .ctr_ci95
                .map(|[lo, hi]| format!("[{}, {}]", pct(lo), pct(hi)))
                .unwrap_or_else(|| "-".into());
            let (diff, z, p) = match &a.vs_control {
                Some(c) => (
                    format!("{:+.3}pp", c.ctr_difference * 100.0),
                    format!("{:.2}", c.z),
                    format!("{:.4}", c.p_value),
                ),
                None if a.arm == e.arms.first().map(|c| c.arm.as_str()).unwrap_or("") => {
                    ("control".into(), String::new(), String::new())
                }
                None => ("-".into(), "-".into(), "-".into()),
            };
            let _ = writeln!(
                out,
                "  {:<16} {:>12} {:>10} {:>9} {:>21} {:>10} {:>8} {:>9}",
                a.arm, a.impressions, a.clicks, ctr, ci, diff, z, p
            );
        }
    }
    out
}

/// Builds the report from a gateway's `/api/v1/experiments` answer.
pub fn report(resp: &ExperimentsResponse, experiment: Option<&str>) -> Result<Report, AbError> {
    let chosen: Vec<&ExperimentCounts> = match experiment {
        None => resp.experiments.iter().collect(),
        Some(name) => {
            let found: Vec<_> = resp.experiments.iter().filter(|e| e.name == name).collect();
            if found.is_empty() {
                let names: Vec<&str> = resp.experiments.iter().map(|e| e.name.as_str()).collect();
                return Err(AbError::NoSuchExperiment {
                    name: name.to_string(),
                    available: if names.is_empty() {
                        "none".into()
                    } else {
                        names.join(", ")
                    },
                });
            }
            found
        }
    };
    Ok(Report {
        experiments: chosen.into_iter().map(experiment_report).collect(),
    })
}

impl ReportArgs {
    /// Fetches the counts and returns the report as the text to print (table or JSON).
    pub async fn run(&self) -> Result<String, AbError> {
        let url = format!("{}/api/v1/experiments", self.gateway.trim_end_matches('/'));
        let http = |source| AbError::Http {
            url: url.clone(),
            source,
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(self.timeout_ms.max(1)))
            .build()
            .map_err(http)?;
        let resp = client.get(&url).send().await.map_err(http)?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(AbError::Status {
                url,
                status: status.as_u16(),
                body,
            });
        }
        let counts: ExperimentsResponse = resp.json().await.map_err(http)?;
        let r = report(&counts, self.experiment.as_deref())?;
        if self.json {
            Ok(serde_json::to_string_pretty(&r)? + "\n")
        } else {
            Ok(render_table(&r))
        }
    }
}

impl AbCommand {
    /// Runs the command; returns what to print.
    pub async fn run(&self) -> Result<String, AbError> {
        match self {
            AbCommand::Report(args) => args.run().await,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::experiment::ArmCounts;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs().max(1e-300)
    }

    #[test]
    fn erfc_matches_known_values() {
        // Reference values: Python's math.erfc (Cody's algorithm in the C library).
        for (x, want) in [
            (0.0, 1.0),
            (0.1, 0.887_537_083_981_715),
            (0.5, 0.479_500_122_186_953_5),
            (1.0, 0.157_299_207_050_285_13),
            (1.5, 0.033_894_853_524_689_27),
            (2.0, 0.004_677_734_981_047_266),
            (2.4, 0.000_688_513_896_645_078_9),
            (2.5, 0.000_406_952_017_444_958_9),
            (3.0, 2.209_049_699_858_544e-5),
            (5.0, 1.537_459_794_428_034_8e-12),
            (10.0, 2.088_487_583_762_545e-45),
            (-1.0, 1.842_700_792_949_715),
        ] {
            let got = erfc(x);
            assert!(close(got, want, 1e-13), "erfc({x}) = {got}, want {want}");
        }
        assert_eq!(erfc(30.0), 0.0);
        assert!(erfc(f64::NAN).is_nan());
    }

    #[test]
    fn normal_tail_probabilities() {
        assert!(close(two_sided_p(1.96), 0.049_995_790_296_440_86, 1e-12));
        assert!((two_sided_p(1.96) - 0.0500).abs() < 5e-5);
        assert!(close(two_sided_p(Z_95), 0.05, 1e-12));
        assert!(close(two_sided_p(2.575_829_303_549_08), 0.01, 1e-10));
        assert!(close(two_sided_p(-3.290_526_731_491_926), 0.001, 1e-10));
        assert_eq!(two_sided_p(0.0), 1.0);
        assert!(close(normal_cdf(1.0), 0.841_344_746_068_542_9, 1e-14));
        assert!(close(normal_cdf(-1.644_853_626_951_472_7), 0.05, 1e-12));
        assert!(close(normal_cdf(-6.0), 9.865_876_450_377_012e-10, 1e-12));
    }

    #[test]
    fn wilson_intervals() {
        // statsmodels proportion_confint(10, 100, method="wilson").
        let [lo, hi] = wilson(10, 100, Z_95).unwrap();
        assert!((lo - 0.055_229_2).abs() < 1e-6, "{lo}");
        assert!((hi - 0.174_365_7).abs() < 1e-6, "{hi}");
        // No successes: the interval still has width (unlike the normal approximation).
        let [lo, hi] = wilson(0, 50, Z_95).unwrap();
        assert!(lo < 1e-12, "{lo}");
        assert!((hi - 0.071_347_6).abs() < 1e-6, "{hi}");
        let [lo, hi] = wilson(50, 50, Z_95).unwrap();
        assert!((lo - 0.928_652_4).abs() < 1e-6 && hi == 1.0, "{lo} {hi}");
        assert!(wilson(0, 0, Z_95).is_none());
        assert!(wilson(5, 3, Z_95).is_none());
    }

    #[test]
    fn two_proportion_z_test() {
        // 200/10000 vs 260/10000: pooled p = 0.023, se = sqrt(.023*.977*2e-4).
        let (z, p) = two_proportion_z(200, 10_000, 260, 10_000).unwrap();
        let se = (0.023f64 * 0.977 * 2e-4).sqrt();
        assert!(close(z, 0.006 / se, 1e-12), "{z}");
        assert!((z - 2.830_251_7).abs() < 1e-6, "{z}");
        assert!((p - 0.004_651_1).abs() < 1e-6, "{p}");
        // Symmetric.
        let (z2, p2) = two_proportion_z(260, 10_000, 200, 10_000).unwrap();
        assert!(close(z2, -z, 1e-12) && close(p2, p, 1e-12));
        assert!(two_proportion_z(0, 100, 0, 100).is_none());
        assert!(two_proportion_z(1, 0, 1, 10).is_none());
    }

    fn counts() -> ExperimentsResponse {
        let arm = |name: &str, impressions, clicks| ArmCounts {
            name: name.into(),
            model: "recs".into(),
            version: String::new(),
            weight: 50,
            impressions,
            clicks,
        };
        ExperimentsResponse {
            experiments: vec![ExperimentCounts {
                name: "recs-v2".into(),
                salt: "s".into(),
                route: "/api/v1/recommendations/{user_id}".into(),
                arms: vec![
                    arm("control", 10_000, 200),
                    arm("treatment", 10_000, 260),
                    arm("empty", 0, 0),
                ],
                shadow: None,
            }],
        }
    }

    #[test]
    fn reports_compare_with_the_first_arm() {
        let r = report(&counts(), None).unwrap();
        let arms = &r.experiments[0].arms;
        assert!(arms[0].vs_control.is_none());
        let c = arms[1].vs_control.as_ref().unwrap();
        assert_eq!(c.control, "control");
        assert!((c.ctr_difference - 0.006).abs() < 1e-12);
        assert!((c.p_value - 0.004_651_1).abs() < 1e-6);
        assert_eq!(arms[2].ctr, None);
        assert!(arms[2].vs_control.is_none());
        let table = render_table(&r);
        assert!(
            table.contains("treatment") && table.contains("+0.600pp"),
            "{table}"
        );
        assert!(table.contains("control"), "{table}");
        let e = report(&counts(), Some("nope")).unwrap_err().to_string();
        assert!(e.contains("recs-v2"), "{e}");
        assert_eq!(report(&counts(), Some("recs-v2")).unwrap(), r);
    }
}
