//! Fuzzes join-token parsing: arbitrary text parses or fails with an error,
//! and every token that parses prints back to the same canonical form.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_shared::noise::token::JoinToken;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(token) = JoinToken::parse(s) {
        let printed = token.to_string();
        let again = JoinToken::parse(&printed).expect("a printed token parses");
        assert_eq!(again.to_string(), printed);
    }
});
