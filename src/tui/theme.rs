//! Semantic styles: views ask for "healthy" or "master", and a theme file under `themes/`
//! says what those look like. The dark theme is built in, so the console runs from anywhere;
//! the light and monochrome ones are built in as well.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

use ratatui::style::{Color, Modifier, Style};
use serde::Deserialize;

const BUILT_IN: &[(&str, &str)] = &[
    ("dark", include_str!("../../themes/dark.toml")),
    ("light", include_str!("../../themes/light.toml")),
    ("mono", include_str!("../../themes/mono.toml")),
];

macro_rules! semantic_styles {
    ($($name:ident),* $(,)?) => {
        /// Every style a view may use.
        #[derive(Debug, Clone, PartialEq)]
        pub struct Theme {
            pub name: String,
            $(pub $name: Style,)*
        }

        impl Theme {
            fn slot(&mut self, key: &str) -> Option<&mut Style> {
                match key {
                    $(stringify!($name) => Some(&mut self.$name),)*
                    _ => None,
                }
            }

            const KEYS: &'static [&'static str] = &[$(stringify!($name)),*];

            fn blank(name: String) -> Theme {
                Theme { name, $($name: Style::default(),)* }
            }
        }
    };
}

semantic_styles!(
    text, muted, title, accent, border, header, tab, tab_active, footer, key, selected, healthy,
    warning, down, draining, master, slave, stopped, gauge, sparkline, input, prompt, reply, error,
    overlay, log_error, log_warn, log_info, log_debug, log_trace,
);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ThemeFile {
    name: Option<String>,
    #[serde(default)]
    styles: BTreeMap<String, StyleSpec>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StyleSpec {
    fg: Option<String>,
    bg: Option<String>,
    #[serde(default)]
    bold: bool,
    #[serde(default)]
    dim: bool,
    #[serde(default)]
    italic: bool,
    #[serde(default)]
    underline: bool,
    #[serde(default)]
    reversed: bool,
}

impl Default for Theme {
    fn default() -> Theme {
        // The built-in dark theme is checked by a unit test, so this cannot fail at runtime.
        Theme::parse(BUILT_IN[0].1, "themes/dark.toml (built in)", None)
            .unwrap_or_else(|_| Theme::blank("dark".into()))
    }
}

impl Theme {
    /// `--theme NAME|PATH`: a path (anything with a `/` or ending in `.toml`) is read as a
    /// file; a name prefers `themes/NAME.toml` in the working directory (so edits show), then
    /// the built-in theme of that name.
    pub fn load(spec: &str) -> Result<Theme, String> {
        let base = Theme::default();
        if spec.contains('/') || spec.ends_with(".toml") {
            return Theme::from_file(Path::new(spec), &base);
        }
        let local = Path::new("themes").join(format!("{spec}.toml"));
        if local.is_file() {
            return Theme::from_file(&local, &base);
        }
        match BUILT_IN.iter().find(|(name, _)| *name == spec) {
            Some((name, text)) => {
                Theme::parse(text, &format!("themes/{name}.toml (built in)"), Some(&base))
            }
            None => Err(format!(
                "theme '{spec}' is neither a built-in theme ({}) nor a file",
                BUILT_IN
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    fn from_file(path: &Path, base: &Theme) -> Result<Theme, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("theme file {}: {e}", path.display()))?;
        Theme::parse(&text, &path.display().to_string(), Some(base))
    }

    /// Parses a theme; keys it leaves out keep `base`'s styles.
    pub fn parse(text: &str, file: &str, base: Option<&Theme>) -> Result<Theme, String> {
        let parsed: ThemeFile = toml::from_str(text).map_err(|e| {
            let at = e.span().map(|s| {
                let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                format!(":{line}")
            });
            format!(
                "theme file {file}{}: {}",
                at.unwrap_or_default(),
                e.message().trim()
            )
        })?;
        let name = parsed.name.unwrap_or_else(|| file.to_string());
        let mut theme = match base {
            Some(b) => Theme {
                name: name.clone(),
                ..b.clone()
            },
            None => Theme::blank(name),
        };
        for (key, spec) in parsed.styles {
            let style = spec.to_style().map_err(|(field, value)| {
                format!(
                    "theme file {file}: styles.{key}.{field} = '{value}' is not a colour (use a name like green, \"#rrggbb\" or 0-255)"
                )
            })?;
            let Some(slot) = theme.slot(&key) else {
                return Err(format!(
                    "theme file {file}: styles.{key} is not a style the console uses (known: {})",
                    Theme::KEYS.join(", ")
                ));
            };
            *slot = style;
        }
        Ok(theme)
    }
}

impl StyleSpec {
    fn to_style(&self) -> Result<Style, (&'static str, String)> {
        let colour = |field: &'static str, v: &Option<String>| -> Result<Option<Color>, _> {
            v.as_deref()
                .map(|s| Color::from_str(s).map_err(|_| (field, s.to_string())))
                .transpose()
        };
        let mut style = Style::default();
        if let Some(c) = colour("fg", &self.fg)? {
            style = style.fg(c);
        }
        if let Some(c) = colour("bg", &self.bg)? {
            style = style.bg(c);
        }
        for (on, m) in [
            (self.bold, Modifier::BOLD),
            (self.dim, Modifier::DIM),
            (self.italic, Modifier::ITALIC),
            (self.underline, Modifier::UNDERLINED),
            (self.reversed, Modifier::REVERSED),
        ] {
            if on {
                style = style.add_modifier(m);
            }
        }
        Ok(style)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_theme_parses_and_sets_every_style() {
        for (name, text) in BUILT_IN {
            let theme = Theme::parse(text, name, None).expect("built-in theme parses");
            assert_eq!(&theme.name, name);
            let parsed: ThemeFile = toml::from_str(text).expect("toml");
            for key in Theme::KEYS {
                assert!(parsed.styles.contains_key(*key), "{name} lacks {key}");
            }
        }
    }

    #[test]
    fn a_bad_colour_names_the_file_key_and_value() {
        let err = Theme::parse(
            "[styles]\nhealthy = { fg = \"grean\" }\n",
            "themes/x.toml",
            None,
        )
        .expect_err("bad colour");
        assert!(err.contains("themes/x.toml"), "{err}");
        assert!(err.contains("styles.healthy.fg"), "{err}");
        assert!(err.contains("'grean'"), "{err}");
    }

    #[test]
    fn unknown_styles_and_missing_themes_are_errors() {
        let err = Theme::parse("[styles]\nhealthly = {}\n", "t.toml", None).expect_err("typo");
        assert!(err.contains("styles.healthly"), "{err}");
        assert!(Theme::load("no-such-theme").is_err());
    }

    #[test]
    fn left_out_styles_fall_back_to_the_default() {
        let base = Theme::default();
        let t =
            Theme::parse("[styles]\ndown = { fg = \"blue\" }\n", "t", Some(&base)).expect("parses");
        assert_eq!(t.down, Style::default().fg(Color::Blue));
        assert_eq!(t.healthy, base.healthy);
    }
}
