//! Property tests for the server's parsers of untrusted or operator input,
//! through the public library API of the `wsgate` crate: arbitrary input
//! never panics, and whatever is accepted satisfies the documented bounds.

use clap::Parser;
use proptest::prelude::*;
use wsgate::config::Cli;
use wsgate::deploy::valid_name;
use wsgate::protocol::close::{MAX_REASON_BYTES, is_sendable, validate};
use wsgate::routing::{MAX_PATTERN_LEN, PatternError, Sidecar, check_pattern};

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
            Ok(checked) => {
                prop_assert_eq!(checked.get(), code);
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
            "--handshake-timeout", "--tls-cert", "--tls-key",
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

/// A valid route pattern and a path it must match, with the parameter
/// values that match should yield, in order.
fn pattern_and_path() -> impl Strategy<Value = (String, String, Vec<(String, String)>)> {
    let segment = prop_oneof![
        "[a-z0-9_.~-]{1,8}".prop_map(|s| (s, None)),
        "[a-zA-Z0-9_~-]{1,8}".prop_map(|v| (String::new(), Some(v))),
    ];
    let catch_all = proptest::option::of("[a-z0-9]{1,5}(/[a-z0-9]{1,5}){0,3}");
    (prop::collection::vec(segment, 0..5), catch_all).prop_map(|(segments, rest)| {
        let (mut pattern, mut path) = ("/ws".to_owned(), "/ws".to_owned());
        let mut params = Vec::new();
        for (i, (literal, value)) in segments.into_iter().enumerate() {
            match value {
                Some(value) => {
                    let name = format!("p{i}");
                    pattern.push_str(&format!("/{{{name}}}"));
                    path.push_str(&format!("/{value}"));
                    params.push((name, value));
                }
                None => {
                    pattern.push_str(&format!("/{literal}"));
                    path.push_str(&format!("/{literal}"));
                }
            }
        }
        if let Some(rest) = rest {
            pattern.push_str("/{*rest}");
            path.push_str(&format!("/{rest}"));
            params.push(("rest".to_owned(), rest));
        }
        (pattern, path, params)
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn route_patterns_never_panic(pattern in prop_oneof![
        any::<String>(),
        "/[a-z{}*/ .\u{0}-]{0,30}",
        "(/admin|/healthz|/readyz|/metrics|/publish|/ws)[a-z{}*/]{0,10}",
    ]) {
        match check_pattern(&pattern) {
            Ok(()) => {
                prop_assert!(pattern.starts_with('/') && pattern != "/");
                // Nothing that would answer for every static file.
                prop_assert!(!pattern.starts_with("/{"), "{}", pattern);
                prop_assert!(pattern.len() <= MAX_PATTERN_LEN);
                prop_assert!(!pattern.chars().any(|c| c.is_control() || c == ' '));
                // Whatever is accepted can be routed.
                prop_assert!(matchit::Router::new().insert(pattern.as_str(), ()).is_ok());
            }
            Err(e) => {
                // Errors quote the pattern, so an operator can find it.
                prop_assert!(e.to_string().contains(&format!("{pattern:?}")), "{}", e);
            }
        }
    }

    #[test]
    fn valid_route_patterns_match_their_paths((pattern, path, params) in pattern_and_path()) {
        prop_assert_eq!(check_pattern(&pattern), Ok(()));
        let mut router = matchit::Router::new();
        router.insert(pattern.as_str(), ()).unwrap();
        let matched = router.at(&path).unwrap();
        let got: Vec<(String, String)> = matched
            .params
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        prop_assert_eq!(got, params.clone());
        // One more segment matches only through a catch-all.
        let longer = format!("{path}/extra");
        let has_rest = params.last().is_some_and(|(name, _)| name == "rest");
        prop_assert_eq!(router.at(&longer).is_ok(), has_rest);
    }

    #[test]
    fn invalid_route_patterns_get_typed_errors(
        (pattern, _, _) in pattern_and_path(),
        name in "[a-z]{1,6}",
        reserved in prop::sample::select(vec!["/admin", "/healthz", "/readyz", "/metrics", "/publish"]),
        control in prop::char::range('\u{0}', '\u{1f}'),
    ) {
        let relative = pattern.trim_start_matches('/').to_owned();
        prop_assert!(matches!(check_pattern(&relative), Err(PatternError::NoLeadingSlash(_))));
        let long = format!("{pattern}/{}", "a".repeat(MAX_PATTERN_LEN));
        prop_assert!(matches!(check_pattern(&long), Err(PatternError::TooLong(_))));
        let spaced = format!("{pattern}/a{control}b");
        prop_assert!(matches!(check_pattern(&spaced), Err(PatternError::InvalidCharacters(_))));
        prop_assert!(matches!(check_pattern(reserved), Err(PatternError::Reserved { .. })), "{}", reserved);
        let under = format!("{reserved}{}", &pattern[3..]);
        if under.len() > reserved.len() {
            prop_assert!(matches!(check_pattern(&under), Err(PatternError::Reserved { .. })), "{}", under);
        }
        for bad in [
            format!("{pattern}/{{{name}"),
            format!("{pattern}/{{}}"),
            format!("{pattern}/{{{name}}}{{{name}x}}"),
            format!("/ws/{{*{name}}}{pattern}"),
        ] {
            let result = check_pattern(&bad);
            prop_assert!(matches!(result, Err(PatternError::Syntax { .. })), "{} -> {:?}", bad, result);
        }
    }
}
