//! The pickle opcodes PyTorch and NumPy emit, by name, grouped into the families the machine
//! handles together.

/// One opcode of the pickle protocol (protocols 2 to 5; the subset tensor checkpoints use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opcode {
    // Framing.
    Proto,
    Frame,
    Stop,
    // Constants.
    Mark,
    None,
    NewTrue,
    NewFalse,
    BinInt,
    BinInt1,
    BinInt2,
    Long1,
    BinFloat,
    // Text and bytes.
    BinUnicode,
    ShortBinUnicode,
    BinString,
    ShortBinString,
    BinBytes,
    ShortBinBytes,
    // Containers.
    EmptyTuple,
    EmptyList,
    EmptyDict,
    Tuple,
    List,
    Dict,
    Tuple1,
    Tuple2,
    Tuple3,
    Append,
    Appends,
    SetItem,
    SetItems,
    // Memo.
    BinPut,
    LongBinPut,
    Memoize,
    BinGet,
    LongBinGet,
    // Objects.
    Global,
    StackGlobal,
    BinPersId,
    Reduce,
    NewObj,
    Build,
}

/// The handler groups of [`Opcode`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    /// PROTO, FRAME, STOP.
    Framing,
    /// MARK and the constants.
    Scalar,
    /// Strings and byte strings.
    Text,
    /// Tuples, lists, dicts and their items.
    Container,
    /// Storing and fetching memo entries.
    Memo,
    /// Globals, persistent ids, calls and BUILD.
    Object,
}

impl Opcode {
    /// The opcode encoded by `byte`, if the reader knows it.
    pub(crate) fn from_byte(byte: u8) -> Option<Self> {
        use Opcode::*;
        Some(match byte {
            0x80 => Proto,
            0x95 => Frame,
            b'.' => Stop,
            b'(' => Mark,
            b'N' => None,
            0x88 => NewTrue,
            0x89 => NewFalse,
            b'J' => BinInt,
            b'K' => BinInt1,
            b'M' => BinInt2,
            0x8a => Long1,
            b'G' => BinFloat,
            b'X' => BinUnicode,
            0x8c => ShortBinUnicode,
            b'T' => BinString,
            b'U' => ShortBinString,
            b'B' => BinBytes,
            b'C' => ShortBinBytes,
            b')' => EmptyTuple,
            b']' => EmptyList,
            b'}' => EmptyDict,
            b't' => Tuple,
            b'l' => List,
            b'd' => Dict,
            0x85 => Tuple1,
            0x86 => Tuple2,
            0x87 => Tuple3,
            b'a' => Append,
            b'e' => Appends,
            b's' => SetItem,
            b'u' => SetItems,
            b'q' => BinPut,
            b'r' => LongBinPut,
            0x94 => Memoize,
            b'h' => BinGet,
            b'j' => LongBinGet,
            b'c' => Global,
            0x93 => StackGlobal,
            b'Q' => BinPersId,
            b'R' => Reduce,
            0x81 => NewObj,
            b'b' => Build,
            _ => return Option::None,
        })
    }

    /// The handler group this opcode belongs to.
    pub(crate) fn family(self) -> Family {
        use Opcode::*;
        match self {
            Proto | Frame | Stop => Family::Framing,
            Mark | None | NewTrue | NewFalse | BinInt | BinInt1 | BinInt2 | Long1 | BinFloat => {
                Family::Scalar
            }
            BinUnicode | ShortBinUnicode | BinString | ShortBinString | BinBytes
            | ShortBinBytes => Family::Text,
            EmptyTuple | EmptyList | EmptyDict | Tuple | List | Dict | Tuple1 | Tuple2 | Tuple3
            | Append | Appends | SetItem | SetItems => Family::Container,
            BinPut | LongBinPut | Memoize | BinGet | LongBinGet => Family::Memo,
            Global | StackGlobal | BinPersId | Reduce | NewObj | Build => Family::Object,
        }
    }

    /// Whether the opcode's length or key operand is one byte (else four).
    pub(crate) fn has_short_operand(self) -> bool {
        use Opcode::*;
        matches!(
            self,
            ShortBinUnicode | ShortBinString | ShortBinBytes | BinPut | BinGet
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_byte_decodes_to_a_distinct_opcode() {
        let known: Vec<Opcode> = (0..=255u8).filter_map(Opcode::from_byte).collect();
        assert_eq!(known.len(), 42);
        for (i, a) in known.iter().enumerate() {
            assert!(!known[i + 1..].contains(a), "{a:?} has two bytes");
        }
        assert_eq!(Opcode::from_byte(b'0'), Option::None, "POP is not read");
    }
}
