//! HuJSON standardisation on arbitrary text: no panics, offsets and lines
//! preserved, and standard JSON passes through unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(out) = ironscale_policy::hujson::standardize(text) {
        assert_eq!(out.len(), text.len(), "standardize must keep byte offsets");
        assert_eq!(
            out.matches('\n').count(),
            text.matches('\n').count(),
            "and line breaks"
        );
        // Text that already is JSON (no comments, no trailing commas) is
        // left exactly as it was.
        if serde_json::from_str::<serde_json::Value>(text).is_ok() {
            assert_eq!(out, text);
        }
        let _ = ironscale_policy::hujson::position(text, out.len() / 2);
    }
});
