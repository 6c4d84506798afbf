//! Enums whose variants are words of a grammar (`NPUSHIM_CHECK` rules, fault tasks, filter
//! keys and operators): each variant is declared once with its word, and the list of all
//! variants, the word of each, the lookup by word and the "expected …" lists in error
//! messages all come from that one declaration, so none can fall out of step with another.
//!
//! A leaf: imports nothing of the crate; pure and allocation-free except [`or_list`], which
//! only error messages call.

/// Declares a fieldless enum whose variants each have a word, with `ALL` (every variant in
/// declaration order: also their discriminants), `NAMES` (their words, in the same order),
/// `name()` and `by_name()`.
macro_rules! word_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $word:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        // Not every enum needs every item.
        #[allow(dead_code)]
        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: [$name; [$($word),+].len()] = [$($name::$variant),+];
            /// The word of each variant of [`Self::ALL`], in the same order.
            pub const NAMES: [&'static str; [$($word),+].len()] = [$($word),+];

            /// The variant's word, as written in specs, messages and traces.
            pub const fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $word),+
                }
            }

            /// The variant whose word is exactly `name`.
            pub fn by_name(name: &str) -> Option<$name> {
                Self::ALL.into_iter().find(|v| v.name() == name)
            }
        }
    };
}

pub(crate) use word_enum;

/// True when an `NPUSHIM_TRACE` value is one of the words that turn tracing off (`off`,
/// `none`, `0`, any case, surrounding blanks ignored). The shim's configuration and
/// `npushim run` both decide with this.
pub fn trace_off(value: &str) -> bool {
    let t = value.trim();
    t.eq_ignore_ascii_case("off") || t == "0" || t.eq_ignore_ascii_case("none")
}

/// `a, b or c`: the words of a closed list for an "expected …" message.
pub fn or_list(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [only] => (*only).to_owned(),
        [head @ .., last] => format!("{} or {last}", head.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    word_enum! {
        enum Colour {
            Red = "red",
            Dark = "dark-blue",
        }
    }

    #[test]
    fn one_declaration_gives_every_list() {
        assert_eq!(Colour::ALL, [Colour::Red, Colour::Dark]);
        assert_eq!(Colour::NAMES, ["red", "dark-blue"]);
        assert_eq!(Colour::Dark as usize, 1);
        for c in Colour::ALL {
            assert_eq!(Colour::by_name(c.name()), Some(c));
        }
        assert_eq!(Colour::by_name("Red"), None);
        assert_eq!(or_list(&Colour::NAMES), "red or dark-blue");
        assert_eq!(or_list(&["a", "b", "c"]), "a, b or c");
        assert_eq!(or_list(&["a"]), "a");
    }
}
