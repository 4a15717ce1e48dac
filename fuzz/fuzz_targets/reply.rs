//! Motion's Reply URL body: parsed leniently, never a panic; the text splitter and the
//! reply window decision take whatever comes out.
#![no_main]

use fb_openchannel::fuzzing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fuzzing::reply(data);
});
