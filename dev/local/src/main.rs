//! `sakuin-local`: the local pipeline demo and benchmarks.

use std::process::ExitCode;

const USAGE: &str = "usage: sakuin-local demo [QUERY...]\n       sakuin-local bench";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => sakuin_local::demo::run(&args[1..]).await,
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
