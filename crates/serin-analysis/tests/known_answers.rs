//! Every statistic against values computed independently with SciPy
//! (`tests/fixtures/make_fixtures.py`, which also says which versions).

use serin_analysis::eprocess::{ProportionTest, RatioTest};
use serin_analysis::stats;

fn rows(name: &str) -> Vec<Vec<String>> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

fn f(s: &str) -> f64 {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn u(s: &str) -> u64 {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn close(got: f64, want: f64, rel: f64, what: &str) {
    let tol = rel * want.abs().max(1e-300);
    assert!(
        (got - want).abs() <= tol || (got - want).abs() < 1e-15,
        "{what}: got {got:e}, SciPy {want:e}"
    );
}

#[test]
fn normal_survival_and_quantile() {
    let r = rows("normal_sf.txt");
    assert!(r.len() >= 10);
    for row in r {
        close(
            stats::normal_sf(f(&row[0])),
            f(&row[1]),
            1e-12,
            &format!("sf({})", row[0]),
        );
    }
    for row in rows("normal_ppf.txt") {
        close(
            stats::normal_quantile(f(&row[0])),
            f(&row[1]),
            1e-9,
            &format!("ppf({})", row[0]),
        );
    }
}

#[test]
fn ln_gamma() {
    for row in rows("ln_gamma.txt") {
        let want = f(&row[1]);
        let got = stats::ln_gamma(f(&row[0]));
        assert!(
            (got - want).abs() <= 1e-12 * want.abs().max(1.0),
            "lgamma({}): {got} vs {want}",
            row[0]
        );
    }
}

#[test]
fn binomial_tail() {
    for row in rows("binomial_sf.txt") {
        let (k, n, p) = (u(&row[0]), u(&row[1]), f(&row[2]));
        close(
            stats::binomial_sf_ge(k, n, p),
            f(&row[3]),
            1e-9,
            &format!("P(X>={k}; {n}, {p})"),
        );
    }
}

#[test]
fn two_proportion_z_test() {
    for row in rows("two_proportion_z.txt") {
        let t = stats::two_proportion_z(u(&row[0]), u(&row[1]), u(&row[2]), u(&row[3]), f(&row[4]))
            .unwrap();
        close(t.statistic, f(&row[5]), 1e-12, "z");
        close(t.p_value, f(&row[6]), 1e-9, "p");
    }
}

#[test]
fn mann_whitney_with_ties() {
    let r = rows("mann_whitney.txt");
    assert_eq!(r.len(), 8);
    for row in r {
        let parse = |s: &str| s.split(',').map(u).collect::<Vec<_>>();
        let (c, s) = (parse(&row[0]), parse(&row[1]));
        let m = stats::mann_whitney_binned(&c, &s).unwrap();
        close(m.u, f(&row[2]), 1e-12, "U");
        close(
            m.p_value,
            f(&row[3]),
            1e-9,
            &format!("p of {} vs {}", row[0], row[1]),
        );
    }
}

#[test]
fn ratio_e_process() {
    for row in rows("ratio_eprocess.txt") {
        let mut t = RatioTest::new(f(&row[0]));
        for iv in row[1].split(';') {
            let v: Vec<u64> = iv.split(',').map(u).collect();
            t.update(v[0], v[1] as f64, v[2], v[3] as f64);
        }
        close(t.log_e(), f(&row[2]), 1e-9, &format!("ln E of {}", row[1]));
    }
}

#[test]
fn proportion_e_process() {
    for row in rows("proportion_eprocess.txt") {
        let mut t = ProportionTest::new(f(&row[0]));
        for st in row[1].split(';') {
            let v: Vec<u64> = st.split(',').map(u).collect();
            t.update(v[0], v[1]);
        }
        close(t.log_e(), f(&row[2]), 1e-9, &format!("ln E of {}", row[1]));
    }
}
