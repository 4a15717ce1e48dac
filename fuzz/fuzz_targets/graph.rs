//! Graph's answers: a page of the Conversations API and every message in it as
//! `reconcile` stores and logs it, and an error answer with its rate-limit header. Graph
//! authenticates over TLS, but what it sends is bounded and must never panic (DESIGN §4
//! rule 15).
#![no_main]

use fb_openchannel::fuzzing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fuzzing::graph(data);
});
