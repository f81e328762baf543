//! `chorus-sim`: runs the replication simulation over a range of seeds
//! (or one seed, verbosely) and prints every failure with the command that
//! replays it. Exit status 1 when any seed broke an invariant.
//!
//! ```text
//! chorus-sim [--seeds N | --from A --seeds N | --seed S] [--bug NAME] [--faults]
//! ```

use chorus_sim::{Bug, Params, repro, run};
use std::io::Write;
use std::process::ExitCode;

/// `println!` that does not panic when stdout is closed (`| head`).
macro_rules! say {
    ($($t:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}
use std::time::Instant;

struct Args {
    from: u64,
    count: u64,
    bug: Option<Bug>,
    show_faults: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        from: 0,
        count: 10_000,
        bug: None,
        show_faults: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        let number = |s: String| s.parse::<u64>().map_err(|e| format!("{s}: {e}"));
        match flag.as_str() {
            "--seed" => {
                a.from = number(value("--seed")?)?;
                a.count = 1;
                a.show_faults = true;
            }
            "--from" => a.from = number(value("--from")?)?,
            "--seeds" => a.count = number(value("--seeds")?)?,
            "--bug" => {
                let name = value("--bug")?;
                let names: Vec<&str> = Bug::ALL.iter().map(|b| b.name()).collect();
                a.bug = Some(
                    Bug::parse(&name).ok_or(format!("unknown bug {name}; known: {}", names.join(", ")))?,
                );
            }
            "--faults" => a.show_faults = true,
            "-h" | "--help" => {
                return Err(
                    "usage: chorus-sim [--seeds N] [--from A] [--seed S] [--bug NAME] [--faults]".into(),
                );
            }
            other => return Err(format!("unknown argument {other} (try --help)")),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("chorus-sim: {e}");
            return ExitCode::from(2);
        }
    };
    let p = Params {
        bug: args.bug,
        ..Params::default()
    };
    let started = Instant::now();
    let (mut failed, mut stanzas, mut writes, mut faults) = (0u64, 0usize, 0usize, 0usize);
    for seed in args.from..args.from + args.count {
        let o = run(seed, &p);
        stanzas += o.stanzas;
        writes += o.writes;
        faults += o.faults;
        if args.show_faults {
            for (t, f) in &o.schedule {
                say!("seed {seed}: t={t}ms {f:?}");
            }
        }
        if !o.violations.is_empty() {
            failed += 1;
            say!("seed {seed}: {} violation(s)", o.violations.len());
            for v in o.violations.iter().take(5) {
                say!("  [{}] {}", v.invariant, v.detail);
            }
            say!("  repro: {}", repro(seed, args.bug));
        }
    }
    let secs = started.elapsed().as_secs_f64();
    say!(
        "{} seeds in {secs:.1}s ({:.0}/s): {faults} faults, {stanzas} stanzas, {writes} writes; {failed} failed{}",
        args.count,
        args.count as f64 / secs.max(1e-9),
        args.bug
            .map(|b| format!(" (bug re-introduced: {})", b.name()))
            .unwrap_or_default()
    );
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
