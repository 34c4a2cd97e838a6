//! `wsgate new`: a listener project from templates embedded in the binary.
//! Every template greets, answers text and has a unit test and an
//! integration test, so `wsgate test` passes on a fresh project and the
//! author edits working code rather than starting from nothing.

use std::path::Path;

use super::project::plugin_name;
use super::sdk;
use crate::config::Lang;

/// A template file: where it goes (with `{{name}}`) and what it holds.
type Template = (&'static str, &'static str);

macro_rules! templates {
    ($($path:literal => $source:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!("../../templates/", $source)))),*]
    };
}

const COMMON: &[Template] = templates![
    "{{name}}.toml" => "sidecar.toml",
    "README.md" => "README.md",
    ".gitignore" => "gitignore",
];

const RUST: &[Template] = templates![
    "Cargo.toml" => "rust/Cargo.toml",
    "src/lib.rs" => "rust/src/lib.rs",
    "tests/serve.rs" => "rust/tests/serve.rs",
];

const PYTHON: &[Template] = templates![
    "app.py" => "python/app.py",
    "test_app.py" => "python/test_app.py",
    "conftest.py" => "python/conftest.py",
];

const JS: &[Template] = templates![
    "index.js" => "js/index.js",
    "index.test.mjs" => "js/index.test.mjs",
];

/// Creates the project at `path` (a new or empty folder).
pub fn create(path: &Path, lang: Lang) -> Result<(), String> {
    let name = plugin_name(path)?;
    let occupied = std::fs::read_dir(path).is_ok_and(|mut entries| entries.next().is_some());
    if occupied {
        return Err(format!(
            "{} already exists and is not empty",
            path.display()
        ));
    }
    let (lang_templates, listener) = match lang {
        Lang::Rust => (RUST, "src/lib.rs"),
        Lang::Python => (PYTHON, "app.py"),
        Lang::Js => (JS, "index.js"),
    };
    let fill = |text: &str| {
        text.replace("{{name}}", &name)
            .replace("{{listener}}", listener)
    };
    let io = |e: std::io::Error| format!("{}: {e}", path.display());
    for (target, text) in COMMON.iter().chain(lang_templates) {
        let file = path.join(fill(target));
        std::fs::create_dir_all(file.parent().expect("inside the project")).map_err(io)?;
        std::fs::write(&file, fill(text)).map_err(io)?;
    }
    sdk::write(lang, &path.join("sdk")).map_err(io)?;
    let shown = path.display();
    println!("created {shown}: a {lang} listener served at /ws/{name}");
    println!("  edit      {shown}/{listener}");
    println!("  test      wsgate test {shown}");
    println!("  build     wsgate build {shown}   (dist/{name}.wasm)");
    println!(
        "  deploy    copy dist/{name}.wasm and dist/{name}.toml into the server's plugin directory"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_project_has_its_files_and_no_placeholders() {
        let dir = tempfile::tempdir().unwrap();
        for (lang, listener) in [
            (Lang::Rust, "src/lib.rs"),
            (Lang::Python, "app.py"),
            (Lang::Js, "index.js"),
        ] {
            let project = dir.path().join(format!("hello-{lang:?}").to_lowercase());
            create(&project, lang).unwrap();
            let name = project.file_name().unwrap().to_str().unwrap();
            for file in [
                listener,
                "README.md",
                &format!("{name}.toml"),
                "sdk/wit/wsgate.wit",
            ] {
                let text = std::fs::read_to_string(project.join(file)).unwrap();
                assert!(!text.contains("{{"), "{file} has a placeholder left");
            }
            let sidecar = std::fs::read_to_string(project.join(format!("{name}.toml"))).unwrap();
            assert!(sidecar.contains(&format!("\"/ws/{name}\"")), "{sidecar}");
            let again = create(&project, lang).unwrap_err();
            assert!(again.contains("not empty"), "{again}");
        }
    }

    #[test]
    fn a_bad_name_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let err = create(&dir.path().join("9lives"), Lang::Rust).unwrap_err();
        assert!(err.contains("cannot name a plugin"), "{err}");
        assert!(!dir.path().join("9lives").exists());
    }
}
