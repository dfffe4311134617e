//! `sakuin-local`: the local pipeline demo, a long-running local stack for `cargo lambda watch`,
//! and the benchmarks.

use std::process::ExitCode;

const USAGE: &str = "\
usage: sakuin-local demo [QUERY...]   run the samples through the whole pipeline, probe, search
       sakuin-local stack             start the local stack, write .local/stack.env, wait for Ctrl-C
       sakuin-local extract [--json] FILE...
                                      the sections and citations ingest reads from each
                                      document (PDF, Word, Excel, CSV, HTML, Markdown, text)
       sakuin-local bench [SECTION...] [--large] [--memory]
                                      print performance figures; sections: cold ingest memory
                                      embed e2e (default all), and quota (only when named:
                                      twenty minutes at a Bedrock quota; --adaptive-only skips
                                      the fixed-concurrency runs, --model=titan|cohere picks one,
                                      --without-quota only the unthrottled and refusing runs,
                                      --timeline prints calls every 15 s), documents (only when
                                      named: ingest on each file of SAKUIN_DOCUMENTS_DIR), and
                                      retrieval (only
                                      when named: search quality on dev/retrieval with the real
                                      model, half an hour; --quick the shipped settings only,
                                      --hashed the stand-in's vectors); --large adds a 1 GiB object,
                                      --memory runs only the memory section

demo and stack embed with a real model, multilingual-e5-small, behind the Bedrock stand-in;
SAKUIN_EMBEDDER=hashed picks its instant hashed vectors instead (the tests' and benchmarks')";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Ctrl-C drops the running command, and with it the local stack it started.
    let command = async {
        match args.first().map(String::as_str) {
            Some("demo") => sakuin_local::demo::run(&args[1..]).await,
            Some("stack") => sakuin_local::demo::serve_stack().await,
            Some("bench") => sakuin_local::bench::run(&args[1..]).await,
            Some("ingest-memory") => sakuin_local::bench::ingest_memory(&args[1..]).await,
            Some("extract") => sakuin_local::demo::extract(&args[1..]),
            _ => Err(USAGE.into()),
        }
    };
    let result: Result<(), Box<dyn std::error::Error>> = tokio::select! {
        result = command => result,
        _ = tokio::signal::ctrl_c() => Err("interrupted".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
