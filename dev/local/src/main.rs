//! `sakuin-local`: the local pipeline demo, a long-running local stack for `cargo lambda watch`,
//! and the benchmarks.

use std::process::ExitCode;

const USAGE: &str = "\
usage: sakuin-local demo [QUERY...]   run the samples through the whole pipeline, probe, search
       sakuin-local stack             start the local stack, write .local/stack.env, wait for Ctrl-C
       sakuin-local bench [--large]   print performance figures (--large: 1 GiB and 200 MiB objects)";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => sakuin_local::demo::run(&args[1..]).await,
        Some("stack") => sakuin_local::demo::serve_stack().await,
        Some("bench") => sakuin_local::bench::run(&args[1..]).await,
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
