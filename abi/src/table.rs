//! [`code_table!`]: one macro for the interface's enums of numeric codes, so that the
//! variants, their values, the list of all of them, the lookup by value and the names
//! cannot drift apart.

/// Defines a fieldless `#[repr($repr)]` enum from one table of
/// `Variant = value => "text",` rows, with:
/// * `ALL`: every variant, in table order;
/// * `raw(self)`: the value;
/// * `from_raw(raw)`: the variant with that value, or `None`;
/// * `$text_fn(self)`: the row's text.
///
/// Further methods (and `Display`) are written next to the table, by hand.
macro_rules! code_table {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident: $repr:ident, text = $text_fn:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[cfg_attr(feature = "defmt", derive(defmt::Format))]
        #[repr($repr)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant = $value, )+
        }

        impl $name {
            /// Every value, in table order.
            pub const ALL: [$name; [$(stringify!($variant)),+].len()] = [$($name::$variant),+];

            /// The raw value.
            pub const fn raw(self) -> $repr {
                self as $repr
            }

            /// The variant for a raw value, or `None` if the value is not in the table.
            pub const fn from_raw(raw: $repr) -> Option<Self> {
                match raw {
                    $( $value => Some($name::$variant), )+
                    _ => None,
                }
            }

            /// The row's text.
            pub const fn $text_fn(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }
    };
}

pub(crate) use code_table;
