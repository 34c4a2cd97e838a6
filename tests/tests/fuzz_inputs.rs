//! Property tests for the server's parsers of untrusted or operator input,
//! through the public library API of the `wsgate` crate: arbitrary input
//! never panics, and whatever is accepted satisfies the documented bounds.

use clap::Parser;
use proptest::prelude::*;
use wsgate::config::Cli;
use wsgate::deploy::valid_name;
use wsgate::protocol::close::{MAX_REASON_BYTES, is_sendable, validate};
use wsgate::routing::Sidecar;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Strings that look like their target format often enough to reach past
/// the first check.
fn toml_ish() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z_]{1,12} = (\"[^\"]{0,20}\"|\\[(\"[^\"]{0,10}\", ?){0,3}\\]|[0-9]{1,5}|true)",
        "(routes|subprotocols|on_reload) = .{0,40}",
        "(routes = \\[\"/ws/[a-z{}*]{0,10}\"\\]\n)?(on_reload = \"(keep|close|x)\"\n)?(subprotocols = \\[\"[a-z.]{0,8}\"\\])?",
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn close_codes_and_reasons(code in any::<u16>(), reason in ".{0,200}") {
        let sendable = is_sendable(code);
        match validate(code, &reason) {
            Ok(()) => {
                prop_assert!(sendable);
                prop_assert!(matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999), "{}", code);
                prop_assert!(reason.len() <= MAX_REASON_BYTES);
                prop_assert!(reason.len() <= 123);
            }
            Err(msg) => {
                prop_assert!(!msg.is_empty());
                prop_assert!(!sendable || reason.len() > MAX_REASON_BYTES);
            }
        }
        // Never sendable: reserved codes that must not appear on the wire.
        for reserved in [0, 999, 1004, 1005, 1006, 1015, 2999, 5000, u16::MAX] {
            prop_assert!(!is_sendable(reserved));
        }
    }

    #[test]
    fn close_reason_byte_boundary(code in 3000u16..=4999, n in 0usize..300, wide in any::<bool>()) {
        // Multi-byte characters: the limit is in bytes, not characters.
        let reason = if wide { "é".repeat(n) } else { "x".repeat(n) };
        prop_assert_eq!(validate(code, &reason).is_ok(), reason.len() <= MAX_REASON_BYTES);
    }

    #[test]
    fn sidecar_parse_never_panics(text in toml_ish()) {
        if let Ok(sidecar) = Sidecar::parse(&text) {
            // Whatever parsed yields routes; the default is /ws/NAME.
            let routes = sidecar.routes_for("p");
            prop_assert!(!routes.is_empty());
            if sidecar.routes.is_empty() {
                prop_assert_eq!(routes, vec!["/ws/p".to_owned()]);
            }
        }
    }

    #[test]
    fn plugin_names_are_url_safe(name in prop_oneof![any::<String>(), "[a-zA-Z0-9_.-]{0,70}"]) {
        if valid_name(&name) {
            prop_assert!(!name.is_empty() && name.len() <= 64);
            prop_assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            prop_assert!(name.as_bytes()[0].is_ascii_alphanumeric());
            prop_assert!(name != "." && name != "..");
            // Usable as one path segment of /ws/NAME without escaping.
            prop_assert!(!name.contains('/') && !name.contains('%') && !name.contains('?'));
        }
    }

    #[test]
    fn cli_flags_parse_or_fail_cleanly(
        flag in prop::sample::select(vec![
            "--hook-timeout", "--idle-timeout", "--ping-interval", "--max-message-size",
            "--instances", "--instance-memory", "--listen", "--admin-listen", "--log-format",
        ]),
        value in prop_oneof![
            any::<String>(),
            "[0-9]{0,25}(ns|us|ms|s|m|h|d|y|)",
            "-?[0-9]{0,22}",
            "[0-9.:\\[\\]a-f]{0,30}",
        ],
    ) {
        // A config path that cannot exist keeps ./wsgate.toml out of it.
        let args = ["wsgate", "--config", "/nonexistent/wsgate-fuzz.toml", flag, value.as_str()];
        match Cli::try_parse_from(args) {
            Ok(cli) => {
                // An explicit missing config file is an error, never a panic.
                prop_assert!(cli.load().is_err());
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        // Without a config file: load, then validate, never panic.
        if let Ok(cli) = Cli::try_parse_from(["wsgate", flag, value.as_str()])
            && let Ok(config) = cli.load()
        {
            let _ = config.validate();
            let _ = config.limits.instances();
        }
    }
}
