//! One spelling rule for the names of enum values (sort keys, flamegraph weights, labels):
//! written in `snake_case` (derived with `strum`, and `serde` for JSON), read back
//! case-insensitively with `-` accepted for `_`, so `self_wall`, `Self-Wall` and `self-wall`
//! name the same key in a URL, on the command line and in JSON.
//!
//! A leaf module: it depends on nothing else in the crate.

/// The variant of `T` whose name (or one of `aliases`) is `input` under the rule above.
pub(crate) fn parse<T>(input: &str, aliases: &[(&str, T)]) -> Option<T>
where
    T: strum::VariantArray + Copy + Into<&'static str>,
{
    let norm = input.trim().replace('-', "_");
    let is = |name: &str| name.eq_ignore_ascii_case(&norm);
    T::VARIANTS
        .iter()
        .copied()
        .find(|&v| is(v.into()))
        .or_else(|| aliases.iter().find(|(a, _)| is(a)).map(|&(_, v)| v))
}

/// The names of every variant of `T`, comma-separated, for error messages.
pub(crate) fn list<T>() -> String
where
    T: strum::VariantArray + Copy + Into<&'static str>,
{
    let names: Vec<&'static str> = T::VARIANTS.iter().map(|&v| v.into()).collect();
    names.join(", ")
}
