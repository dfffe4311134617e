//! Runs sakuin locally, unchanged: the function binaries under a loopback Lambda Runtime API,
//! against moto, noida-db and the Bedrock stand-in. Used by the demo, the benchmarks and the
//! end-to-end tests.

pub mod bench;
pub mod demo;
pub mod esfaults;
pub mod fleet;
pub mod http;
pub mod netns;
pub mod pipeline;
pub mod quota;
pub mod retrieval;
pub mod runtime;
pub mod stack;
pub mod truth;
pub mod vpc;
