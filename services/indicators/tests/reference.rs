//! Every indicator against an independent implementation, on the 1m candles of
//! the candle service's fixture (three instruments, 2,616 candles, across day,
//! DST and month boundaries): TA-Lib for all but VWAP, exact rationals in
//! Python for VWAP. The values come from `fixtures/reference.tsv`, written by
//! `fixtures/talib_reference.py`, so this test needs no Python;
//! `regenerated_reference_matches` reruns the script when a Python with TA-Lib
//! is at hand and checks that it still writes the same files.
//!
//! The bound: a value may differ from TA-Lib's by at most half a unit in its
//! last printed place for each rounding of the printed value (one; two for
//! the MACD histogram, which is printed line − printed signal), plus 10^-14
//! of the price level (TA-Lib's own floating-point error, and the 15
//! significant digits the fixture keeps). VWAP must equal the exact reference
//! digit for digit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono_tz::Tz;
use tickmesh_core::decimal::parse_units;
use tickmesh_indicators::{Bar, Indicator, IndicatorSet, MULTIPLIER_SCALE, Scales, session_key};

struct Series {
    scales: Scales,
    bars: Vec<Bar>,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn data_lines(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split('\t').collect())
}

fn load_candles(dir: &Path) -> BTreeMap<String, Series> {
    let text = std::fs::read_to_string(dir.join("candles.tsv")).expect("candles.tsv");
    let mut series: BTreeMap<String, Series> = BTreeMap::new();
    for f in data_lines(&text) {
        let (price_scale, quantity_scale): (u32, u32) =
            (f[1].parse().unwrap(), f[2].parse().unwrap());
        let tz: Tz = f[3].parse().unwrap();
        let open_ns: i64 = f[4].parse().unwrap();
        let session = session_key(open_ns, tz);
        assert_eq!(
            session.to_string(),
            f[9],
            "{} {open_ns}: session_key disagrees with zoneinfo's local midnight",
            f[0]
        );
        let price = |text: &str| parse_units(text, price_scale).unwrap();
        let entry = series.entry(f[0].to_string()).or_insert_with(|| Series {
            scales: Scales::new(price_scale, quantity_scale).unwrap(),
            bars: Vec::new(),
        });
        entry.bars.push(Bar {
            open_ns,
            high: price(f[5]),
            low: price(f[6]),
            close: price(f[7]),
            volume: i128::from(parse_units(f[8], quantity_scale).unwrap()),
            session,
        });
    }
    series
}

/// Column names → (indicator, output index); `vwap` included.
fn columns(header: &str) -> Vec<(String, Indicator, usize)> {
    header
        .trim_start_matches('#')
        .split('\t')
        .skip(2)
        .map(|column| {
            // "macd(12,26,9).signal", "bbands(10,2.5).upper", "sma(20)", "vwap"
            let end = column.rfind(')').map_or(column.len(), |p| p + 1);
            let (spec, output) = column.split_at(end);
            let output = output.strip_prefix('.').unwrap_or("value");
            let indicator = Indicator::parse(spec).unwrap();
            let index = indicator
                .outputs()
                .iter()
                .position(|o| *o == output)
                .unwrap_or_else(|| panic!("{column}: no output {output}"));
            (column.to_string(), indicator, index)
        })
        .collect()
}

#[derive(Default)]
struct Worst {
    compared: usize,
    abs: f64,
    rel: f64,
    ulps: f64,
    at: String,
}

fn value_f64(v: tickmesh_indicators::Value) -> f64 {
    v.to_string().parse().unwrap()
}

#[test]
fn every_indicator_matches_the_reference() {
    let dir = fixtures();
    let series = load_candles(&dir);
    let text = std::fs::read_to_string(dir.join("reference.tsv")).expect("reference.tsv");
    let header = text
        .lines()
        .find(|l| l.starts_with("#symbol"))
        .expect("reference header");
    let columns = columns(header);
    let mut indicators: Vec<Indicator> = Vec::new();
    for (_, indicator, _) in &columns {
        if !indicators.contains(indicator) {
            indicators.push(*indicator);
        }
    }

    let mut computed = BTreeMap::new();
    for (symbol, s) in &series {
        let set = IndicatorSet::new(indicators.clone(), s.scales);
        computed.insert(symbol.clone(), (set.clone(), set.compute(&s.bars).unwrap()));
    }

    let mut worst: BTreeMap<String, Worst> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut rows = 0;
    for f in data_lines(&text) {
        rows += 1;
        let (symbol, i) = (f[0], f[1].parse::<usize>().unwrap());
        let (set, readings) = &computed[symbol];
        let price_level =
            series[symbol].bars[i].close as f64 / 10f64.powi(series[symbol].scales.price as i32);
        for (c, (column, indicator, output)) in columns.iter().enumerate() {
            let expected = f[2 + c];
            let j = indicators.iter().position(|x| x == indicator).unwrap();
            let reading = &readings[i][j];
            let ours = reading.output(*output);
            let scale = set.output_scale(indicator);
            let here = format!("{symbol}[{i}] {column}");
            match (expected.is_empty(), ours) {
                (true, None) => {
                    assert!(
                        reading.warming_up || *indicator == Indicator::Vwap,
                        "{here}: no value but not warming up"
                    );
                }
                (true, Some(v)) => {
                    // TA-Lib prints the MACD line only once the signal starts;
                    // tickmesh prints it from candle slow − 1.
                    let Indicator::Macd { slow, .. } = indicator else {
                        failures.push(format!("{here}: reference has none, ours {v}"));
                        continue;
                    };
                    assert!(*output == 0 && i + 1 >= *slow as usize && reading.warming_up);
                }
                (false, None) => failures.push(format!("{here}: reference {expected}, ours none")),
                (false, Some(v)) if *indicator == Indicator::Vwap => {
                    let entry = worst.entry(column.clone()).or_default();
                    entry.compared += 1;
                    if v.to_string() != expected {
                        failures.push(format!("{here}: reference {expected}, ours {v}"));
                    }
                }
                (false, Some(v)) => {
                    assert!(!reading.warming_up, "{here}: value while warming up");
                    let ours: f64 = v.to_string().parse().unwrap();
                    let theirs: f64 = expected.parse().unwrap();
                    let diff = (ours - theirs).abs();
                    let ulp = 10f64.powi(-(scale as i32));
                    let level = price_level.max(theirs.abs());
                    let roundings = if matches!(indicator, Indicator::Macd { .. }) && *output == 2 {
                        2.0
                    } else {
                        1.0
                    };
                    // TA-Lib's σ is √(E[c²] − E[c]²) in doubles, from running
                    // sums of c and c² that carry their rounding from candle to
                    // candle: an error of a few ε·level² in the variance, so
                    // of a few ε·level²/(2σ) in σ and k times that in a band
                    // (k/σ = k²/width); 8 ε·level² covers it. Ours is exact
                    // before its one rounding.
                    let cancellation = match (indicator, reading.output(0), reading.output(1)) {
                        (Indicator::Bbands { k, .. }, Some(middle), Some(upper)) if *output > 0 => {
                            let k = k.units as f64 / 10f64.powi(MULTIPLIER_SCALE as i32);
                            let width = value_f64(upper) - value_f64(middle);
                            if width > 0.0 {
                                8.0 * f64::EPSILON * level * level * k * k / (2.0 * width)
                            } else {
                                0.0
                            }
                        }
                        _ => 0.0,
                    };
                    let bound = roundings * ulp / 2.0 + 1e-14 * level + cancellation;
                    if diff > bound {
                        failures.push(format!(
                            "{here}: reference {expected}, ours {v}, |diff| {diff:e} > {bound:e}"
                        ));
                    }
                    let entry = worst.entry(column.clone()).or_default();
                    entry.compared += 1;
                    if theirs != 0.0 {
                        entry.rel = entry.rel.max(diff / theirs.abs());
                    }
                    if diff / ulp > entry.ulps {
                        entry.ulps = diff / ulp;
                        entry.abs = diff;
                        entry.at = format!("{symbol}[{i}]: ours {v}, TA-Lib {expected}");
                    }
                }
            }
        }
    }
    assert_eq!(rows, series.values().map(|s| s.bars.len()).sum::<usize>());
    println!("largest difference per column (ulp = a unit in the last printed place):");
    for (column, w) in &worst {
        println!(
            "  {column:<26} {:>5} values  max |diff| {:.3e} = {:.4} ulp, max relative {:.2e}  {}",
            w.compared, w.abs, w.ulps, w.rel, w.at
        );
    }
    assert!(
        failures.is_empty(),
        "{} mismatches, first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(20)].join("\n")
    );
    // Every column was compared somewhere.
    for (column, _, _) in &columns {
        assert!(
            worst.get(column).is_some_and(|w| w.compared > 0),
            "{column} never compared"
        );
    }
}

/// Reruns `talib_reference.py` into a temporary directory and checks that it
/// writes the committed fixture (less the comment lines, which name library
/// versions). Uses `TICKMESH_TALIB_PYTHON`, else `deploy/.tools/venv/bin/python`,
/// else `python3`, whichever can `import talib`; skips with a message when
/// none can, or fails when `TICKMESH_TEST_REQUIRE_TALIB` is set (as
/// `deploy/test.sh` does after installing TA-Lib).
#[test]
fn regenerated_reference_matches() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let candidates: Vec<PathBuf> = std::env::var_os("TICKMESH_TALIB_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain([
            root.join("deploy/.tools/venv/bin/python"),
            PathBuf::from("python3"),
        ])
        .collect();
    let Some(python) = candidates.into_iter().find(|p| {
        Command::new(p)
            .args(["-c", "import talib, numpy"])
            .output()
            .is_ok_and(|o| o.status.success())
    }) else {
        if std::env::var("TICKMESH_TEST_REQUIRE_TALIB").is_ok() {
            panic!(
                "a Python with TA-Lib is required here: set TICKMESH_TALIB_PYTHON, or pip install \
                 -r services/indicators/tests/fixtures/requirements.txt (deploy/tools.sh \
                 ensure_talib does it into deploy/.tools/venv)"
            );
        }
        eprintln!(
            "skipped: no Python with TA-Lib (set TICKMESH_TALIB_PYTHON, or pip install -r \
             services/indicators/tests/fixtures/requirements.txt)"
        );
        return;
    };
    let out = std::env::temp_dir().join(format!("tickmesh-indicators-ref-{}", std::process::id()));
    let status = Command::new(&python)
        .arg(fixtures().join("talib_reference.py"))
        .arg("--out")
        .arg(&out)
        .status()
        .expect("run talib_reference.py");
    assert!(status.success(), "talib_reference.py failed");
    for name in ["candles.tsv", "reference.tsv"] {
        let strip = |text: String| -> Vec<String> {
            text.lines()
                .filter(|l| !l.starts_with("# "))
                .map(str::to_string)
                .collect()
        };
        let fresh = strip(std::fs::read_to_string(out.join(name)).unwrap());
        let committed = strip(std::fs::read_to_string(fixtures().join(name)).unwrap());
        let first_difference = fresh.iter().zip(&committed).position(|(a, b)| a != b);
        assert!(
            fresh.len() == committed.len() && first_difference.is_none(),
            "{name}: the script now writes something else (line {first_difference:?}); \
             regenerate the fixture and look at why"
        );
    }
    std::fs::remove_dir_all(&out).ok();
}
