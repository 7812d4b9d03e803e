//! Policy parsing, validation and compilation on arbitrary text: no panics;
//! accepted policies compile against a sample tailnet and every per-node
//! query runs; rejections carry a position inside the text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ironscale_policy::Policy::parse(text, "fuzz.hujson") {
        Ok(_) => {
            let _ = ironscale_policy::conformance::exercise(text);
        }
        Err(e) => {
            if let Some(p) = e.pos {
                let lines = text.split('\n').count() as u32;
                assert!(
                    p.line >= 1 && p.line <= lines.max(1),
                    "error line {} outside the text",
                    p.line
                );
            }
            assert!(!e.message.is_empty());
        }
    }
});
