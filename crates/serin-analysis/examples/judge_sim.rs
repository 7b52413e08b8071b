//! Simulation benchmark of the judges (seeded, deterministic): false
//! rollbacks under A/A and detection of regressions under A/B, for
//! `none`, a naive fixed test re-run every second, `fixed` at the end of the
//! stage, and `sequential`. Prints the markdown tables of
//! `docs/benchmarks.md`.
//!
//! ```text
//! cargo run --release -p serin-analysis --example judge_sim -- [--runs N] [--seed S] [--threads T]
//! ```
//!
//! Then the early-success tables (`docs/benchmarks.md`, "Early success"):
//! how soon a healthy canary is shown within every limit in a 10-minute
//! pause, and how often a canary at or over a limit is. `--early` prints
//! only those.

#[path = "../tests/sim/mod.rs"]
mod sim;

use serin_analysis::{Config, Judge, Limit, Method, PlanInput, plan};
use sim::{Drive, Scenario, Version, run, run_until_early, wilson};

const RPS: f64 = 100.0;
const WEIGHTS: [f64; 3] = [5.0, 25.0, 50.0];
const STAGE: u32 = 300;

/// The configuration of the statistical judges: error rate max 5 % and any
/// worsening vs stable; p50 and p99 any worsening vs stable; p95 max 1000 ms.
fn stat_config(method: Method) -> Config {
    Config {
        error_rate: Limit {
            max: Some(0.05),
            max_ratio_to_stable: Some(1.0),
        },
        latency_p50: Limit {
            max: None,
            max_ratio_to_stable: Some(1.0),
        },
        latency_p99: Limit {
            max: None,
            max_ratio_to_stable: Some(1.0),
        },
        method,
        ..Config::default()
    }
}

fn judges() -> Result<Vec<(Judge, Drive)>, serin_analysis::ConfigError> {
    Ok(vec![
        (
            Judge::new(Config {
                method: Method::None,
                ..Config::default()
            })?,
            Drive::Normal,
        ),
        (
            Judge::new(stat_config(Method::Fixed))?,
            Drive::EveryInterval,
        ),
        (Judge::new(stat_config(Method::Fixed))?, Drive::Normal),
        (Judge::new(stat_config(Method::Sequential))?, Drive::Normal),
    ])
}

const NAMES: [&str; 4] = [
    "`none` (5 % / p95 1000 ms)",
    "naive fixed test re-run every second",
    "`fixed` at the end of the stage",
    "`sequential`",
];

struct Outcome {
    detected: Vec<u64>,
    times: Vec<Vec<u32>>,
    runs: u64,
}

fn simulate(
    scenario: &Scenario,
    runs: u64,
    seed: u64,
    threads: u64,
) -> Result<Outcome, Box<dyn std::error::Error>> {
    let js = judges()?;
    let n = js.len();
    let chunks: Vec<Vec<Option<u32>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let js = js.clone();
                scope.spawn(move || {
                    let mut out = Vec::new();
                    let mut r = t;
                    while r < runs {
                        out.push(run(scenario, &js, seed + r).first_fail);
                        r += threads;
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut detected = vec![0; n];
    let mut times = vec![Vec::new(); n];
    for ff in &chunks {
        for (i, f) in ff.iter().enumerate() {
            if let Some(t) = f {
                detected[i] += 1;
                times[i].push(*t);
            }
        }
    }
    if chunks.len() as u64 != runs {
        return Err(format!("only {} of {runs} runs finished", chunks.len()).into());
    }
    Ok(Outcome {
        detected,
        times,
        runs,
    })
}

fn median(v: &mut [u32]) -> Option<u32> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    Some(v[(v.len() - 1) / 2])
}

fn arg(args: &[String], name: &str, default: u64) -> Result<u64, String> {
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{name} expects a number")),
        None => Ok(default),
    }
}

/// The pause the early-success tables end early: 10 minutes.
const PAUSE: u32 = 600;

/// One run until early success or a fail: (second of early success,
/// second of fail).
type EarlyRun = (Option<u32>, Option<u32>);

/// Each run of one scenario through the default judge.
fn simulate_early(
    scenario: &Scenario,
    runs: u64,
    seed: u64,
    threads: u64,
) -> Result<Vec<EarlyRun>, Box<dyn std::error::Error>> {
    let js = vec![(Judge::new(Config::default())?, Drive::Normal)];
    let out: Vec<EarlyRun> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let js = js.clone();
                scope.spawn(move || {
                    let mut out = Vec::new();
                    let mut r = t;
                    while r < runs {
                        let res = run_until_early(scenario, &js, seed + r);
                        out.push((res.first_within[0], res.first_fail[0]));
                        r += threads;
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    if out.len() as u64 != runs {
        return Err(format!("only {} of {runs} runs finished", out.len()).into());
    }
    Ok(out)
}

fn early(runs: u64, seed: u64, threads: u64) -> Result<(), Box<dyn std::error::Error>> {
    let base = Version::BASE;
    println!(
        "### A healthy canary in a {} min pause with `early: true` (default checks, {runs} runs each)\n",
        PAUSE / 60
    );
    println!(
        "| traffic | canary weight | ended early | median time to early success | pause saved (mean) | false rollbacks |"
    );
    println!("|---|---|---|---|---|---|");
    let mut targets = Vec::new();
    for (ri, &rps) in [2.0, 10.0, 100.0, 1000.0].iter().enumerate() {
        for (wi, &w) in [5.0, 25.0].iter().enumerate() {
            let scenario = Scenario {
                rps,
                stages: vec![(w, PAUSE)],
                stable: base,
                canary: base,
            };
            let s = seed + 10_000_000 * ri as u64 + 1_000_000 * wi as u64;
            let out = simulate_early(&scenario, runs, s, threads)?;
            let mut times: Vec<u32> = out.iter().filter_map(|o| o.0).collect();
            let ended = times.len() as f64 / runs as f64;
            let saved: f64 = out
                .iter()
                .map(|o| o.0.map_or(0.0, |t| (PAUSE - t) as f64 / PAUSE as f64))
                .sum::<f64>()
                / runs as f64;
            let fails = out.iter().filter(|o| o.1.is_some()).count();
            println!(
                "| {rps} req/s | {w} % | {:.1} % | {} | {:.0} % | {:.1} % |",
                100.0 * ended,
                median(&mut times).map_or("—".into(), |m| format!("{m} s")),
                100.0 * saved,
                100.0 * fails as f64 / runs as f64
            );
        }
    }
    let limit = |v: Version, what: &'static str| (what, v);
    let over = [
        limit(
            Version {
                error_rate: 0.05,
                ..base
            },
            "errors at the limit (5 %)",
        ),
        limit(
            Version {
                error_rate: 0.06,
                ..base
            },
            "errors 6 % (limit 5 %)",
        ),
        limit(
            Version {
                // p95 = median · e^(1.645 σ) = 1000 ms.
                median_ms: 1000.0 / (1.644_853_627 * base.sigma).exp(),
                ..base
            },
            "p95 at the limit (1 000 ms)",
        ),
        limit(
            Version {
                client_error_rate: 5.0 * base.client_error_rate,
                ..base
            },
            "4xx at the limit (5 × stable)",
        ),
    ];
    println!(
        "\n### A canary at or over a limit: false early successes in a {} min pause ({runs} runs each; the promise is at most 5 %)\n",
        PAUSE / 60
    );
    println!("| canary | traffic | canary weight | ended early (95 % CI) | rolled back |");
    println!("|---|---|---|---|---|");
    for (oi, (what, canary)) in over.iter().enumerate() {
        for (ri, &(rps, w)) in [(100.0, 25.0), (1000.0, 5.0)].iter().enumerate() {
            let scenario = Scenario {
                rps,
                stages: vec![(w, PAUSE)],
                stable: base,
                canary: *canary,
            };
            let s = seed + 100_000_000 + 10_000_000 * oi as u64 + 1_000_000 * ri as u64;
            let out = simulate_early(&scenario, runs, s, threads)?;
            let k = out.iter().filter(|o| o.0.is_some()).count() as u64;
            let fails = out.iter().filter(|o| o.1.is_some()).count();
            let (lo, hi) = wilson(k, runs);
            println!(
                "| {what} | {rps} req/s | {w} % | {:.1} % ({:.1}–{:.1}) | {:.1} % |",
                100.0 * k as f64 / runs as f64,
                100.0 * lo,
                100.0 * hi,
                100.0 * fails as f64 / runs as f64
            );
            let rate = k as f64 / runs as f64;
            targets.push(format!(
                "{what}, {rps} req/s at {w} %: false early successes {:.1} % (target ≤ 5 %): {}",
                100.0 * rate,
                if rate <= 0.05 { "met" } else { "NOT met" }
            ));
        }
    }
    println!("\nTargets:\n");
    for t in targets {
        println!("- {t}");
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let runs = arg(&args, "--runs", 1000)?;
    let seed = arg(&args, "--seed", 20_261_202)?;
    let threads = arg(&args, "--threads", 2)?.max(1);
    if args.iter().any(|a| a == "--early") {
        return early(runs, seed, threads);
    }
    let base = Version::BASE;
    let regressions: [(&str, Version); 5] = [
        (
            "errors 1 → 2 %",
            Version {
                error_rate: 0.02,
                ..base
            },
        ),
        (
            "errors 1 → 5 %",
            Version {
                error_rate: 0.05,
                ..base
            },
        ),
        (
            "p50 +20 %",
            Version {
                median_ms: base.median_ms * 1.2,
                ..base
            },
        ),
        (
            "p50 +50 %",
            Version {
                median_ms: base.median_ms * 1.5,
                ..base
            },
        ),
        (
            "p99 ×2, same p50",
            Version {
                sigma: base.sigma + 2f64.ln() / 2.326_347_874,
                ..base
            },
        ),
    ];
    let checks = Judge::new(stat_config(Method::Sequential))?.threshold() * 0.05;
    println!(
        "### Planned detection times (`plan()`, sequential error test, {RPS} req/s, {checks:.0} checks, power 0.9)\n"
    );
    println!(
        "| canary weight | errors 1 → 2 %: seconds (canary requests) | expected (KL) | errors 1 → 5 %: seconds (canary requests) | expected (KL) |"
    );
    println!("|---|---|---|---|---|");
    for &w in &WEIGHTS {
        print!("| {w} % |");
        for c in [0.02, 0.05] {
            let p = plan(&PlanInput {
                checks: checks.round() as usize,
                ..PlanInput::new(0.01, c, RPS, w)
            })?;
            match (p.seconds, p.canary_requests) {
                (Some(s), Some(n)) => print!(" {s:.0} s ({n}) |"),
                _ => print!(" — |"),
            }
            match p.expected_seconds {
                Some(e) => print!(" {e:.0} s |"),
                None => print!(" — |"),
            }
        }
        println!();
    }
    let mut targets = Vec::new();
    for (wi, &w) in WEIGHTS.iter().enumerate() {
        let aa = Scenario {
            rps: RPS,
            stages: vec![(w, STAGE), (w, STAGE)],
            stable: base,
            canary: base,
        };
        let aa_out = simulate(&aa, runs, seed + 1_000_000 * wi as u64, threads)?;
        let mut ab_out = Vec::new();
        for (ri, (_, canary)) in regressions.iter().enumerate() {
            let ab = Scenario {
                rps: RPS,
                stages: vec![(w, STAGE)],
                stable: base,
                canary: *canary,
            };
            let s = seed + 1_000_000 * wi as u64 + 100_000 * (ri as u64 + 1);
            ab_out.push(simulate(&ab, runs, s, threads)?);
        }
        println!("\n### Canary weight {w} %\n");
        print!("| judge | A/A false rollbacks (95 % CI) |");
        for (name, _) in &regressions {
            print!(" {name} |");
        }
        println!();
        print!("|---|---|");
        for _ in &regressions {
            print!("---|");
        }
        println!();
        for (j, name) in NAMES.iter().enumerate() {
            let k = aa_out.detected[j];
            let (lo, hi) = wilson(k, aa_out.runs);
            print!(
                "| {name} | {:.1} % ({:.1}–{:.1}) |",
                100.0 * k as f64 / aa_out.runs as f64,
                100.0 * lo,
                100.0 * hi
            );
            for o in ab_out.iter_mut() {
                let rate = 100.0 * o.detected[j] as f64 / o.runs as f64;
                match median(&mut o.times[j]) {
                    Some(m) => print!(" {rate:.1} % / {m} s |"),
                    None => print!(" {rate:.1} % / — |"),
                }
            }
            println!();
        }
        // Targets for `sequential` (index 3) against `fixed` (index 2).
        let fr = aa_out.detected[3] as f64 / aa_out.runs as f64;
        targets.push(format!(
            "weight {w} %: sequential false rollbacks {:.1} % (target ≤ 5 %): {}",
            100.0 * fr,
            if fr <= 0.05 { "met" } else { "NOT met" }
        ));
        if w == 5.0 {
            let d = ab_out[1].detected[3] as f64 / ab_out[1].runs as f64;
            targets.push(format!(
                "weight 5 %: sequential detects errors 1 → 5 % within {STAGE} s in {:.1} % (target ≥ 99 %): {}",
                100.0 * d,
                if d >= 0.99 { "met" } else { "NOT met" }
            ));
        }
        for (ri, o) in ab_out.iter_mut().enumerate() {
            let seq = median(&mut o.times[3]);
            let fixed = median(&mut o.times[2]);
            let ok = match (seq, fixed) {
                (Some(s), Some(f)) => s < f,
                (Some(_), None) => true,
                _ => false,
            };
            targets.push(format!(
                "weight {w} %, {}: median detection sequential {} vs fixed {}: {}",
                regressions[ri].0,
                seq.map_or("—".into(), |s| format!("{s} s")),
                fixed.map_or("—".into(), |s| format!("{s} s")),
                if ok { "faster" } else { "NOT faster" }
            ));
        }
    }
    println!("\nTargets:\n");
    for t in targets {
        println!("- {t}");
    }
    println!("\n## Early success\n");
    early(runs, seed, threads)
}
