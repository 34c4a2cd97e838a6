//! A listener project as `wsgate new` lays it out: the folder's name is the
//! plugin's name, and the file holding the listener tells the language.

use std::path::{Path, PathBuf};

use crate::config::Lang;

pub struct Project {
    pub dir: PathBuf,
    pub name: String,
    pub lang: Lang,
}

impl Project {
    /// The project in `dir`, or why `dir` is not one.
    pub fn open(dir: &Path) -> Result<Self, String> {
        let dir = std::path::absolute(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if !dir.is_dir() {
            return Err(format!("{}: no such folder", dir.display()));
        }
        let name = plugin_name(&dir)?;
        let lang = [
            ("Cargo.toml", Lang::Rust),
            ("app.py", Lang::Python),
            ("index.js", Lang::Js),
        ]
        .into_iter()
        .find(|(file, _)| dir.join(file).is_file())
        .map(|(_, lang)| lang)
        .ok_or_else(|| {
            format!(
                "{}: not a listener project (no Cargo.toml, app.py or index.js); \
                 create one with `wsgate new NAME --lang rust|python|js`",
                dir.display()
            )
        })?;
        if !dir.join("sdk").is_dir() {
            return Err(format!(
                "{}: the project has no sdk/ folder; `wsgate new` puts the SDK there",
                dir.display()
            ));
        }
        Ok(Self { dir, name, lang })
    }

    /// Where `wsgate build` puts the plugin by default, and the tests look.
    pub fn dist(&self) -> PathBuf {
        self.dir.join("dist")
    }
}

/// The plugin name a folder gives: the server serves NAME.wasm as NAME, so
/// it must be a plugin name, and for Rust a crate name (no leading digit).
pub fn plugin_name(dir: &Path) -> Result<String, String> {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if crate::deploy::valid_name(name) && name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "{name:?} cannot name a plugin: use a letter, then letters, digits, - or _ (at most 64)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_names() {
        for good in ["echo", "chat-2", "my_room"] {
            assert_eq!(plugin_name(Path::new(good)).unwrap(), good);
        }
        for bad in ["2fast", "has space", "dot.ted", "", "é"] {
            assert!(plugin_name(Path::new(bad)).is_err(), "{bad:?}");
        }
    }
}
