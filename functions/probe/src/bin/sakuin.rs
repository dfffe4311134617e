//! `sakuin`: the probe's checks, a semantic search and the dead-letter redrive, from a shell.

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(sakuin_probe::run(&args).await);
}
