//! Static files served at every non-WebSocket, non-API path.
//!
//! Two sources:
//!
//! * **a directory** chosen by the operator (`StaticFiles::new(Some(dir))`), served
//!   with tower-http's [`ServeDir`] (`/` and `/sub/` serve `index.html`, a directory
//!   without its trailing slash redirects to it, ranges and conditional requests work);
//! * **the bundled browser demo** (`StaticFiles::new(None)`): `server/assets/demo/`
//!   embedded in the binary at compile time with `rust-embed`, so `wsgate` is one file
//!   that still shows a working chat page at `/`.
//!
//! Only `GET` and `HEAD` are answered (anything else is `405`). A missing file is a
//! plain `404 Not Found`; errors never reveal filesystem paths (the cause is logged
//! at debug level on the server instead). From a directory, names starting with `.`
//! (`.env`, `.git/`) are never served, and neither is anything a symlink leads to
//! outside the directory. No page may be framed by another site (clickjacking).

use std::path::PathBuf;

use axum::{
    body::Body,
    extract::Request,
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use rust_embed::RustEmbed;
use tower_http::services::ServeDir;

/// The browser demo (`server/assets/demo/`), embedded in the binary in every build
/// profile (`debug-embed`), so a debug binary is as self-contained as a release one.
#[derive(RustEmbed)]
#[folder = "assets/demo/"]
#[exclude = "*.md"]
struct DemoAssets;

/// Serves static files from a directory, or the embedded demo when there is none.
#[derive(Clone)]
pub struct StaticFiles {
    source: Source,
}

#[derive(Clone)]
enum Source {
    Dir { root: PathBuf, files: ServeDir },
    Embedded,
}

impl std::fmt::Debug for StaticFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match self.source {
            Source::Dir { .. } => "directory",
            Source::Embedded => "embedded demo",
        };
        f.debug_struct("StaticFiles")
            .field("source", &source)
            .finish()
    }
}

impl StaticFiles {
    /// Files from `dir` when given, else the demo bundled in the binary.
    ///
    /// A `dir` that does not exist (yet) is not an error: requests get `404` until it
    /// appears. A warning is logged so the operator notices a typo.
    pub fn new(dir: Option<PathBuf>) -> Self {
        let source = match dir {
            Some(dir) => {
                if !dir.is_dir() {
                    tracing::warn!(dir = %dir.display(), "static file directory does not exist or is not a directory");
                }
                let files = ServeDir::new(&dir).append_index_html_on_directories(true);
                Source::Dir { root: dir, files }
            }
            None => Source::Embedded,
        };
        StaticFiles { source }
    }

    /// Answers one HTTP request with a file, `404`, `304` or `405`.
    pub async fn serve(&self, req: Request) -> Response {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return method_not_allowed();
        }
        let mut res = match &self.source {
            Source::Dir { root, files } => match dir_path_allowed(root, req.uri().path()) {
                true => serve_dir(files.clone(), req).await,
                false => not_found(),
            },
            Source::Embedded => serve_embedded(&req),
        };
        let headers = res.headers_mut();
        headers.insert(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("SAMEORIGIN"),
        );
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("frame-ancestors 'self'"),
        );
        res
    }
}

/// Whether a request path may be served from `root`: no segment is a
/// dotfile (or `.`/`..`), and what it names (or a directory's `index.html`)
/// resolves, symlinks followed, to a place inside `root`. A path that names
/// nothing is allowed through, for ServeDir to answer 404 (or redirect).
fn dir_path_allowed(root: &std::path::Path, path: &str) -> bool {
    let Some(decoded) = percent_decode(path) else {
        return false;
    };
    let mut target = root.to_path_buf();
    for segment in decoded.split('/').filter(|s| !s.is_empty()) {
        if segment.starts_with('.') || segment.contains('\\') || segment.contains('\0') {
            return false;
        }
        target.push(segment);
    }
    let Ok(root) = root.canonicalize() else {
        return true;
    };
    let inside = |p: &std::path::Path| match p.canonicalize() {
        Ok(real) => real.starts_with(&root),
        Err(_) => true,
    };
    inside(&target) && (!target.is_dir() || inside(&target.join("index.html")))
}

async fn serve_dir(mut dir: ServeDir, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    match dir.try_call(req).await {
        Ok(res) => {
            let res = res.map(Body::new);
            if res.status() == StatusCode::NOT_FOUND {
                // ServeDir's 404 has an empty body; give it the same text as ours.
                return not_found();
            }
            res
        }
        Err(err) => {
            // The io::Error may name a filesystem path: log it, never send it.
            tracing::debug!(%path, error = %err, "static file read failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error").into_response()
        }
    }
}

fn serve_embedded(req: &Request) -> Response {
    let Some(name) = embedded_name(req.uri().path()) else {
        return not_found();
    };
    let Some(file) = DemoAssets::get(&name) else {
        return not_found();
    };

    let etag = format!("\"{}\"", crate::runtime::hex(&file.metadata.sha256_hash()));
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, content_type(file.metadata.mimetype()));
    headers.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).expect("hex is a valid header value"),
    );
    // Small files that change with the binary: always revalidate (cheap, thanks to the ETag).
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );

    if etag_matches(req.headers(), &etag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }

    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(file.data.len()));
    let body = if req.method() == Method::HEAD {
        Body::empty()
    } else {
        Body::from(file.data.into_owned())
    };
    (StatusCode::OK, headers, body).into_response()
}

/// Maps a request path to an embedded file name: `/` and `/dir/` mean `index.html`.
/// Returns `None` for anything that cannot name an embedded file (`..`, backslashes,
/// empty segments, bad percent-encoding).
fn embedded_name(path: &str) -> Option<String> {
    let decoded = percent_decode(path)?;
    let rel = decoded.strip_prefix('/').unwrap_or(&decoded);
    let mut name = String::with_capacity(rel.len() + 10);
    let trailing_slash = rel.is_empty() || rel.ends_with('/');
    for segment in rel.split('/').filter(|s| !s.is_empty()) {
        if segment == "." || segment == ".." || segment.contains('\\') || segment.contains('\0') {
            return None;
        }
        if !name.is_empty() {
            name.push('/');
        }
        name.push_str(segment);
    }
    if trailing_slash {
        if !name.is_empty() {
            name.push('/');
        }
        name.push_str("index.html");
    }
    Some(name)
}

/// Decodes `%XX` escapes; `None` if an escape is malformed or the result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = (*bytes.get(i + 1)? as char).to_digit(16)?;
            let lo = (*bytes.get(i + 2)? as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Text types get an explicit UTF-8 charset (the demo's files are UTF-8).
fn content_type(mime: &str) -> HeaderValue {
    let textual = mime.starts_with("text/")
        || mime == "application/javascript"
        || mime == "application/json"
        || mime == "image/svg+xml";
    let value = if textual && !mime.contains("charset") {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_owned()
    };
    HeaderValue::from_str(&value)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"))
}

fn etag_matches(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*")
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "Not Found",
    )
        .into_response()
}

fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [
            (header::ALLOW, "GET, HEAD"),
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
        ],
        "Method Not Allowed",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::to_bytes;
    use std::path::Path;

    fn req(method: Method, uri: &str) -> Request {
        Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap()
    }

    async fn get(files: &StaticFiles, uri: &str) -> (StatusCode, HeaderMap, String) {
        let res = files.serve(req(Method::GET, uri)).await;
        let status = res.status();
        let headers = res.headers().clone();
        let body = to_bytes(res.into_body(), 16 * 1024 * 1024).await.unwrap();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    fn ctype(headers: &HeaderMap) -> &str {
        headers[header::CONTENT_TYPE].to_str().unwrap()
    }

    /// A fresh, empty directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> Self {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "wsgate-static-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
        fn path(&self) -> &Path {
            &self.0
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[tokio::test]
    async fn embedded_root_is_the_demo_page() {
        let files = StaticFiles::new(None);
        let (status, headers, body) = get(&files, "/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ctype(&headers), "text/html; charset=utf-8");
        assert!(body.contains("<!doctype html>") || body.contains("<!DOCTYPE html>"));
        assert!(body.contains("app.js"), "index.html loads the demo script");
        assert!(headers.contains_key(header::ETAG));
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");

        let (status, _, same) = get(&files, "/index.html").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(same, body);
    }

    #[tokio::test]
    async fn embedded_assets_have_their_content_types() {
        let files = StaticFiles::new(None);
        for (path, expected) in [
            ("/app.js", "javascript"),
            ("/wsgate-client.js", "javascript"),
            ("/style.css", "text/css"),
        ] {
            let (status, headers, body) = get(&files, path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert!(
                ctype(&headers).contains(expected),
                "{path}: {}",
                ctype(&headers)
            );
            assert!(ctype(&headers).ends_with("charset=utf-8"), "{path}");
            assert!(!body.is_empty(), "{path}");
            let len: usize = headers[header::CONTENT_LENGTH]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(len, body.len(), "{path}");
        }
    }

    #[tokio::test]
    async fn embedded_unknown_paths_are_404_without_details() {
        let files = StaticFiles::new(None);
        for path in [
            "/nope.html",
            "/../Cargo.toml",
            "/%2e%2e/Cargo.toml",
            "/..%2fCargo.toml",
            "/src/main.rs",
            "/README.md",
            "/%zz",
            "/app.js/",
        ] {
            let (status, _, body) = get(&files, path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(body, "Not Found", "{path}");
        }
    }

    #[tokio::test]
    async fn embedded_head_has_headers_and_no_body() {
        let files = StaticFiles::new(None);
        let res = files.serve(req(Method::HEAD, "/app.js")).await;
        assert_eq!(res.status(), StatusCode::OK);
        let len: usize = res.headers()[header::CONTENT_LENGTH]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(len > 0);
        let body = to_bytes(res.into_body(), 1024).await.unwrap();
        assert!(body.is_empty());
    }

    #[tokio::test]
    async fn embedded_revalidation_with_etag_is_304() {
        let files = StaticFiles::new(None);
        let (_, headers, _) = get(&files, "/style.css").await;
        let etag = headers[header::ETAG].to_str().unwrap().to_owned();
        let mut r = req(Method::GET, "/style.css");
        r.headers_mut()
            .insert(header::IF_NONE_MATCH, HeaderValue::from_str(&etag).unwrap());
        let res = files.serve(r).await;
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(res.headers()[header::ETAG].to_str().unwrap(), etag);
        let body = to_bytes(res.into_body(), 1024).await.unwrap();
        assert!(body.is_empty());

        let mut r = req(Method::GET, "/style.css");
        r.headers_mut()
            .insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        assert_eq!(files.serve(r).await.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn other_methods_are_405() {
        for files in [
            StaticFiles::new(None),
            StaticFiles::new(Some(PathBuf::from("."))),
        ] {
            for method in [Method::POST, Method::PUT, Method::DELETE] {
                let res = files.serve(req(method.clone(), "/")).await;
                assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED, "{method}");
                assert_eq!(res.headers()[header::ALLOW], "GET, HEAD");
            }
        }
    }

    #[tokio::test]
    async fn directory_files_are_served() {
        let tmp = TempDir::new("dir");
        std::fs::write(tmp.path().join("index.html"), "<!doctype html><p>mine</p>").unwrap();
        std::fs::write(tmp.path().join("data.json"), "{\"a\":1}").unwrap();
        std::fs::create_dir(tmp.path().join("sub")).unwrap();
        std::fs::write(tmp.path().join("sub/index.html"), "sub page").unwrap();
        let files = StaticFiles::new(Some(tmp.path().to_owned()));

        let (status, headers, body) = get(&files, "/").await;
        assert_eq!(status, StatusCode::OK);
        assert!(ctype(&headers).starts_with("text/html"));
        assert_eq!(body, "<!doctype html><p>mine</p>");

        let (status, headers, body) = get(&files, "/data.json").await;
        assert_eq!(status, StatusCode::OK);
        assert!(ctype(&headers).starts_with("application/json"));
        assert_eq!(body, "{\"a\":1}");

        let (status, _, body) = get(&files, "/sub/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "sub page");

        // The embedded demo is not mixed in when a directory is configured.
        let (status, _, _) = get(&files, "/app.js").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn dotfiles_and_symlinks_out_of_the_root_are_never_served() {
        let tmp = TempDir::new("dots");
        let outside = TempDir::new("outside");
        std::fs::write(outside.path().join("secret.txt"), "secret").unwrap();
        std::fs::write(tmp.path().join(".env"), "TOKEN=x").unwrap();
        std::fs::create_dir(tmp.path().join(".git")).unwrap();
        std::fs::write(tmp.path().join(".git/config"), "[core]").unwrap();
        std::fs::write(tmp.path().join("ok.txt"), "ok").unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("secret.txt"),
            tmp.path().join("leak.txt"),
        )
        .unwrap();
        std::os::unix::fs::symlink(outside.path(), tmp.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("ok.txt"), tmp.path().join("alias.txt"))
            .unwrap();
        let files = StaticFiles::new(Some(tmp.path().to_owned()));
        for path in [
            "/.env",
            "/.git/config",
            "/%2eenv",
            "/leak.txt",
            "/elsewhere/secret.txt",
        ] {
            let (status, _, body) = get(&files, path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert!(
                !body.contains("secret") && !body.contains("TOKEN"),
                "{path}"
            );
        }
        // A symlink that stays inside is fine.
        let (status, _, body) = get(&files, "/alias.txt").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    }

    #[tokio::test]
    async fn pages_cannot_be_framed_by_other_sites() {
        let tmp = TempDir::new("frame");
        std::fs::write(tmp.path().join("index.html"), "<p>x</p>").unwrap();
        for files in [
            StaticFiles::new(None),
            StaticFiles::new(Some(tmp.path().to_owned())),
        ] {
            let (status, headers, _) = get(&files, "/").await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(headers[header::X_FRAME_OPTIONS], "SAMEORIGIN");
            assert_eq!(
                headers[header::CONTENT_SECURITY_POLICY],
                "frame-ancestors 'self'"
            );
        }
    }

    #[tokio::test]
    async fn directory_misses_and_escapes_are_404_without_paths() {
        let tmp = TempDir::new("miss");
        std::fs::write(tmp.path().join("a.txt"), "a").unwrap();
        let files = StaticFiles::new(Some(tmp.path().to_owned()));
        let dir_text = tmp.path().display().to_string();
        for path in [
            "/missing.txt",
            "/../a.txt",
            "/%2e%2e/etc/passwd",
            "/a.txt/x",
        ] {
            let (status, _, body) = get(&files, path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert!(!body.contains(&dir_text), "{path} leaked the directory");
            assert!(!body.contains(std::path::MAIN_SEPARATOR_STR) || body == "Not Found");
        }
    }

    #[tokio::test]
    async fn a_missing_directory_is_404_not_an_error() {
        let tmp = TempDir::new("gone");
        let gone = tmp.path().join("does-not-exist");
        let files = StaticFiles::new(Some(gone.clone()));
        let (status, _, body) = get(&files, "/").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(!body.contains("does-not-exist"));
    }

    #[test]
    fn embedded_names() {
        assert_eq!(embedded_name("/").as_deref(), Some("index.html"));
        assert_eq!(embedded_name("").as_deref(), Some("index.html"));
        assert_eq!(embedded_name("/app.js").as_deref(), Some("app.js"));
        assert_eq!(embedded_name("//app.js").as_deref(), Some("app.js"));
        assert_eq!(embedded_name("/img/").as_deref(), Some("img/index.html"));
        assert_eq!(embedded_name("/a%20b.js").as_deref(), Some("a b.js"));
        assert_eq!(embedded_name("/../x"), None);
        assert_eq!(embedded_name("/a/./b"), None);
        assert_eq!(embedded_name("/%2e%2e/x"), None);
        assert_eq!(embedded_name("/a%5cb"), None);
        assert_eq!(embedded_name("/%4"), None);
        assert_eq!(embedded_name("/%ff"), None);
    }
}
