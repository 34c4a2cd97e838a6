//! Who a connection's token belongs to, asked of the application over
//! HTTP. The endpoint comes from the granted `AUTH_CHAT_URL` variable; the
//! host lets the request out only to hosts the sidecar was granted.

use serde::Deserialize;
use wsgate_sdk::Request;

/// Why a token did not open the chat.
#[derive(Debug, PartialEq)]
pub enum Refused {
    /// The application does not know the token (401 or 403).
    Unknown,
    /// The application could not be asked, or gave an answer that makes no
    /// sense; the reason is for the log only.
    Unavailable(String),
}

/// The longest user name the chat accepts from the application.
const MAX_USER: usize = 64;

/// The token, from the first place that has one: the `Authorization:
/// Bearer` header, the `session` cookie, the `token` query parameter.
pub fn token(req: &Request) -> Option<String> {
    let bearer = req
        .header("authorization")
        .and_then(|h| h.strip_prefix("Bearer "));
    bearer
        .or_else(|| req.cookie("session"))
        .or_else(|| req.query_param("token"))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

#[derive(Deserialize)]
struct Answer {
    user: String,
}

/// The user the application says `token` belongs to.
pub fn who(token: &str) -> Result<String, Refused> {
    let url = std::env::var("AUTH_CHAT_URL")
        .map_err(|_| Refused::Unavailable("AUTH_CHAT_URL is not granted".into()))?;
    let auth = format!("Bearer {token}");
    let response = wsgate_sdk::http::get(&url, &[("authorization", auth.as_str())])
        .map_err(|e| Refused::Unavailable(format!("GET {url}: {e}")))?;
    match response.status {
        200 => {}
        401 | 403 => return Err(Refused::Unknown),
        status => return Err(Refused::Unavailable(format!("GET {url}: status {status}"))),
    }
    let answer: Answer = serde_json::from_slice(&response.body)
        .map_err(|e| Refused::Unavailable(format!("GET {url}: not {{\"user\":...}}: {e}")))?;
    let user = answer.user.trim();
    if user.is_empty() || user.len() > MAX_USER {
        return Err(Refused::Unavailable(format!(
            "GET {url}: a user name of {} bytes",
            user.len()
        )));
    }
    Ok(user.to_owned())
}
