//! `sakuin`: the probe's checks and a semantic search, from a shell.

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(sakuin_probe::run(&args).await);
}
