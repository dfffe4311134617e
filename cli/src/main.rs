//! `sakuin`: the operator's command line (probe, status, search, backfill, reconcile, redrive).

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(sakuin_cli::run(&args).await);
}
